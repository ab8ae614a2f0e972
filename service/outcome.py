"""What a /solve answer means, for a client that gets no solutions: ``status`` and a ``hint``.

- ``solved``: at least one verified solution.
- ``infeasible``: no solution exists, proven by an exact search (model/tasks/feasibility.py) within its
  work bound: never claimed on a guess.
- ``not_found``: no trajectory reached a valid answer; the hint says what to change (deadline, width,
  temperature) and whether an exact search showed that answers exist.

The trained-range note (``outside_trained_range``) is computed at intake for every request; the
feasibility search runs only for an empty answer, in a worker thread, so a solved request pays nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import torch

from model.tasks.base import Instance
from model.tasks.feasibility import has_solution
from model.trained_range import outside
from service.jobs import Job, Result

Status = Literal["solved", "not_found", "infeasible"]
WIDEN = 4  # the hint suggests this many times the width that found nothing


@dataclass(frozen=True)
class Explanation:
    status: Status
    hint: str | None = None


def instance_of(job: Job) -> Instance:
    return Instance(task=job.task, x=torch.tensor(job.x, dtype=torch.long), meta=job.meta)


def range_note(job: Job, card: dict[str, Any]) -> str | None:
    """Why the request lies outside the model's training range (None when inside, or when the model's
    card states no range: a checkpoint from before ranges were recorded)."""
    if not card.get("input_range"):
        return None
    return outside(instance_of(job))


async def explain(job: Job, result: Result, *, max_trajectories: int, note: str | None) -> Explanation:
    if result.solutions:
        return Explanation("solved")
    exists = await asyncio.to_thread(has_solution, instance_of(job))
    if exists is False:
        return Explanation("infeasible", "no solution exists: an exact search of every case found none")
    return Explanation("not_found", not_found_hint(job, result, exists, max_trajectories, note))


def not_found_hint(
    job: Job, result: Result, exists: bool | None, max_trajectories: int, note: str | None
) -> str:
    parts = []
    if not result.complete:
        parts.append(f"the deadline cut the search short after {result.steps} supervision steps: "
                     "give a larger timeout_ms")
    else:
        ran = f"{result.num_trajectories} trajectories ({result.steps} supervision steps in all)"
        found = ("solutions exist (an exact search found one), but" if exists
                 else "whether any exists was not decided within the exact check's budget;")
        parts.append(f"{found} none of the {ran} reached a valid one")
        wider = min(job.num_trajectories * WIDEN, max_trajectories)
        more = f"num_trajectories {wider} or " if wider > job.num_trajectories else ""
        parts.append(f"try {more}a higher temperature (more exploration)")
    if note:
        parts.append(f"this request lies outside the model's training range: {note}")
    return "; ".join(parts)
