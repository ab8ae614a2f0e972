"""Deadline-aware admission: refuse at once (429 + Retry-After) a job whose deadline the queue ahead of it
would make it miss, instead of accepting it and answering ``complete: false`` late.

Work is counted in slot-steps (one trajectory advanced one supervision step). A job's *budget* is
``num_trajectories x max_steps`` slot-steps; it usually needs less (it stops at ``max_solutions``,
trajectories retire when verified, halted or stalled). An engine's ``WorkMeter`` measures both sides:

- ``rate``: slot-steps per second, from the batch sizes and the busy loop's interval between step starts
  (moving averages; the interval, not the step alone, so a contended CPU counts), so at saturation it is
  the engine's real throughput;
- ``ratio``: the slot-steps a job really used / its budget (moving average over complete jobs and those
  cut short by their deadline).

A job is expected to finish once the work ahead of it and its own is done, ``(ahead + ratio x budget) /
rate`` seconds from now: with round-robin admission every waiting job shares the freed slots, so similar
jobs finish together when the queue drains. Until the meter has seen a step and a complete job, nothing is
refused. In process the engine counts the work ahead exactly (each pending job's expected work less the
slot-steps it has used); in Redis mode the API keeps the budgets of the stream's entries in a counter
beside the stream and the workers publish their meters in their registrations (service/redis/queue.py).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from service.errors import QueueFull

SMOOTHING = 0.1  # weight of the newest sample in the moving averages


class DeadlineUnmeetable(QueueFull):
    """The work queued ahead of a job (and its own) would take longer than its deadline allows: 429."""

    kind = "deadline"

    def __init__(self, model: str, expected_s: float, remaining_s: float) -> None:
        retry_after_s = max(1.0, math.ceil(expected_s - remaining_s))
        super().__init__(model, retry_after_s)
        self.args = (
            f"model {model!r} would answer this request in about {expected_s:.1f} s (the work queued ahead "
            f"of it and its own, at the measured speed), after its deadline in {remaining_s:.1f} s; "
            f"retry in {retry_after_s:.0f} s or with a longer timeout_ms",
        )


@dataclass(frozen=True)
class Pace:
    """A meter's reading: slot-steps per second, and the fraction of its budget a complete job uses."""

    rate: float
    ratio: float

    def seconds(self, budget_slot_steps: float) -> float:
        """Expected seconds to run jobs of this total budget."""
        return budget_slot_steps * self.ratio / self.rate


class WorkMeter:
    """Moving averages of one engine's speed and of how much of its budget a job uses (thread-safe: the
    engine thread records, any thread reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows = 0.0
        self._seconds = 0.0
        self._ratio: float | None = None

    def step(self, rows: int, seconds: float) -> None:
        with self._lock:
            if self._seconds == 0.0:
                self._rows, self._seconds = float(rows), seconds
            else:
                self._rows += SMOOTHING * (rows - self._rows)
                self._seconds += SMOOTHING * (seconds - self._seconds)

    def job_done(self, budget: int, used: int) -> None:
        """A finished job's budget and the slot-steps it used (complete, or cut short by its deadline:
        counting only complete jobs would, under overload, measure only the quick ones)."""
        if budget <= 0:
            return
        ratio = min(1.0, used / budget)
        with self._lock:
            self._ratio = ratio if self._ratio is None else self._ratio + SMOOTHING * (ratio - self._ratio)

    def pace(self) -> Pace | None:
        """The current reading, or None until a step and a complete job were measured."""
        with self._lock:
            if self._seconds <= 0.0 or self._ratio is None:
                return None
            return Pace(rate=self._rows / self._seconds, ratio=max(self._ratio, 1e-3))

    def snapshot(self) -> dict[str, float] | None:
        """The reading as JSON (a worker's registration)."""
        pace = self.pace()
        return None if pace is None else {"rate": pace.rate, "ratio": pace.ratio}


def combined(readings: list[dict[str, float] | None]) -> Pace | None:
    """The pace of several workers serving one model: their rates add up; their ratios are averaged."""
    known = [r for r in readings if r]
    if not known:
        return None
    return Pace(rate=sum(r["rate"] for r in known), ratio=sum(r["ratio"] for r in known) / len(known))
