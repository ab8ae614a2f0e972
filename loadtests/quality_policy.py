"""Serving policies evaluated on trajectory traces: what k trajectories with max_steps s would have found,
and how many supervision steps they would have spent.

- ``final`` (verified early exit OFF; the paper's inference, request/serial modes): every trajectory runs
  all s steps and only its last candidate is verified. Cost k * s.
- ``verified`` (verified early exit ON; continuous mode): a trajectory retires at the first step whose
  candidate the exact verifier accepts. Cost: that step, or s if it never becomes valid.
- ``verified+halt``: as ``verified``, and a trajectory also retires when the halting head says stop.
- ``verified+stall``: as ``verified``, and a trajectory whose
  candidate is invalid and was the same after its last ``stall_patience`` steps (default 1) retires
  there, once it has run ``stall_min_steps`` steps (default 3) (stall exit): a trajectory stuck on a
  wrong answer rarely leaves it, so its remaining steps buy little.
- ``verified+halt+stall``: both exits; what the continuous engine does with its defaults
  (``GRAM_USE_HALTING`` on). ``verified+stall`` is the engine with ``GRAM_USE_HALTING=false``.

The early-exit policies replay the scheduler's own rule (``service.exit_rules.ExitRules.retirement``) step
by step over each trace, so this study and the engine cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from loadtests.quality_trace import NOT_VALID, Trace
from service.exit_rules import VALID, BatchingMode, ExitRules
from service.settings import Settings

POLICIES = ("final", "verified", "verified+halt", "verified+stall", "verified+halt+stall")
# the ones compared with "final" at equal coverage
EARLY_EXIT_POLICIES = ("verified", "verified+stall", "verified+halt+stall")


@dataclass(frozen=True)
class Outcome:
    accuracy: float  # fraction of trajectories that returned a valid solution
    solved: float  # fraction of puzzles with at least one valid solution
    coverage: float  # mean over puzzles of distinct valid solutions found / all solutions
    steps: float  # supervision steps spent per puzzle (summed over its k trajectories)


def _first(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True per row, or the row length when there is none. mask: bool [k, s]."""
    s = mask.shape[1]
    idx = torch.arange(s).expand_as(mask)
    return torch.where(mask, idx, torch.full_like(idx, s)).min(dim=1).values


# the service's defaults (GRAM_STALL_PATIENCE, GRAM_STALL_MIN_STEPS)
STALL_PATIENCE: int = Settings.model_fields["stall_patience"].default
STALL_MIN_STEPS: int = Settings.model_fields["stall_min_steps"].default


def run_policy(
    trace: Trace, k: int, s: int, policy: str, stall_patience: int = STALL_PATIENCE,
    stall_min_steps: int = STALL_MIN_STEPS,
) -> tuple[torch.Tensor, float]:
    """(solution id per trajectory, NOT_VALID if none; steps spent) for the first k trajectories."""
    if not (1 <= k <= trace.width and 1 <= s <= trace.steps):
        raise ValueError(f"k={k}, s={s} outside the trace ({trace.width} x {trace.steps})")
    ids = trace.solution_id[:k, :s]
    if policy == "final":
        return ids[:, s - 1], float(k * s)
    found, stop = _retire(trace, slice(0, k), s, policy, stall_patience, stall_min_steps)
    return found, float((stop + 1).sum().item())


def _retire(
    trace: Trace, rows: slice, s: int, policy: str, stall_patience: int, stall_min_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per trajectory in ``rows`` under an early-exit policy: (solution id it retires with, NOT_VALID if
    none; index of the step it retires after, at most s - 1), by the continuous engine's exit rules."""
    if policy not in POLICIES or policy == "final":
        raise ValueError(f"unknown early-exit policy {policy!r}; choose one of {EARLY_EXIT_POLICIES}")
    rules = ExitRules(BatchingMode.continuous, use_halting="halt" in policy, stall_min_steps=stall_min_steps)
    patience = stall_patience if "stall" in policy else 0
    ids = trace.solution_id[rows, :s].tolist()
    halted = trace.halted[rows, :s].tolist()
    unchanged = trace.unchanged[rows, :s].tolist()
    found, stops = [], []
    for traj_ids, traj_halted, traj_unchanged in zip(ids, halted, unchanged, strict=True):
        run, outcome, n = 0, None, 0
        for n in range(s):
            run = run + 1 if traj_unchanged[n] else 0
            valid = traj_ids[n] != NOT_VALID
            outcome = rules.retirement(
                verified_valid=valid, halted=bool(traj_halted[n]), final=n == s - 1, verified=True,
                unchanged_run=run, steps=n + 1, stall_patience=patience,
            )
            if outcome is not None:
                break
        found.append(traj_ids[n] if outcome == VALID else NOT_VALID)
        stops.append(n)
    return torch.tensor(found, dtype=torch.int64), torch.tensor(stops, dtype=torch.int64)


def first_found_work(
    traces: Sequence[Trace], k: int, s: int, policy: str = "verified+halt+stall",
    stall_patience: int = STALL_PATIENCE, stall_min_steps: int = STALL_MIN_STEPS,
    concurrency: int | None = None,
) -> float:
    """Mean trajectory-steps a width-k job wanting any one answer (unseeded) costs the continuous engine.

    ``concurrency`` None (= k): its k trajectories are admitted together, as at light load: every
    trajectory runs until it retires or until the step at which the first one retires valid, where the
    job ends and the rest are dropped. ``concurrency`` c < k: the job holds at most c slots, as when
    round-robin admission shares a saturated engine: it starts with trajectories 0..c-1 and a trajectory
    retiring without an answer hands its slot to the next index from the next step on (the engine's
    refill). Averaged over each trace's disjoint groups of k trajectories. ``k * s`` over this bounds what
    continuous batching can gain on request-level batching (which runs all k to s) where a step's cost
    grows with its rows."""
    if not (1 <= k <= min(t.width for t in traces) and 1 <= s <= min(t.steps for t in traces)):
        raise ValueError(f"k={k}, s={s} outside the traces")
    c = k if concurrency is None else concurrency
    if not 1 <= c <= k:
        raise ValueError(f"concurrency must be in 1..{k}, got {concurrency}")
    costs = []
    for trace in traces:
        for lo in range(0, trace.width - k + 1, k):
            found, stop = _retire(trace, slice(lo, lo + k), s, policy, stall_patience, stall_min_steps)
            costs.append(_group_cost(found.tolist(), (stop + 1).tolist(), c))
    return sum(costs) / len(costs)


def _group_cost(found: list[int], length: list[int], concurrency: int) -> float:
    """Trajectory-steps of one job: trajectories in index order, at most ``concurrency`` running, each for
    ``length`` steps unless the job ends first, at the end of the step where one retires valid."""
    waiting = list(range(len(found)))
    running: dict[int, int] = {}  # trajectory -> steps it has run
    cost = 0
    while waiting or running:
        while waiting and len(running) < concurrency:
            running[waiting.pop(0)] = 0
        cost += len(running)
        for i in running:
            running[i] += 1
        retired = [i for i, n in running.items() if n == length[i]]
        if any(found[i] != NOT_VALID for i in retired):
            break
        for i in retired:
            del running[i]
    return float(cost)


def evaluate(
    traces: Sequence[Trace], k: int, s: int, policy: str, stall_patience: int = STALL_PATIENCE,
    stall_min_steps: int = STALL_MIN_STEPS,
) -> Outcome:
    acc, solved, cov, steps = [], [], [], []
    for trace in traces:
        found, spent = run_policy(trace, k, s, policy, stall_patience, stall_min_steps)
        valid = found != NOT_VALID
        acc.append(valid.float().mean().item())
        solved.append(float(valid.any().item()))
        distinct = len(set(found[valid].tolist()))
        cov.append(distinct / trace.total_solutions if trace.total_solutions else 0.0)
        steps.append(spent)
    n = len(traces)
    return Outcome(sum(acc) / n, sum(solved) / n, sum(cov) / n, sum(steps) / n)


def steps_saved_at_equal_coverage(
    traces: Sequence[Trace], k: int, s_max: int, policy: str = "verified",
    stall_patience: int = STALL_PATIENCE, stall_min_steps: int = STALL_MIN_STEPS,
) -> dict[str, float | str]:
    """Supervision steps that an early-exit policy (one of ``EARLY_EXIT_POLICIES``) saves against
    running every trajectory to max_steps (``final``), at width k, over max_steps 1..s_max.

    Equal coverage: the target is the highest coverage both policies reach for some max_steps <= s_max;
    each policy pays for its cheapest max_steps reaching it; ``saved`` = 1 - steps(on) / steps(off), NaN
    when neither finds anything. Same settings: both at max_steps = s_max (what turning early exit on
    changes for a user who keeps max_steps), with each policy's coverage."""
    if policy not in EARLY_EXIT_POLICIES:
        raise ValueError(f"policy must be one of {EARLY_EXIT_POLICIES}, got {policy!r}")
    on = [evaluate(traces, k, s, policy, stall_patience, stall_min_steps) for s in range(1, s_max + 1)]
    off = [evaluate(traces, k, s, "final") for s in range(1, s_max + 1)]
    target = min(max(o.coverage for o in on), max(o.coverage for o in off))

    def cheapest(outcomes: list[Outcome]) -> tuple[int, Outcome]:
        reaching = [(s + 1, o) for s, o in enumerate(outcomes) if o.coverage >= target - 1e-12]
        return min(reaching, key=lambda item: item[1].steps)

    s_on, best_on = cheapest(on)
    s_off, best_off = cheapest(off)
    return {
        "policy": policy,
        "k": float(k),
        "coverage_target": target,
        "max_steps_on": float(s_on),
        "steps_on": best_on.steps,
        "max_steps_off": float(s_off),
        "steps_off": best_off.steps,
        "saved": 1.0 - best_on.steps / best_off.steps if target > 0 else float("nan"),
        "same_settings_coverage_on": on[-1].coverage,
        "same_settings_coverage_off": off[-1].coverage,
        "same_settings_saved": 1.0 - on[-1].steps / off[-1].steps,
    }
