"""A streamed job's events, engine side: ``Watch`` turns what the scheduler reports about one watched job
into calls of its listener, on the engine thread.

Events (``listener(kind, data)``, data plain JSON values):

- ``solution`` (solve jobs): a distinct verified solution, the step its first trajectory verified it:
  ``solution`` (``Task.format``), ``score``, ``count`` (trajectories that reached it so far: more than 1
  only when several did in the same step), ``first_step``, ``trajectory``, ``distinct`` (distinct
  solutions found so far, this one included);
- ``sample`` (sampling jobs, e.g. MNIST): one trajectory's output as it finishes: ``solution``, ``score``,
  ``first_step`` (steps it ran), ``trajectory``, ``index`` (0-based, in finishing order);
- ``progress``: at most every ``PROGRESS_EVERY_S`` while the job runs and once as it finishes: ``steps``
  (supervision steps its trajectories ran, summed), ``alive``, ``waiting``, ``retired`` (by outcome),
  ``distinct``, ``elapsed_ms``.

The job's answer is still its ``Result``: a seeded job's answer is made of a prefix of its trajectories
(service/scheduler.py), so a solution streamed from a later trajectory may not be in it.
A listener must be quick (it runs between supervision steps) and must not raise; one that does is
logged and not called again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from model.tasks.base import Instance, Task
from service.plan import Found, JobProgress

log = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], None]
PROGRESS_EVERY_S = 0.1


class Watch:
    def __init__(self, listener: Listener, task: Task, instance: Instance, submitted_at: float) -> None:
        self.listener: Listener | None = listener
        self.task = task
        self.instance = instance
        self.submitted_at = submitted_at
        self.counts: dict[bytes, int] = {}  # canonical key -> trajectories that reached it
        self.samples = 0
        self.last_progress = -1e9  # time.monotonic() of the last progress event

    def found(self, records: list[Found]) -> None:
        """Answers retired in one step, in retirement order: an event per sample or new solution."""
        if self.task.unconditional:
            for rec in records:
                self._emit("sample", {
                    "solution": self.task.format(self.instance, rec.payload), "score": round(rec.score, 6),
                    "first_step": rec.steps, "trajectory": rec.traj, "index": self.samples,
                })
                self.samples += 1
            return
        new: list[Found] = []
        for rec in records:
            if rec.key is None:
                continue
            if rec.key not in self.counts:
                new.append(rec)
            self.counts[rec.key] = self.counts.get(rec.key, 0) + 1
        known = len(self.counts) - len(new)
        for i, rec in enumerate(new):
            assert rec.key is not None
            self._emit("solution", {
                "solution": self.task.format(self.instance, rec.payload), "score": round(rec.score, 6),
                "count": self.counts[rec.key], "first_step": rec.steps, "trajectory": rec.traj,
                "distinct": known + i + 1,
            })

    def due(self, now: float) -> bool:
        return now - self.last_progress >= PROGRESS_EVERY_S

    def progress(self, progress: JobProgress, now: float) -> None:
        self.last_progress = now
        self._emit("progress", {
            "steps": progress.steps, "alive": progress.alive, "waiting": progress.waiting,
            "retired": progress.retired, "distinct": progress.distinct,
            "elapsed_ms": round((time.time() - self.submitted_at) * 1000.0, 3),
        })

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.listener is None:
            return
        try:
            self.listener(kind, data)
        except Exception:
            log.exception("the listener of a streamed job failed; it gets no more events")
            self.listener = None
