"""Verifier throughput per family: ``python -m model.tasks.bench`` prints candidates/s at batch 1024.

Each family's batch holds real candidates for generated instances (solver solutions, half of them with
one token corrupted so both verdicts are exercised). Median and best of ``--repeats`` timed calls after
a warm-up, at each of ``--threads`` (on a shared CPU one thread avoids OpenMP spin-waits).
``--tiers N`` also prints the Sudoku generator's hardness per difficulty tier (solver search nodes and
guesses over N puzzles each). Prints only; writes no files.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from model.tasks.base import Task
from model.tasks.mnist import to_tokens
from model.tasks.registry import TASKS
from model.tasks.sudoku import TASK as SUDOKU
from model.tasks.sudoku import TIERS


def candidate_batch(task: Task, batch: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) of ``batch`` candidates over a few dozen generated instances, half corrupted."""
    if task.name == "mnist":
        x = task.parse({}).x
        ys = to_tokens(torch.rand(batch, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.8)
        return ys, x.expand(batch, -1, -1).contiguous()
    pool: list[tuple[torch.Tensor, torch.Tensor]] = []
    knobs = {"difficulty": "medium"} if task.name == "sudoku" else {}
    while len(pool) < 64:
        instance, _ = task.generate(rng, **knobs)
        for y in task.solve(instance, cap=8):
            pool.append((y, instance.x))
    ys, xs = [], []
    for i in range(batch):
        y, x = pool[rng.randrange(len(pool))]
        if i % 2:
            y = y.clone()
            flat = y.view(-1)
            flat[rng.randrange(flat.numel())] = rng.randrange(task.spec.out_vocab)
        ys.append(y)
        xs.append(x)
    return torch.stack(ys), torch.stack(xs)


def throughput(task: Task, y: torch.Tensor, x: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """(median and best candidates per second, fraction accepted) of ``task.verify`` on one batch."""
    accepted = float(task.verify(y, x).float().mean())
    for _ in range(3):
        task.verify(y, x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        task.verify(y, x)
        times.append(time.perf_counter() - start)
    return y.shape[0] / statistics.median(times), y.shape[0] / min(times), accepted


def sudoku_tiers(count: int, seed: int) -> None:
    print(f"\nSudoku generator hardness, {count} puzzles per tier (seed {seed}):")
    header = ("givens", "nodes med", "nodes max", "guesses med", "ms/puzzle")
    print(f"{'tier':8} " + " ".join(f"{h:>12}" for h in header))
    rng = random.Random(seed)
    for tier in TIERS:
        start = time.perf_counter()
        metas = [SUDOKU.generate(rng, difficulty=tier)[0].meta for _ in range(count)]
        ms = (time.perf_counter() - start) / count * 1e3
        givens = [m["givens"] for m in metas]
        nodes = [m["nodes"] for m in metas]
        guesses = [m["guesses"] for m in metas]
        span = f"{min(givens)}-{max(givens)}"
        print(
            f"{tier:8} {span:>12} {statistics.median(nodes):>12.0f} {max(nodes):>12} "
            f"{statistics.median(guesses):>12.0f} {ms:>12.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch intra-op thread counts")
    parser.add_argument("--tiers", type=int, default=0, help="also report Sudoku tier hardness (N puzzles)")
    args = parser.parse_args()
    batches = {name: candidate_batch(t, args.batch, random.Random(args.seed)) for name, t in TASKS.items()}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        print(f"\nverifier throughput, batch {args.batch}, CPU, torch {torch.__version__}, threads {threads}")
        print(f"{'family':16} {'cand/s median':>14} {'cand/s best':>14} {'us/batch med':>13} {'accepted':>9}")
        for name, task in TASKS.items():
            y, x = batches[name]
            median, best, accepted = throughput(task, y, x, args.repeats)
            micros = args.batch / median * 1e6
            print(f"{name:16} {median:>14,.0f} {best:>14,.0f} {micros:>13.0f} {accepted:>9.2f}")
    if args.tiers:
        sudoku_tiers(args.tiers, args.seed)


if __name__ == "__main__":
    main()
