"""The engine at saturation, in process (no HTTP): every job queued at once, per batching mode.

    python -m loadtests.engine_saturation --modes continuous,request --jobs 300

Reports jobs/s, iterations, the time per iteration inside the model step and outside it (the engine's
bookkeeping: scheduling, admission, verification, answers), and the trajectory-steps each answer
counts. Against a sweep's peak this separates what the engine does from what HTTP costs.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from loadtests.workloads import make_requests
from model.checkpoint import load_checkpoint
from model.tasks.registry import get_task
from service.engine import Engine
from service.intake import solve_job
from service.queues import ModelInfo
from service.schemas import SOLVE_REQUESTS
from service.settings import BatchingMode, Settings

NQUEENS_MODEL = [ModelInfo(name="nqueens", task="nqueens")]  # what the intake routes the jobs to
WARMUP = 8  # jobs run one at a time before measuring


def measure(checkpoint: Path, mode: str, jobs: int, width: int, slots: int, threads: int,
            seeded: bool) -> dict[str, float]:
    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint, "cpu")
    settings = Settings(torch_threads=torch.get_num_threads(), slots=slots, max_queue=jobs + WARMUP,
                        batching=BatchingMode(mode))  # fmt: skip
    engine = Engine("nqueens", model, get_task("nqueens"), settings)
    engine.warmup()
    in_step = [0.0]
    step = engine.runner.run_step

    def timed_step(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return step(*args)
        finally:
            in_step[0] += time.perf_counter() - t0

    engine.runner.run_step = timed_step
    engine.start()
    try:
        reqs = make_requests("nqueens8", width, WARMUP + jobs, seed=0, max_solutions=1, seeded=seeded)
        bodies = [solve_job(settings, SOLVE_REQUESTS["nqueens"](**r.body), NQUEENS_MODEL) for r in reqs]
        for job in bodies[:WARMUP]:
            engine.submit(job).result()
        in_step[0], iterations = 0.0, engine.iterations
        t0 = time.perf_counter()
        results = [f.result() for f in [engine.submit(job) for job in bodies[WARMUP:]]]
        wall = time.perf_counter() - t0
        iterations = engine.iterations - iterations
    finally:
        engine.stop()
    return {
        "jobs_per_s": jobs / wall, "iterations": iterations, "ms_per_iteration": 1e3 * wall / iterations,
        "model_ms": 1e3 * in_step[0] / iterations, "rest_ms": 1e3 * (wall - in_step[0]) / iterations,
        "answer_traj_steps": sum(r.steps for r in results) / jobs,
        "solved": sum(bool(r.solutions) for r in results) / jobs,
    }  # fmt: skip


def main(
    checkpoint: Annotated[Path, typer.Option()] = Path("model/weights/nqueens.safetensors"),
    modes: Annotated[str, typer.Option(help="comma-separated batching modes")] = "continuous,request",
    jobs: Annotated[int, typer.Option(help="N-Queens 8x8 jobs, any one answer, all queued at once")] = 300,
    width: Annotated[int, typer.Option(help="trajectories per job")] = 16,
    slots: Annotated[int, typer.Option()] = 32,
    threads: Annotated[int, typer.Option()] = 1,
    seeded: Annotated[bool, typer.Option(help="seeded jobs (reproducible prefix) or first found")] = False,
) -> None:
    """Jobs/s and time per iteration of a saturated engine, per batching mode."""
    rates = {}
    for mode in modes.split(","):
        # A fresh process per mode: a second engine compiled in the same process ran its steps ~35 %
        # slower (measured: request mode 30 ms per iteration after a continuous engine, 22 ms alone).
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            m = pool.apply(measure, (checkpoint, mode, jobs, width, slots, threads, seeded))
        rates[mode] = m["jobs_per_s"]
        print(f"{mode}: {m['jobs_per_s']:.2f} jobs/s; {m['iterations']} iterations of "
              f"{m['ms_per_iteration']:.2f} ms (model {m['model_ms']:.2f}, the rest {m['rest_ms']:.2f}); "
              f"{m['answer_traj_steps']:.1f} trajectory-steps per answer; solved {100 * m['solved']:.0f} %")
    if "continuous" in rates:
        for mode, rate in rates.items():
            if mode != "continuous":
                print(f"continuous / {mode}: {rates['continuous'] / rate:.2f}x")


if __name__ == "__main__":
    typer.run(main)
