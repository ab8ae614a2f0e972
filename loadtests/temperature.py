"""Quality against the prior's temperature: how many puzzles a width solves, and at what work, when the
prior's sigma is multiplied by t (NoiseKeys.temperature; the service's ``temperature`` field).

    python -m loadtests.temperature --checkpoint model/weights/nqueens.safetensors \
        --temperatures 0.5,1,1.5,2,2.5,3,4 --puzzles 32 --width 64 \
        --out loadtests/results/temperature-nqueens8

One trace per temperature (loadtests.quality_trace: the model's own step, fp32), then the engine's exit
rules replayed on it (the service's defaults for the checkpoint: verified + stall, and the halting head
unless its card turns it off): per width, the fraction of puzzles
solved, coverage and per-trajectory accuracy, and the trajectory-steps an unseeded width-16 job wanting one
answer costs. Writes temperature.csv and temperature.png (solved against width, one line per temperature).

A temperature may also be a per-step schedule, slash-separated: ``2.5/2.5/1`` runs steps 1-2 at 2.5 and
every later step at 1 (the last entry holds), e.g. ``--temperatures 1,2.5,2.5/2.5/1,1/1/2.5``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from loadtests import quality  # noqa: E402
from loadtests.loadgen import write_csv  # noqa: E402
from loadtests.quality_policy import evaluate, first_found_work  # noqa: E402
from loadtests.quality_trace import Trace  # noqa: E402
from model.checkpoint import load_checkpoint  # noqa: E402
from model.gram import served_halting  # noqa: E402

console = Console(width=150)
def parse_schedule(text: str) -> list[float]:
    """``"2.5"`` -> [2.5]; ``"2.5/2.5/1"`` -> [2.5, 2.5, 1.0] (per step, the last entry holding)."""
    try:
        schedule = [float(v) for v in text.split("/")]
    except ValueError:
        raise typer.BadParameter(f"not a temperature or a slash-separated schedule: {text!r}") from None
    if not all(0 < t <= 10 for t in schedule):
        raise typer.BadParameter(f"temperatures must be in (0, 10]: {text!r}")
    return schedule


def label(schedule: list[float]) -> str:
    return "/".join(f"{t:g}" for t in schedule)


def temperature_rows(
    traces: list[Trace], temperature: str, width: int, steps: int, policy: str = "verified+halt+stall"
) -> list[dict[str, object]]:
    """One row per width (1, 2, 4, ... up to ``width``): what the engine's exit rules make of the traces."""
    work_k = min(16, width)
    work = first_found_work(traces, work_k, steps, policy)
    work_c4 = first_found_work(traces, work_k, steps, policy, concurrency=min(4, work_k))
    rows: list[dict[str, object]] = []
    for k in quality.widths_up_to(width):
        o = evaluate(traces, k, steps, policy)
        rows.append({
            "temperature": temperature, "width": float(k), "solved": o.solved, "coverage": o.coverage,
            "accuracy": o.accuracy, "steps": o.steps, "first_found_work_width": float(work_k),
            "first_found_work": work, "first_found_work_c4": work_c4,
        })
    return rows


def plot(rows: list[dict[str, object]], out: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in dict.fromkeys(str(r["temperature"]) for r in rows):  # in the order given
        mine = [r for r in rows if r["temperature"] == t]
        ax.plot([r["width"] for r in mine], [r["solved"] for r in mine], marker="o", label=f"t = {t}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("trajectories per puzzle (width)")
    ax.set_ylabel("puzzles solved")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(
    checkpoint: Annotated[Path, typer.Option(help="GRAM checkpoint")] = Path(
        "model/weights/nqueens.safetensors"
    ),
    temperatures: Annotated[str, typer.Option(
        help="comma-separated prior temperatures; one may be a per-step schedule, e.g. 2.5/2.5/1"
    )] = "1,1.5,2,2.5,3",
    puzzles: Annotated[int, typer.Option(help="puzzles (the task's generator)")] = 32,
    width: Annotated[int, typer.Option(help="most trajectories per puzzle")] = 64,
    steps: Annotated[int, typer.Option(help="supervision steps; 0: the model's n_sup")] = 0,
    knob: Annotated[list[str] | None, typer.Option(help="generator knob KEY=INT, e.g. n=8")] = None,
    seed: Annotated[int, typer.Option(help="puzzle and noise seed (the quality check set: 1000)")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads")] = 2,
    out: Annotated[Path, typer.Option()] = Path("loadtests/results/temperature"),
) -> None:
    """Solved / coverage / accuracy per width and the first-answer work, per prior temperature."""
    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint)
    task = model.config.task
    knobs = quality.parse_knobs(task, knob)
    s = steps or model.config.n_sup
    instances = quality.make_puzzles(task, puzzles, seed, knobs)
    schedules = [parse_schedule(v) for v in temperatures.split(",")]
    policy = quality.engine_policy(served_halting(model))  # the exits the engine runs for this checkpoint
    rows: list[dict[str, object]] = []
    for schedule in schedules:
        t = label(schedule)
        started = time.monotonic()
        with console.status(f"temperature {t}"):
            traces = quality.trace_model(model, task, instances, width, s, 64, seed, schedule)
        rows += temperature_rows(traces, t, width, s, policy)
        console.print(f"temperature {t}: {time.monotonic() - started:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "temperature.csv", rows)
    plot(rows, out / "temperature.png", f"{checkpoint.stem} {knobs} seed {seed}: solved vs width")
    table = Table(title=f"{checkpoint.name}, {puzzles} puzzles {knobs}, seed {seed}, {s} steps, {policy}")
    for col in ("temperature", "width", "solved", "coverage", "accuracy", "work (w16, c16 / c4)"):
        table.add_column(col, justify="right")
    for r in rows:
        work = f"{r['first_found_work']:.1f} / {r['first_found_work_c4']:.1f}"
        table.add_row(str(r["temperature"]), f"{r['width']:.0f}", f"{r['solved']:.3f}",
                      f"{r['coverage']:.3f}", f"{r['accuracy']:.3f}", work)
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
