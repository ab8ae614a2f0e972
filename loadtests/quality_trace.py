"""Run many seeded trajectories of a model on one puzzle for a fixed number of supervision steps and keep,
per trajectory and step, whether the decoded candidate was valid, which solution it was, whether the
halting head said stop, and whether the candidate was the same as after the previous step (stalled).

Every serving policy (verified early exit on or off, any width k <= W, any max_steps s <= S) is a
function of this trace: a trajectory's first s steps do not depend on what it would do later, nor on its
batch (noise is keyed by seed, trajectory and step), so one run answers every (k, s, policy) question.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.gram import GRAM, NoiseKeys
from model.tasks.base import Instance, Task

NOT_VALID = -1


@dataclass
class Trace:
    solution_id: torch.Tensor  # int64 [W, S]: index of the distinct valid solution, NOT_VALID if invalid
    halted: torch.Tensor  # bool [W, S]: q_halt > 0 after that step
    unchanged: torch.Tensor  # bool [W, S]: the decoded candidate equals the previous step's (False at 0)
    total_solutions: int  # completions of the puzzle (exact solver, capped)
    seconds: float  # wall time of the model steps and verification

    @property
    def width(self) -> int:
        return int(self.solution_id.shape[0])

    @property
    def steps(self) -> int:
        return int(self.solution_id.shape[1])


@torch.no_grad()
def trace_puzzle(
    model: GRAM,
    task: Task,
    instance: Instance,
    *,
    width: int,
    steps: int,
    seed: int,
    temperature: float | Sequence[float] = 1.0,
    chunk: int = 64,
    solution_cap: int = 10_000,
) -> Trace:
    """``temperature``: the prior's, one number for every step, or a per-step schedule (step n runs at
    ``temperature[n]``, the last entry holding for the steps beyond it)."""
    schedule = [float(t) for t in temperature] if isinstance(temperature, Sequence) else [float(temperature)]
    if not schedule:
        raise ValueError("empty temperature schedule")
    total = len(task.solve(instance, cap=solution_cap))
    keys: dict[bytes, int] = {}
    solution_id = torch.full((width, steps), NOT_VALID, dtype=torch.int64)
    halted = torch.zeros((width, steps), dtype=torch.bool)
    unchanged = torch.zeros((width, steps), dtype=torch.bool)
    x1 = instance.x.unsqueeze(0)
    e_x1 = model.encode(x1)
    started = time.perf_counter()
    for lo in range(0, width, chunk):
        b = min(chunk, width - lo)
        x = x1.expand(b, -1, -1)
        e_x = e_x1.expand(b, -1, -1)
        h, l = model.init_state(b)
        traj = torch.arange(lo, lo + b, dtype=torch.int64)
        seeds = torch.full((b,), seed, dtype=torch.int64)
        previous: torch.Tensor | None = None
        for n in range(steps):
            t_n = schedule[min(n, len(schedule) - 1)]
            hot = None if t_n == 1.0 else torch.full((b,), t_n)  # None: the trained prior, bit for bit
            noise = NoiseKeys(seeds, traj, torch.full((b,), n, dtype=torch.int64), hot)
            out = model.step(h, l, e_x, noise)
            h, l = out.h, out.l
            if previous is not None:
                unchanged[lo : lo + b, n] = (out.tokens == previous).flatten(1).all(1).cpu()
            previous = out.tokens
            valid = task.verify(out.tokens, x)
            halted[lo : lo + b, n] = out.q_halt.cpu() > 0
            for row in torch.nonzero(valid).flatten().tolist():
                key = task.canonical_key(x[row], out.tokens[row])
                solution_id[lo + row, n] = keys.setdefault(key, len(keys))
    return Trace(solution_id, halted, unchanged, max(total, len(keys)), time.perf_counter() - started)
