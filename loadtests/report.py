"""Markdown tables from result folders, for BENCHMARKS.md (so no figure is copied by hand).

python -m loadtests.report sweep loadtests/results/sweep-nqueens8
python -m loadtests.report targets loadtests/results/sweep-nqueens8 --p99 1,2,5,10
python -m loadtests.report quality loadtests/results/quality-nqueens8
python -m loadtests.report overhead loadtests/results/overhead
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from loadtests import compare
from loadtests.stats import LoadPointSummary

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _f(value: object, digits: int = 2, pct: bool = False) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞"
    return f"{100 * v:.{max(digits - 1, 0)}f}%" if pct else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


@app.command()
def sweep(folder: Annotated[Path, typer.Argument()]) -> None:
    """Per load point table and the mode ratios of a sweep folder."""
    with (folder / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    header = ["mode", "offered/s", "sent/s", "thru/s", "goodput/s", "p50 s", "p95 s", "p99 s", "429", "err",
              "occupancy", "traj-steps/req"]  # fmt: skip
    body = [
        [r["mode"], _f(r["offered_rps"]), _f(r["arrived_rps"]), _f(r["throughput_rps"]), _f(r["goodput_rps"]),
         _f(r["p50_s"]), _f(r["p95_s"]), _f(r["p99_s"]), _f(r["rate_429"], pct=True),
         _f(r["rate_error"], pct=True), _f(r["mean_batch_occupancy"]),
         _f(r.get("traj_steps_per_ok", "nan"), 0)]
        for r in rows
    ]  # fmt: skip
    print(_table(header, body))
    ratios = json.loads((folder / "ratios.json").read_text())
    print()
    print(_table(["figure", "value"], [[k, _f(v)] for k, v in ratios.items()]))


def read_sweep(path: Path) -> list[LoadPointSummary]:
    """LoadPointSummary rows back from a sweep.csv (columns beyond the dataclass go to ``extra``)."""
    names = {f.name: f for f in fields(LoadPointSummary) if f.name != "extra"}
    out = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            known = {}
            for name, f in names.items():
                if name not in row:
                    continue
                raw = row[name]
                known[name] = raw if f.type == "str" else int(raw) if f.type == "int" else float(raw)
            extra = {k: float(v) for k, v in row.items() if k not in names and v not in ("", None)}
            out.append(LoadPointSummary(**known, extra=extra))
    return out


@app.command()
def targets(
    folder: Annotated[Path, typer.Argument()],
    p99: Annotated[str, typer.Option(help="comma-separated p99 targets in seconds")] = "1,2,5,10",
) -> None:
    """Sustained throughput per mode and the continuous ratios at several p99 targets, from sweep.csv:
    the equal-p99 ratio depends on the target a user holds the modes to. (A sweep's bisection points
    sit near its own ``--slo-ms``; at other targets the load grid alone places the sustained loads.)"""
    points = read_sweep(folder / "sweep.csv")
    modes = list(dict.fromkeys(p.mode for p in points))
    dens = [m for m in ("request", "serial") if m in modes and "continuous" in modes]
    header = ["p99 target s"] + [f"{m} req/s" for m in modes] + [f"continuous / {d}" for d in dens]
    body = []
    for target in (float(t) for t in p99.split(",")):
        rates = [compare.sustained_throughput([p for p in points if p.mode == m], target) for m in modes]
        body.append([_f(target, 1)] + [_f(r) for r in rates]
                    + [_f(compare.mode_ratio(points, "continuous", d, target)) for d in dens])
    print(_table(header, body))


@app.command()
def replot(folder: Annotated[Path, typer.Argument()], title: str = "") -> None:
    """Redraw a sweep folder's plots and ratios.json from its sweep.csv."""
    from loadtests.sweep import write_outputs

    summaries = read_sweep(folder / "sweep.csv")
    write_outputs(summaries, folder, title or folder.name, summaries[0].slo_s)


@app.command()
def quality(folder: Annotated[Path, typer.Argument()]) -> None:
    """Headline table of a quality folder: each model and policy at full width and steps."""
    s = json.loads((folder / "summary.json").read_text())
    body = []
    for key, val in s.items():
        if isinstance(val, dict) and "coverage" in val:
            model, policy = key.split("/")
            body.append([model, policy, _f(val["accuracy"], 3), _f(val["solved"], 3), _f(val["coverage"], 3),
                         _f(val["steps"], 0)])  # fmt: skip
    print(f"{s['puzzles']} puzzles {s['knobs']}, width {s['width']}, max_steps {s['max_steps']}")
    print()
    print(_table(["model", "policy", "accuracy", "solved", "coverage", "steps/puzzle"], body))
    print()
    keys = ("early_exit_at_equal_coverage", "stall_exit_at_equal_coverage",
            "halt_stall_exit_at_equal_coverage")
    exits = [s[k] for k in keys if k in s]
    header = ["early exit figure"] + [str(e.get("policy", "verified")) for e in exits]
    figures = [k for k in exits[0] if k != "policy"]
    print(_table(header, [[k] + [_f(e[k], 3) for e in exits] for k in figures]))


@app.command()
def overhead(folder: Annotated[Path, typer.Argument()]) -> None:
    """Light-load overhead per width."""
    s = json.loads((folder / "summary.json").read_text())
    body = [
        [w, _f(v["requests"], 0), _f(1000 * v["median_latency_s"], 1),
         _f(1000 * v["median_engine_step_s"], 1), _f(1000 * v["median_overhead_s"], 1),
         _f(v["median_overhead_ratio"], 2, pct=True),
         _f(v["aggregate_overhead_ratio"], 2, pct=True), _f(v["mean_iterations"], 1)]
        for w, v in s.items()
    ]  # fmt: skip
    header = ["width", "requests", "e2e ms (median)", "engine ms (median)", "overhead ms (median)",
              "overhead % (median)", "overhead % (aggregate)", "iterations"]  # fmt: skip
    print(_table(header, body))


if __name__ == "__main__":
    app()
