"""Sweep offered load past saturation in each batching mode, on the same workload, machine and checkpoints.

    python -m loadtests.sweep --workload nqueens8 --width 16 --out loadtests/results/nqueens8-w16

For each mode the sweep starts `gram serve` itself (GRAM_BATCHING=<mode>) on a free loopback port,
offers a geometric series of Poisson loads (the same requests, seeded by load level, in every mode),
stops one point after the service saturates, bisects ``--refine`` times between the last load within the
p99 target and the first beyond it, and stops the service by pid. It writes ``sweep.csv``,
``ratios.json`` and three PNG plots under ``--out``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from loadtests import compare, plots, promscrape
from loadtests.loadgen import LoadSpec, print_summaries, run_load_point, write_csv
from loadtests.server import ServiceProcess
from loadtests.stats import LoadPointSummary
from loadtests.workloads import (
    WORKLOADS,
    MaxSolutions,
    Width,
    make_requests,
    parse_max_solutions,
    parse_width,
)

console = Console(width=150)


def rate_grid(start: float, factor: float, points: int) -> list[float]:
    return [round(start * factor**i, 4) for i in range(points)]


def parse_variant(label: str) -> tuple[str, dict[str, str]]:
    """``"continuous@slots=16@max_queue=8"`` -> ("continuous", {"GRAM_SLOTS": "16", "GRAM_MAX_QUEUE": "8"}):
    one sweep can compare settings of a mode, each under its own label."""
    mode, *settings = label.split("@")
    env = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"mode variant {item!r} in {label!r} is not KEY=VALUE")
        env[f"GRAM_{key.upper()}"] = value
    return mode, env


def _warm_up(base_url: str, cfg: SweepConfig, count: int) -> None:
    """A few requests before measuring, so lazy initialisation does not land in the first load point."""
    for req in make_requests(cfg.workload, cfg.width, count, seed=10_000, max_solutions=cfg.max_solutions,
                             seeded=cfg.seeded):
        httpx.post(f"{base_url}{req.path}", json=req.body, timeout=120.0)


def _settle(base_url: str, timeout_s: float) -> None:
    """Wait until the engine holds no queued or running work left over from the previous point."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            snap = promscrape.parse_metrics(httpx.get(f"{base_url}/metrics", timeout=5.0).text)
        except httpx.HTTPError:
            return
        if promscrape.in_flight(snap) == 0:
            return
        time.sleep(0.5)


@dataclass(frozen=True)
class SweepConfig:
    workload: str
    width: Width
    rates: list[float]
    duration_s: float
    cv: float
    slo_s: float
    p99_cap_s: float
    past_saturation: int
    request_timeout_s: float
    seed: int
    max_solutions: MaxSolutions = None
    seeded: bool = True
    refine: int = 0  # bisection points per mode after the grid (sweep_mode)


def _load_point(base_url: str, mode: str, cfg: SweepConfig, rate: float) -> LoadPointSummary:
    # One seed for every point and mode (common random numbers): each mode gets the same requests at
    # the same times, and a higher load is the same arrival sequence compressed, so the realised
    # load grows monotonically with the offered one instead of jittering from point to point.
    spec = LoadSpec(
        cfg.workload,
        cfg.width,
        rate,
        cfg.duration_s,
        cfg.cv,
        cfg.seed,
        cfg.slo_s,
        cfg.request_timeout_s,
        cfg.max_solutions,
        cfg.seeded,
    )
    summary, _ = asyncio.run(run_load_point(base_url, spec, mode=mode))
    print_summaries([summary], console)
    _settle(base_url, timeout_s=cfg.request_timeout_s)
    return summary


def sweep_mode(base_url: str, mode: str, cfg: SweepConfig, deadline: float) -> list[LoadPointSummary]:
    """Offer each load of ``cfg.rates`` in turn; stop ``past_saturation`` points after saturation. Then
    bisect ``cfg.refine`` times between the highest load that met the p99 target and the next that did
    not, so the equal-p99 ratios are not quantised by the grid. Points come back in offered-load order."""
    out: list[LoadPointSummary] = []
    beyond = 0
    for rate in cfg.rates:
        if time.monotonic() + cfg.duration_s > deadline:
            console.print(f"[yellow]{mode}: time budget spent, stopping before {rate} req/s[/yellow]")
            break
        summary = _load_point(base_url, mode, cfg, rate)
        out.append(summary)
        if compare.saturated(summary, cfg.p99_cap_s):
            beyond += 1
            if beyond > cfg.past_saturation:
                break
    for _ in range(cfg.refine):
        rate = compare.refinement_rate(out, cfg.slo_s)
        if rate is None:
            break
        if time.monotonic() + cfg.duration_s > deadline:
            console.print(f"[yellow]{mode}: time budget spent, not refining at {rate} req/s[/yellow]")
            break
        console.print(f"{mode}: refining the sustained load at {rate} req/s")
        out.append(_load_point(base_url, mode, cfg, rate))
    return sorted(out, key=lambda p: p.offered_rps)


def write_outputs(summaries: list[LoadPointSummary], out: Path, title: str, slo_s: float) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sweep.csv", [s.row() for s in summaries])
    plots.plot_throughput_vs_p99(summaries, out / "throughput_vs_p99.png", title)
    plots.plot_latency_vs_load(summaries, out / "latency_vs_load.png", title)
    plots.plot_goodput_occupancy(summaries, out / "goodput_occupancy.png", title)
    modes = {s.mode for s in summaries}
    ratios: dict[str, float] = {"p99_target_s": slo_s}
    for mode in sorted(modes):
        pts = [s for s in summaries if s.mode == mode]
        ratios[f"sustained_rps_{mode}"] = compare.sustained_throughput(pts, slo_s)
        ratios[f"peak_rps_{mode}"] = max(p.throughput_rps for p in pts)
    for den in ("request", "serial"):
        if {"continuous", den} <= modes:
            ratios[f"continuous_over_{den}_at_equal_p99"] = compare.mode_ratio(
                summaries, "continuous", den, slo_s
            )
            peak = ratios[f"peak_rps_{den}"]
            ratios[f"continuous_over_{den}_peak"] = ratios["peak_rps_continuous"] / peak if peak else math.nan
    (out / "ratios.json").write_text(json.dumps(ratios, indent=2) + "\n")
    return ratios


def main(
    workload: Annotated[str, typer.Option(help=f"one of {sorted(WORKLOADS)}")] = "nqueens8",
    width: Annotated[str, typer.Option(help="num_trajectories per request, or 'mixed'")] = "16",
    modes: Annotated[
        str, typer.Option(help="comma-separated batching modes; a variant: continuous@slots=16 (GRAM_SLOTS)")
    ] = "continuous,request,serial",
    rates: Annotated[str, typer.Option(help="comma-separated offered loads (req/s); empty: geometric")] = "",
    rate_start: Annotated[float, typer.Option(help="first load of the geometric grid")] = 0.25,
    rate_factor: Annotated[float, typer.Option(help="ratio between grid loads")] = 1.6,
    max_points: Annotated[int, typer.Option(help="most load points per mode")] = 10,
    duration: Annotated[float, typer.Option(help="seconds of arrivals per load point")] = 15.0,
    cv: Annotated[float, typer.Option(help="burstiness: CV of inter-arrival gaps (1 = Poisson)")] = 1.0,
    slo_ms: Annotated[float, typer.Option(help="latency target: goodput and the equal-p99 ratios")] = 5000.0,
    p99_cap_ms: Annotated[float, typer.Option(help="p99 above this counts as saturated")] = 20000.0,
    past_saturation: Annotated[int, typer.Option(help="load points to run after saturation")] = 1,
    refine: Annotated[
        int, typer.Option(help="extra points per mode, bisecting between the last load within the p99 "
                          "target and the first beyond it")
    ] = 0,
    timeout_s: Annotated[float, typer.Option(help="client timeout per request")] = 30.0,
    budget_s: Annotated[float, typer.Option(help="wall-clock budget for the whole sweep")] = 540.0,
    weights_dir: Annotated[Path | None, typer.Option(help="GRAM_WEIGHTS_DIR for the service")] = None,
    env: Annotated[list[str] | None, typer.Option(help="extra service env KEY=VALUE (repeatable)")] = None,
    url: Annotated[str, typer.Option(help="measure this running service instead (mode 'external')")] = "",
    seed: Annotated[int, typer.Option()] = 0,
    max_solutions: Annotated[
        str, typer.Option(help="answers per /solve: N (1 = any one), 'mixed' (1/3/10), '' default")
    ] = "",
    seeded: Annotated[
        bool, typer.Option(help="send seeds (reproducible answers) or not (first answers found)")
    ] = True,
    out: Annotated[Path, typer.Option(help="folder for sweep.csv, ratios.json, PNGs")] = Path(
        "loadtests/results/sweep"
    ),
) -> None:
    """Sweep offered load to past saturation in each batching mode; write CSV, ratios and plots."""
    w = parse_width(width)
    grid = [float(r) for r in rates.split(",")] if rates else rate_grid(rate_start, rate_factor, max_points)
    extra_env = dict(item.split("=", 1) for item in (env or []))
    mode_list = ["external"] if url else [m.strip() for m in modes.split(",") if m.strip()]
    cfg = SweepConfig(
        workload,
        w,
        grid,
        duration,
        cv,
        slo_ms / 1000,
        p99_cap_ms / 1000,
        past_saturation,
        timeout_s,
        seed,
        parse_max_solutions(max_solutions),
        seeded,
        refine,
    )
    started = time.monotonic()
    summaries: list[LoadPointSummary] = []
    for k, mode in enumerate(mode_list):
        # An equal share of what is left for each remaining mode, so a slow mode cannot starve the rest.
        share = (budget_s - (time.monotonic() - started)) / (len(mode_list) - k)
        deadline = time.monotonic() + share
        if url:
            summaries += sweep_mode(url.rstrip("/"), mode, cfg, deadline)
            continue
        console.print(f"[bold]starting gram serve in {mode} mode[/bold]")
        base_mode, variant_env = parse_variant(mode)
        with ServiceProcess(base_mode, weights_dir=weights_dir, env={**extra_env, **variant_env}) as svc:
            _warm_up(svc.url, cfg, count=2)
            summaries += sweep_mode(svc.url, mode, cfg, deadline)
    title = f"{workload}, width {width}, cv {cv:g}"
    if max_solutions:
        title += f", max_solutions {max_solutions}"
    if not seeded:
        title += ", unseeded"
    ratios = write_outputs(summaries, out, title, slo_ms / 1000)
    print_summaries(summaries, console)
    console.print_json(json.dumps(ratios))
    console.print(f"wrote {out}/sweep.csv, ratios.json, *.png in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    typer.run(main)
