"""When a trajectory leaves its slot: the exit rules of each batching mode, as one pure function.

The scheduler (service/scheduler.py) applies ``retirement`` to every row after every step, and
loadtests/quality_policy.py replays the same function over recorded trajectory traces, so what the
quality study measures is what the engine does. No I/O, no tensors, no settings: plain values in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BatchingMode(StrEnum):
    """How the engine batches trajectories (see service/scheduler.py for the exact rules)."""

    continuous = "continuous"  # iteration-level: verify every step, early exit, refill freed slots at once
    request = "request"  # request-level dynamic batching: whole batches run all max_steps, verify at end
    serial = "serial"  # one request at a time, all max_steps, verify at end (a research script)


# Trajectory outcomes (the ``outcome`` label of gram_trajectories_total).
VALID, INVALID, HALTED, STALLED, EXHAUSTED, ABORTED = (
    "valid", "invalid", "halted", "stalled", "exhausted", "aborted"
)


@dataclass(frozen=True)
class ExitRules:
    """One engine's exit rules: its batching mode, whether it heeds the halting head, and the earliest step
    stall exit may retire at. A job adds its own ``stall_patience`` (0: no stall exit)."""

    mode: BatchingMode = BatchingMode.continuous
    use_halting: bool = True
    stall_min_steps: int = 1

    def verifies(self, final: bool, sampling: bool = False) -> bool:
        """Whether a row's candidate is verified after this step: every step in continuous mode, else only
        at the trajectory's last; never for sampling (any output is an answer)."""
        return not sampling and (self.mode == BatchingMode.continuous or final)

    def retirement(
        self, *, verified_valid: bool, halted: bool, final: bool, verified: bool, unchanged_run: int,
        steps: int, stall_patience: int, sampling: bool = False,
    ) -> str | None:
        """The outcome a trajectory retires with after the step it just ran, or None to keep it running.

        ``steps``: steps it has run, this one included; ``unchanged_run``: consecutive steps after which its
        candidate was the one it had before. Checked in order: a valid candidate, the halting head, stall
        exit (only for a candidate just verified invalid), the last step."""
        continuous = self.mode == BatchingMode.continuous
        halting = continuous and self.use_halting and halted
        if sampling:
            return VALID if final or halting else None
        if verified and verified_valid:
            return VALID
        if halting:
            return HALTED
        stalled = stall_patience > 0 and unchanged_run >= stall_patience and steps >= self.stall_min_steps
        if continuous and verified and stalled:
            return STALLED
        if final:
            return EXHAUSTED if continuous else INVALID
        return None
