"""The engine's own cost outside its timed steps, in process (no HTTP): one request at a time, submit ->
result minus the sum of its supervision-step durations (gram_step_duration_seconds), per idle gap.

    python -m loadtests.engine_overhead --gaps-ms 0,200

What this leaves out of ``loadtests.overhead``'s figure is the HTTP server, FastAPI, pydantic and the
hand-back to the event loop; what it keeps is submitting, waking the engine thread, scheduling between
steps and formatting the answer.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from prometheus_client import REGISTRY

from loadtests.promscrape import STEP_DURATION
from loadtests.workloads import make_requests
from model.checkpoint import load_checkpoint
from model.tasks.registry import get_task
from service.engine import Engine
from service.intake import solve_job
from service.queues import ModelInfo
from service.schemas import SOLVE_REQUESTS
from service.settings import Settings

NQUEENS_MODEL = [ModelInfo(name="nqueens", task="nqueens")]  # what the intake routes the jobs to
WARMUP = 5  # requests per gap not recorded


def main(
    checkpoint: Annotated[Path, typer.Option()] = Path("model/weights/nqueens.safetensors"),
    width: Annotated[int, typer.Option(help="trajectories per request")] = 1,
    requests: Annotated[int, typer.Option(help="recorded requests per gap")] = 25,
    gaps_ms: Annotated[str, typer.Option(help="comma-separated idle gaps before each request")] = "0,200",
    slots: Annotated[int, typer.Option()] = 32,
    threads: Annotated[int, typer.Option()] = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Median submit -> result time, step time and the rest, per idle gap (N-Queens 8x8 requests)."""
    torch.set_num_threads(threads)
    settings = Settings(torch_threads=threads, slots=slots)
    model = load_checkpoint(checkpoint, "cpu")
    engine = Engine("nqueens", model, get_task("nqueens"), settings)
    engine.warmup()
    engine.start()

    def step_seconds() -> float:  # the engine's gram_step_duration_seconds sum, read in process
        return REGISTRY.get_sample_value(f"{STEP_DURATION}_sum", {"model": "nqueens"}) or 0.0

    try:
        for gap in (float(g) / 1000 for g in gaps_ms.split(",")):
            rows = []
            for i, req in enumerate(make_requests("nqueens8", width, WARMUP + requests, seed)):
                job = solve_job(settings, SOLVE_REQUESTS["nqueens"](**req.body), NQUEENS_MODEL)
                time.sleep(gap)
                before, iterations = step_seconds(), engine.iterations
                t0 = time.perf_counter()
                engine.submit(job).result()
                total = time.perf_counter() - t0
                if i >= WARMUP:
                    rows.append((total, step_seconds() - before, engine.iterations - iterations))
            total_ms, step_ms, rest_ms = (
                statistics.median(x) * 1e3 for x in zip(*((t, s, t - s) for t, s, _ in rows), strict=True)
            )
            iters = statistics.fmean(r[2] for r in rows)
            print(f"gap {gap * 1000:.0f} ms: median submit->result {total_ms:.2f} ms, steps {step_ms:.2f} "
                  f"ms, outside the steps {rest_ms:.2f} ms, {iters:.1f} iterations")
    finally:
        engine.stop()


if __name__ == "__main__":
    typer.run(main)
