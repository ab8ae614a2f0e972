"""Quality per compute: accuracy and coverage against width (trajectories 1..W) and supervision steps,
GRAM against the deterministic baseline, verified early exit on and off.

    python -m loadtests.quality --checkpoint model/weights/nqueens.safetensors \
        --baseline model/weights/nqueens_baseline.safetensors --puzzles 6 --width 256 \
        --out loadtests/results/quality

Runs the models in-process through the README's inference interface (encode / init_state / step) and the
task's exact verifier, so it measures the method, not the service. Writes quality.csv, summary.json and
three PNG plots.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import typer  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from rich.console import Console  # noqa: E402

from loadtests.loadgen import write_csv  # noqa: E402
from loadtests.quality_policy import (  # noqa: E402
    POLICIES,
    STALL_MIN_STEPS,
    STALL_PATIENCE,
    evaluate,
    first_found_work,
    steps_saved_at_equal_coverage,
)
from loadtests.quality_trace import Trace, trace_puzzle  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.gram import GRAM, served_halting, served_temperature  # noqa: E402
from model.tasks.base import Instance  # noqa: E402
from model.tasks.registry import get_task  # noqa: E402

console = Console(width=150)


def widths_up_to(w: int) -> list[int]:
    out = [1]
    while out[-1] * 2 <= w:
        out.append(out[-1] * 2)
    return out if out[-1] == w else [*out, w]


def parse_knobs(task_name: str, knob: list[str] | None) -> dict[str, int]:
    """Generator knobs from KEY=INT options; N-Queens defaults to 8x8 boards (the studies' workload)."""
    knobs = {k: int(v) for k, v in (item.split("=", 1) for item in (knob or []))}
    return {"n": 8} if task_name == "nqueens" and not knobs else knobs


def make_puzzles(task_name: str, count: int, seed: int, knobs: dict[str, int]) -> list[Instance]:
    task = get_task(task_name)
    rng = random.Random(seed)
    return [task.generate(rng, **knobs)[0] for _ in range(count)]


def trace_model(
    model: GRAM, task_name: str, puzzles: list[Instance], width: int, steps: int, chunk: int, seed: int,
    temperature: float | Sequence[float] = 1.0,
) -> list[Trace]:
    task = get_task(task_name)
    # A deterministic model (the TRM-style baseline) gives the same trajectory whatever the noise key,
    # so one trajectory per puzzle is its whole behaviour; it is repeated to any width.
    w = width if model.config.stochastic else 1
    traces = []
    for i, inst in enumerate(puzzles):
        tr = trace_puzzle(model, task, inst, width=w, steps=steps, seed=seed + i, temperature=temperature,
                          chunk=chunk)
        if w != width:
            tr = Trace(
                tr.solution_id.expand(width, -1), tr.halted.expand(width, -1), tr.unchanged.expand(width, -1),
                tr.total_solutions, tr.seconds,
            )
        traces.append(tr)
        console.print(f"  puzzle {i}: {tr.total_solutions} solutions, {tr.seconds:.1f}s")
    return traces


def quality_rows(
    label: str, traces: list[Trace], width: int, steps: int,
    stall: tuple[int, int] = (STALL_PATIENCE, STALL_MIN_STEPS),
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for policy in POLICIES:
        for k in widths_up_to(width):
            for s in range(1, steps + 1):
                o = evaluate(traces, k, s, policy, *stall)
                rows.append(
                    dict(
                        model=label,
                        policy=policy,
                        width=k,
                        max_steps=s,
                        accuracy=o.accuracy,
                        solved=o.solved,
                        coverage=o.coverage,
                        steps_spent=o.steps,
                    )
                )
    return rows


def _select(rows: list[dict[str, object]], **match: object) -> list[dict[str, object]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def plot_quality(rows: list[dict[str, object]], width: int, steps: int, out: Path, title: str) -> None:
    models = sorted({str(r["model"]) for r in rows})
    # line styles pair with the automatic colours; two policies may share one
    styles = {"final": "--", "verified": "-", "verified+halt": ":", "verified+stall": "-.",
              "verified+halt+stall": ":"}
    exit_label = {
        "final": "early exit off", "verified": "verified exit", "verified+stall": "verified + stall exit",
        "verified+halt+stall": "verified + halt + stall (engine default)",
    }
    # 1. against width, at full steps
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("solved", "coverage"), strict=True):
        for m in models:
            for policy in exit_label:
                pts = _select(rows, model=m, policy=policy, max_steps=steps)
                ax.plot(
                    [p["width"] for p in pts],
                    [p[metric] for p in pts],
                    styles[policy],
                    marker="o",
                    label=f"{m}, {exit_label[policy]}",
                )
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("trajectories per puzzle (width)")
        ax.set_ylabel(metric)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: quality vs width (max_steps {steps})")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_width.png", dpi=120)
    plt.close(fig)
    # 2. against max_steps, at full width
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("accuracy", "coverage"), strict=True):
        for m in models:
            for policy in POLICIES:
                pts = _select(rows, model=m, policy=policy, width=width)
                ax.plot(
                    [p["max_steps"] for p in pts],
                    [p[metric] for p in pts],
                    styles[policy],
                    label=f"{m}, {policy}",
                )
        ax.set_xlabel("max supervision steps")
        ax.set_ylabel(metric)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: quality vs supervision steps (width {width})")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_steps.png", dpi=120)
    plt.close(fig)
    # 3. coverage against compute spent: the early-exit saving at equal coverage, read horizontally
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for m in models:
        for policy in exit_label:
            pts = _select(rows, model=m, policy=policy, width=width)
            ax.plot(
                [p["steps_spent"] for p in pts],
                [p["coverage"] for p in pts],
                styles[policy],
                marker=".",
                label=f"{m}, {exit_label[policy]}",
            )
    ax.set_xlabel(f"supervision steps spent per puzzle ({width} trajectories)")
    ax.set_ylabel("coverage")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: coverage per compute")
    fig.tight_layout()
    fig.savefig(out / "coverage_vs_compute.png", dpi=120)
    plt.close(fig)


def read_rows(path: Path) -> list[dict[str, object]]:
    """quality.csv back as rows with numbers (for redrawing the plots without re-running the models)."""
    with path.open() as fh:
        rows: list[dict[str, object]] = list(csv.DictReader(fh))
    for r in rows:
        for k in ("width", "max_steps"):
            r[k] = int(str(r[k]))
        for k in ("accuracy", "solved", "coverage", "steps_spent"):
            r[k] = float(str(r[k]))
    return rows


def engine_policy(use_halting: bool) -> str:
    """The exit rules the continuous engine runs by default: verified and stall exit, and the halting
    head unless the checkpoint's card (or GRAM_USE_HALTING) turns it off."""
    return "verified+halt+stall" if use_halting else "verified+stall"


def _work_figure(
    traces: list[Trace], k: int, s: int, stall: tuple[int, int], concurrency: int | None = None,
    policy: str = "verified+halt+stall",
) -> dict[str, float]:
    """first_found_work under the engine's default exits, beside request-level batching's k * s."""
    w = first_found_work(traces, k, s, policy, *stall, concurrency=concurrency)
    return {"steps": round(w, 2), "request_steps": k * s, "work_ratio": round(k * s / w, 3)}


def write_study(
    traces: dict[str, list[Trace]], meta: dict[str, Any], stall: tuple[int, int], out: Path
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """quality.csv and summary.json from the traces (``meta``: checkpoint, task, knobs, puzzles, width,
    max_steps, seconds). Every figure is a function of the traces, so a replay gives the same study."""
    width, s = int(meta["width"]), int(meta["max_steps"])
    policy = engine_policy(bool(meta.get("use_halting", True)))
    rows = [r for label, tr in traces.items() for r in quality_rows(label, tr, width, s, stall)]
    write_csv(out / "quality.csv", rows)
    summary: dict[str, object] = {
        **meta,
        "early_exit_at_equal_coverage": steps_saved_at_equal_coverage(traces["gram"], width, s),
        "stall_patience": stall[0],
        "stall_min_steps": stall[1],
        "stall_exit_at_equal_coverage": steps_saved_at_equal_coverage(
            traces["gram"], width, s, "verified+stall", *stall
        ),
        "halt_stall_exit_at_equal_coverage": steps_saved_at_equal_coverage(
            traces["gram"], width, s, "verified+halt+stall", *stall
        ),
        # the engine's defaults for this checkpoint: verified and stall exit, and its halting head if on
        "engine_policy": policy,
        "engine_exit_at_equal_coverage": steps_saved_at_equal_coverage(
            traces["gram"], width, s, policy, *stall
        ),
        # trajectory-steps an unseeded one-answer job of width k costs the continuous engine (defaults),
        # against k * max_steps for request-level batching: the work ratio bounds the throughput ratio
        "first_found_work": {
            f"w{k}": _work_figure(traces["gram"], k, s, stall, policy=policy)
            for k in (1, 4, 16, 64) if k <= width
        },
        # the same at width 16 when the job holds at most c slots at a time: round-robin admission on a
        # saturated engine, where fewer of its trajectories run past the first answer
        "first_found_work_by_concurrency": {
            f"w16/c{c}": _work_figure(traces["gram"], 16, s, stall, c, policy)
            for c in (1, 2, 4, 8, 16) if width >= 16
        },
        # what each (patience, min steps) would give at full width and steps: coverage kept vs steps spent
        "stall_sweep": {
            f"p{p}/m{m}": evaluate(traces["gram"], width, s, "verified+stall", p, m).__dict__
            for p in (1, 2, 3) for m in (1, 2, 3, 4)
        },
    }
    for label, tr in traces.items():
        for policy in POLICIES:
            o = evaluate(tr, width, s, policy, *stall)
            summary[f"{label}/{policy}"] = o.__dict__
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return rows, summary


def main(
    checkpoint: Annotated[Path, typer.Option(help="GRAM checkpoint")] = Path(
        "model/weights/nqueens.safetensors"
    ),
    baseline: Annotated[
        Path | None, typer.Option(help="deterministic baseline checkpoint ('' or a missing file: none)")
    ] = Path("model/weights/nqueens_baseline.safetensors"),
    puzzles: Annotated[int, typer.Option(help="puzzles (generated by the task's generator)")] = 6,
    width: Annotated[int, typer.Option(help="most trajectories per puzzle (W)")] = 256,
    steps: Annotated[int, typer.Option(help="most supervision steps (S); 0: the model's n_sup")] = 0,
    knob: Annotated[list[str] | None, typer.Option(help="generator knob KEY=INT, e.g. n=8")] = None,
    chunk: Annotated[int, typer.Option(help="trajectories per model call")] = 64,
    threads: Annotated[int, typer.Option(help="torch threads")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    temperature: Annotated[
        float | None, typer.Option(help="GRAM prior temperature (default: the checkpoint's recommendation)")
    ] = None,
    out: Annotated[Path, typer.Option()] = Path("loadtests/results/quality"),
    stall_patience: Annotated[
        int, typer.Option(help="the verified+stall policy's patience (the service's GRAM_STALL_PATIENCE)")
    ] = STALL_PATIENCE,
    stall_min_steps: Annotated[
        int, typer.Option(help="the verified+stall policy's min steps (the service's GRAM_STALL_MIN_STEPS)")
    ] = STALL_MIN_STEPS,
    replot: Annotated[bool, typer.Option(help="only redraw the plots from OUT/quality.csv")] = False,
    replay: Annotated[
        bool, typer.Option(help="recompute the study from OUT/traces.pt (--save-traces) without the models, "
                                "e.g. with other --stall-patience / --stall-min-steps")
    ] = False,
    save_traces: Annotated[
        bool, typer.Option(help="also write OUT/traces.pt (torch.save of {model: [Trace fields]}) to replay "
                                "other exit policies without running the models again")
    ] = False,
) -> None:
    """Accuracy/coverage vs width and steps; GRAM vs baseline; steps saved by verified early exit."""
    if replot:
        rows = read_rows(out / "quality.csv")
        summary = json.loads((out / "summary.json").read_text())
        plot_quality(rows, summary["width"], summary["max_steps"], out,
                     f"{summary['task']} {summary['knobs']}")  # fmt: skip
        return
    if replay:
        saved = torch.load(out / "traces.pt")
        traces = {label: [Trace(**t) for t in tr] for label, tr in saved.items()}
        meta = json.loads((out / "traces.json").read_text()) if (out / "traces.json").is_file() else {
            k: v for k, v in json.loads((out / "summary.json").read_text()).items()
            if k in ("checkpoint", "task", "knobs", "puzzles", "width", "max_steps", "temperature", "seconds",
                     "use_halting")
        }
        rows, summary = write_study(traces, meta, (stall_patience, stall_min_steps), out)
        plot_quality(rows, int(meta["width"]), int(meta["max_steps"]), out, f"{meta['task']} {meta['knobs']}")
        console.print_json(json.dumps(summary))
        return
    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint)
    task_name = model.config.task
    knobs = parse_knobs(task_name, knob)
    s = steps or model.config.n_sup
    # what the service would run: the checkpoint's recommended prior temperature unless told otherwise
    hot = served_temperature(model, temperature)
    instances = make_puzzles(task_name, puzzles, seed, knobs)
    started = time.monotonic()
    console.print(f"[bold]{checkpoint.name}[/bold]: {puzzles} puzzles x {width} trajectories x {s} steps, "
                  f"prior temperature {hot:g}")
    traces = {"gram": trace_model(model, task_name, instances, width, s, chunk, seed, hot)}
    if baseline is not None and str(baseline) not in ("", ".") and baseline.is_file():
        console.print(f"[bold]{baseline.name}[/bold] (deterministic baseline)")
        traces["baseline"] = trace_model(
            load_checkpoint(baseline), task_name, instances, width, s, chunk, seed
        )
    meta: dict[str, Any] = {
        "checkpoint": str(checkpoint), "task": task_name, "knobs": knobs, "puzzles": puzzles, "width": width,
        "max_steps": s, "temperature": hot, "use_halting": served_halting(model),
        "seconds": round(time.monotonic() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    if save_traces:
        torch.save({label: [t.__dict__ for t in tr] for label, tr in traces.items()}, out / "traces.pt")
        (out / "traces.json").write_text(json.dumps(meta, indent=2) + "\n")
    rows, summary = write_study(traces, meta, (stall_patience, stall_min_steps), out)
    plot_quality(rows, width, s, out, f"{task_name} {knobs}")
    console.print_json(json.dumps(summary))


if __name__ == "__main__":
    typer.run(main)
