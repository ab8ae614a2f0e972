"""Open-loop load generator: send a workload at a Poisson (or burstier) rate and summarise what came back.

    python -m loadtests.loadgen --url http://127.0.0.1:8000 --rate 2 --duration 20 --workload nqueens8

Every request is sent at its scheduled time in its own task whether or not earlier requests have been
answered (open loop), over a connection pool with no cap, so a slow server cannot slow the clients down.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from loadtests import promscrape
from loadtests.arrivals import arrival_times
from loadtests.stats import LoadPointSummary, RequestRecord, summarise
from loadtests.workloads import (
    WORKLOADS,
    MaxSolutions,
    Request,
    Width,
    make_requests,
    parse_max_solutions,
    parse_width,
)


@dataclass(frozen=True)
class LoadSpec:
    workload: str
    width: Width
    rate: float  # offered requests per second
    duration_s: float
    cv: float = 1.0  # burstiness: coefficient of variation of inter-arrival gaps (1 = Poisson)
    seed: int = 0
    slo_s: float = 5.0  # latency target for goodput
    request_timeout_s: float = 120.0
    max_solutions: MaxSolutions = None  # per /solve; None = the service default
    seeded: bool = True  # False: bodies carry no seed (first answers found, in continuous mode)

    @property
    def label(self) -> str:
        answers = "" if self.max_solutions is None else f"/s{self.max_solutions}"
        return f"{self.workload}/w{self.width}{answers}{'' if self.seeded else '/unseeded'}"


def _parse_answer(record: RequestRecord, resp: httpx.Response) -> None:
    record.status = resp.status_code
    if not record.ok:
        record.error = resp.text[:200]
        return
    try:
        body = resp.json()
    except ValueError:
        record.error = "200 with a body that is not JSON"
        return
    if "solutions" in body:  # /solve
        record.complete = bool(body.get("complete"))
        record.num_solutions = len(body["solutions"])
        record.server_steps = body.get("steps")
        record.server_elapsed_ms = body.get("elapsed_ms")


async def _send(
    client: httpx.AsyncClient, base_url: str, req: Request, record: RequestRecord, t0: float, timeout_s: float
) -> None:
    loop = asyncio.get_running_loop()
    record.sent_s = loop.time() - t0
    try:
        resp = await client.post(f"{base_url}{req.path}", json=req.body, timeout=timeout_s)
        _parse_answer(record, resp)
    except httpx.TimeoutException:
        record.error = f"client timeout after {timeout_s:.0f}s"
    except httpx.HTTPError as err:
        record.error = f"{type(err).__name__}: {err}"
    record.done_s = loop.time() - t0


async def run_schedule(
    client: httpx.AsyncClient,
    base_url: str,
    requests: Sequence[Request],
    times: Sequence[float],
    timeout_s: float,
) -> list[RequestRecord]:
    """Send ``requests[i]`` at ``times[i]`` seconds from now; wait for every answer (or its timeout)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    records: list[RequestRecord] = []
    tasks: list[asyncio.Task[None]] = []
    for req, at in zip(requests, times, strict=True):
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        record = RequestRecord(kind=req.kind, scheduled_s=float(at), sent_s=float(at))
        records.append(record)
        tasks.append(asyncio.create_task(_send(client, base_url, req, record, t0, timeout_s)))
    await asyncio.gather(*tasks)
    return records


def new_client() -> httpx.AsyncClient:
    # No cap on connections: a capped pool would queue requests client-side (closed-loop behaviour).
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))


async def run_load_point(
    base_url: str, spec: LoadSpec, mode: str = "external"
) -> tuple[LoadPointSummary, list[RequestRecord]]:
    """One offered load against a running service, with the engine's own figures from /metrics."""
    times = arrival_times(spec.rate, spec.duration_s, np.random.default_rng(spec.seed), cv=spec.cv)
    requests = make_requests(
        spec.workload, spec.width, len(times), seed=spec.seed, max_solutions=spec.max_solutions,
        seeded=spec.seeded,
    )
    async with new_client() as client:
        before = await promscrape.scrape(client, base_url)
        records = await run_schedule(client, base_url, requests, times, spec.request_timeout_s)
        after = await promscrape.scrape(client, base_url)
    summary = summarise(
        records,
        mode=mode,
        workload=spec.label,
        offered_rps=spec.rate,
        duration_s=spec.duration_s,
        slo_s=spec.slo_s,
    )
    summary.mean_batch_occupancy = promscrape.histogram_mean(before, after, promscrape.BATCH_OCCUPANCY)
    steps = promscrape.delta(before, after, f"{promscrape.STEP_DURATION}_count")
    summary.steps_per_s = steps / summary.makespan_s if steps > 0 else float("nan")
    summary.extra["mean_step_s"] = promscrape.histogram_mean(before, after, promscrape.STEP_DURATION)
    summary.extra["mean_queue_wait_s"] = promscrape.histogram_mean(before, after, promscrape.QUEUE_WAIT)
    return summary, records


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fieldnames: list[str] = []
    for row in rows:
        fieldnames += [k for k in row if k not in fieldnames]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def print_summaries(summaries: Sequence[LoadPointSummary], console: Console | None = None) -> None:
    table = Table(title="load points")
    cols = [
        "mode",
        "offered",
        "arrived",
        "thru",
        "goodput",
        "p50",
        "p95",
        "p99",
        "429%",
        "err%",
        "occup",
        "steps/s",
        "tsteps/req",
    ]
    for col in cols:
        table.add_column(col, justify="right")
    for s in summaries:
        table.add_row(
            s.mode,
            f"{s.offered_rps:.2f}",
            f"{s.arrived_rps:.2f}",
            f"{s.throughput_rps:.2f}",
            f"{s.goodput_rps:.2f}",
            f"{s.p50_s:.2f}",
            f"{s.p95_s:.2f}",
            f"{s.p99_s:.2f}",
            f"{100 * s.rate_429:.1f}",
            f"{100 * s.rate_error:.1f}",
            f"{s.mean_batch_occupancy:.2f}",
            f"{s.steps_per_s:.2f}",
            f"{s.traj_steps_per_ok:.1f}",
        )
    (console or Console(width=150)).print(table)


def main(
    url: str = typer.Option("http://127.0.0.1:8000", help="base URL of a running service"),
    workload: str = typer.Option("nqueens8", help=f"one of {sorted(WORKLOADS)}"),
    width: str = typer.Option("16", help="num_trajectories per request, or 'mixed'"),
    rate: float = typer.Option(1.0, help="offered requests per second (mean)"),
    duration: float = typer.Option(20.0, help="seconds of arrivals"),
    cv: float = typer.Option(1.0, help="burstiness: CV of inter-arrival gaps (1 = Poisson, >1 bursty)"),
    slo_ms: float = typer.Option(5000.0, help="latency target for goodput"),
    seed: int = typer.Option(0),
    timeout_s: float = typer.Option(120.0, help="client timeout per request"),
    csv_out: Annotated[Path | None, typer.Option("--csv", help="write per-request records here")] = None,
    max_solutions: str = typer.Option("", help="answers wanted per /solve: N, 'mixed' (1/3/10), '' default"),
    seeded: bool = typer.Option(True, help="send seeds (reproducible answers) or not (first answers found)"),
) -> None:
    """Offer one load to a running service and print throughput, goodput, latency and rejection rates."""
    spec = LoadSpec(
        workload,
        parse_width(width),
        rate,
        duration,
        cv,
        seed,
        slo_ms / 1000,
        timeout_s,
        parse_max_solutions(max_solutions),
        seeded,
    )
    summary, records = asyncio.run(run_load_point(url.rstrip("/"), spec))
    print_summaries([summary])
    print(json.dumps(summary.row(), default=float))
    if csv_out is not None:
        write_csv(csv_out, [{**r.__dict__, "latency_s": r.latency_s} for r in records])


if __name__ == "__main__":
    typer.run(main)
