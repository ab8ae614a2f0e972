"""The pure scheduler of trajectory slots: plain data in, plain data out; no I/O, threads or tensors.

The engine (service/engine.py) drives it once per iteration:

    sched.add(job, now, watch=False)        # job.max_steps already resolved to an int; watch: report
                                            # its answers as they retire (Finished.found), progress()
    plan = sched.schedule(now)              # which slots run this step; which of them are new;
                                            # plan.finished: jobs whose deadline passed
    ... run one supervision step for plan.rows, verify the rows with row.verify ...
    finished = sched.update(plan, outcomes, now)  # one RowOutcome per plan row -> what finished
    finished = sched.abort(job_id, now)     # client went away: free its slots, finish it as aborted

Every call that can end jobs returns them as a ``Finished`` (FinishedJob list: aggregated solutions,
outcome, counts; and the trajectories retired, by outcome): nothing is left behind to drain.

Sampling (a task with no verifier, e.g. MNIST: ``Task.unconditional``) is a property of the scheduler,
since an engine serves one task: no row is verified, a trajectory retires at its last step (or when the
halting head says stop, in continuous mode), and every trajectory's output is an answer.

Modes (``BatchingMode``):
- continuous: every iteration admits waiting trajectories (``admission="round_robin"``, the default: one
  slot per waiting job per pass, in arrival order; or ``"fcfs"``: by job arrival, each job taking every
  free slot it can use; a job's trajectories always in index order) into
  every free slot, including slots freed by the previous update. Every row is verified
  after every step; a trajectory retires when its candidate is valid, when the halting head says stop
  (q_halt > 0), when its invalid candidate has not changed for its job's ``stall_patience`` steps in a
  row and it has run at least ``stall_min_steps`` steps (stall exit; patience 0 turns it off), or at
  its job's max_steps.
- request: request-level dynamic batching (Triton / Ray Serve style). A batch starts when the slots are
  all free and either the waiting trajectories fill every slot or the oldest waiting job has waited
  ``batch_wait_s``; it runs until its last trajectory has run its max_steps. Candidates are verified only
  at the last step; the halting head is ignored.
- serial: like request, but a batch holds trajectories of one job only and starts without waiting.

Determinism: a trajectory's path depends only on (seed, trajectory index, step) (the model's counter-based
noise), so its outcome does not depend on the batch. The answer of a seeded job (``job.seeded``: the
client chose the seed) is made a function of those outcomes alone, never of timing: in continuous mode it
completes when the contiguous prefix of retired trajectories 0..p-1 holds ``max_solutions`` distinct
solutions (or p = num_trajectories), and its answer is that prefix's solutions; in request/serial modes
every trajectory runs to the end and the answer is all of them. Only a deadline (partial) or an abort
makes an answer timing-dependent.

First found: an unseeded solve job asked for no reproducibility, so in continuous mode it completes as
soon as its retired trajectories, whichever they are, hold ``max_solutions`` distinct solutions, and its
answer is every retired trajectory's. It does not wait for trajectory 0 to fail at max_steps while
trajectory 5 has already solved; the slots it frees go to other jobs at once.

Aggregation: solutions are grouped by canonical key; ``count`` = trajectories that reached it, ``score``
= the best score among them, ``first_step`` = the fewest steps any of them ran, the payload is the lowest
trajectory index's. Ordered by count, then score (descending), then first trajectory index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.exit_rules import ABORTED, VALID, BatchingMode, ExitRules
from service.jobs import Job, Outcome
from service.plan import (
    Finished,
    FinishedJob,
    Found,
    JobProgress,
    PlanRow,
    RowOutcome,
    SolutionRecord,
    StepPlan,
)

__all__ = ["Finished", "FinishedJob", "PlanRow", "RowOutcome", "Scheduler", "SolutionRecord", "StepPlan"]


@dataclass
class SchedulerStats:
    slots: int
    active_slots: int
    waiting_jobs: int  # jobs none of whose trajectories has been admitted yet
    running_jobs: int
    waiting_trajectories: int


@dataclass
class _Traj:
    outcome: str
    steps: int
    key: bytes | None = None
    score: float = 0.0
    payload: Any = None


@dataclass
class _JobState:
    job: Job
    max_steps: int
    arrived: float
    seq: int
    next_traj: int = 0
    first_admit: float | None = None
    active: set[int] = field(default_factory=set)  # slots
    retired: dict[int, _Traj] = field(default_factory=dict)  # traj -> record
    prefix: int = 0  # trajectories 0..prefix-1 are all retired
    prefix_keys: set[bytes] = field(default_factory=set)
    found_keys: set[bytes] = field(default_factory=set)  # distinct solutions of all retired trajectories
    watch: bool = False  # a streamed job: its answers go to Finished.found as they retire

    @property
    def width(self) -> int:
        return self.job.num_trajectories


@dataclass
class _Slot:
    job_id: str
    traj: int
    steps: int = 0
    unchanged: int = 0  # consecutive steps after which the candidate was the same as before


class Scheduler:
    def __init__(
        self,
        slots: int,
        mode: BatchingMode = BatchingMode.continuous,
        batch_wait_s: float = 0.0,
        use_halting: bool = True,
        admission: str = "round_robin",
        stall_min_steps: int = 1,
        sampling: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if admission not in ("fcfs", "round_robin"):
            raise ValueError(f"admission must be 'fcfs' or 'round_robin', got {admission!r}")
        self.admission = admission
        self.num_slots = slots
        self.mode = BatchingMode(mode)
        self.batch_wait_s = batch_wait_s
        self.use_halting = use_halting
        self.stall_min_steps = stall_min_steps
        self.rules = ExitRules(self.mode, use_halting, stall_min_steps)
        self._slots: list[_Slot | None] = [None] * slots
        self._jobs: dict[str, _JobState] = {}  # insertion order = arrival order
        self.sampling = sampling
        self._finished = Finished()  # collects what the current call ends; handed back as it returns
        self._seq = 0
        # Seconds the next step is expected to take (the engine's running estimate; 0 = unknown). A job
        # whose deadline falls inside the coming step is answered before it, not one step late.
        self.step_s = 0.0

    # -- intake ---------------------------------------------------------------------------------------
    def add(self, job: Job, now: float, watch: bool = False) -> None:
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} already scheduled")
        if job.max_steps is None or job.max_steps < 1:
            raise ValueError("job.max_steps must be resolved to a positive int before add()")
        if job.num_trajectories < 1:
            raise ValueError("job.num_trajectories must be >= 1")
        self._seq += 1
        self._jobs[job.id] = _JobState(job=job, max_steps=job.max_steps, arrived=now, seq=self._seq,
                                       watch=watch)

    def abort(self, job_id: str, now: float) -> Finished:
        """Finish a job as aborted and free its slots (nothing when it is unknown or already done)."""
        state = self._jobs.get(job_id)
        if state is not None:
            self._finish(state, Outcome.aborted, now)
        return self._hand_back()

    # -- one iteration ------------------------------------------------------------------------------
    def schedule(self, now: float) -> StepPlan:
        self._expire_deadlines(now + self.step_s)
        admitted = self._admit(now)
        rows: list[PlanRow] = []
        for slot_index, slot in enumerate(self._slots):
            if slot is None:
                continue
            state = self._jobs[slot.job_id]
            final = slot.steps + 1 >= state.max_steps
            verify = self.rules.verifies(final, sampling=self.sampling)
            rows.append(
                PlanRow(slot_index, slot.job_id, slot.traj, slot.steps, slot_index in admitted, verify, final)
            )
        return StepPlan(rows=rows, wake_at=None if rows else self._wake_at(), finished=self._hand_back())

    def update(self, plan: StepPlan, outcomes: list[RowOutcome], now: float) -> Finished:
        if len(outcomes) != len(plan.rows):
            raise ValueError(f"{len(outcomes)} outcomes for {len(plan.rows)} plan rows")
        touched: list[_JobState] = []
        for row, out in zip(plan.rows, outcomes, strict=True):
            slot = self._slots[row.slot]
            state = self._jobs.get(row.job_id)
            if slot is None or state is None or slot.job_id != row.job_id or slot.traj != row.traj:
                continue  # the job finished (abort, deadline) between schedule() and update()
            slot.steps += 1
            slot.unchanged = slot.unchanged + 1 if out.unchanged else 0
            retire = self._retirement(state, row, out, slot)
            if retire is None:
                continue
            keep = retire == VALID
            self._retire(
                state,
                row.slot,
                _Traj(
                    outcome=retire,
                    steps=slot.steps,
                    key=out.key if keep else None,
                    score=out.score if keep else 0.0,
                    payload=out.payload if keep else None,
                ),
            )
            if not touched or touched[-1] is not state:
                touched.append(state)
        for state in touched:
            if state.job.id in self._jobs:
                self._maybe_complete(state, now)
        return self._hand_back()

    def _hand_back(self) -> Finished:
        finished, self._finished = self._finished, Finished()
        return finished

    def stats(self) -> SchedulerStats:
        waiting = sum(1 for s in self._jobs.values() if s.first_admit is None)
        return SchedulerStats(
            slots=self.num_slots,
            active_slots=sum(1 for s in self._slots if s is not None),
            waiting_jobs=waiting,
            running_jobs=len(self._jobs) - waiting,
            waiting_trajectories=sum(s.width - s.next_traj for s in self._jobs.values()),
        )

    def progress(self, job_id: str) -> JobProgress | None:
        """Where a job stands now (None when it is unknown or finished)."""
        state = self._jobs.get(job_id)
        return None if state is None else self._progress(state)

    def _progress(self, state: _JobState) -> JobProgress:
        retired: dict[str, int] = {}
        steps = 0
        for rec in state.retired.values():
            retired[rec.outcome] = retired.get(rec.outcome, 0) + 1
            steps += rec.steps
        for slot_index in state.active:
            slot = self._slots[slot_index]
            steps += slot.steps if slot is not None else 0
        distinct = retired.get(VALID, 0) if self.sampling else len(state.found_keys)
        return JobProgress(steps=steps, alive=len(state.active), waiting=state.width - state.next_traj,
                           retired=retired, distinct=distinct)

    def has_work(self) -> bool:
        return bool(self._jobs)

    def job_ids(self) -> list[str]:
        return list(self._jobs)

    # -- rules ----------------------------------------------------------------------------------------
    def _retirement(self, state: _JobState, row: PlanRow, out: RowOutcome, slot: _Slot) -> str | None:
        return self.rules.retirement(
            verified_valid=out.valid, halted=out.halted, final=row.final, verified=row.verify,
            unchanged_run=slot.unchanged, steps=slot.steps, stall_patience=state.job.stall_patience or 0,
            sampling=self.sampling,
        )

    def _admit(self, now: float) -> set[int]:
        free = [i for i, s in enumerate(self._slots) if s is None]
        if not free:
            return set()
        if self.mode != BatchingMode.continuous:
            if len(free) < self.num_slots or not self._batch_ready(now):
                return set()
        candidates = [s for s in self._jobs.values() if s.next_traj < s.width]
        if self.mode == BatchingMode.serial:
            candidates = candidates[:1]
        admitted: set[int] = set()
        # fcfs: the oldest job takes every free slot it can use, then the next. round_robin (continuous
        # mode only; request/serial batches always take whole jobs in arrival order): one slot per job per
        # pass (in arrival order), so a narrow job is not held behind a wide one.
        round_robin = self.admission == "round_robin" and self.mode == BatchingMode.continuous
        per_pass = 1 if round_robin else None
        while free and candidates:
            for state in candidates:
                take = state.width - state.next_traj if per_pass is None else per_pass
                for _ in range(min(take, len(free))):
                    slot_index = free.pop(0)
                    self._slots[slot_index] = _Slot(job_id=state.job.id, traj=state.next_traj)
                    state.active.add(slot_index)
                    state.next_traj += 1
                    admitted.add(slot_index)
                    if state.first_admit is None:
                        state.first_admit = now
                if not free:
                    break
            candidates = [s for s in candidates if s.next_traj < s.width]
        return admitted

    def _batch_ready(self, now: float) -> bool:
        waiting = [s for s in self._jobs.values() if s.next_traj < s.width]
        if not waiting:
            return False
        if self.mode == BatchingMode.serial:
            return True
        if sum(s.width - s.next_traj for s in waiting) >= self.num_slots:
            return True
        return now - waiting[0].arrived >= self.batch_wait_s

    def _wake_at(self) -> float | None:
        if self.mode != BatchingMode.request:
            return None
        waiting = [s for s in self._jobs.values() if s.next_traj < s.width]
        times = [waiting[0].arrived + self.batch_wait_s] if waiting else []
        times += [s.job.deadline for s in self._jobs.values() if s.job.deadline is not None]
        return min(times) if times else None

    def _expire_deadlines(self, now: float) -> None:
        for state in list(self._jobs.values()):
            if state.job.deadline is not None and now >= state.job.deadline:
                self._finish(state, Outcome.partial, now)

    def _retire(self, state: _JobState, slot_index: int, traj: _Traj) -> None:
        slot = self._slots[slot_index]
        assert slot is not None
        state.retired[slot.traj] = traj
        state.active.discard(slot_index)
        self._slots[slot_index] = None
        self._finished.retired[traj.outcome] += 1
        if traj.key is not None:
            state.found_keys.add(traj.key)
        if state.watch and traj.outcome == VALID:
            self._finished.found.append(
                Found(state.job.id, slot.traj, traj.steps, traj.key, traj.score, traj.payload)
            )
        # The prefix stops growing once it holds max_solutions distinct keys: that prefix is the answer.
        while state.prefix in state.retired and len(state.prefix_keys) < state.job.max_solutions:
            key = state.retired[state.prefix].key
            if key is not None:
                state.prefix_keys.add(key)
            state.prefix += 1

    def _maybe_complete(self, state: _JobState, now: float) -> None:
        all_retired = len(state.retired) == state.width
        if self.mode == BatchingMode.continuous and not self.sampling:
            found = state.found_keys if self._first_found(state) else state.prefix_keys
            if len(found) >= state.job.max_solutions or all_retired:
                self._finish(state, Outcome.complete, now)
        elif all_retired:
            self._finish(state, Outcome.complete, now)

    def _first_found(self, state: _JobState) -> bool:
        """Complete on the first max_solutions found, in any trajectories (unseeded solve jobs)."""
        return not state.job.seeded and not self.sampling

    def _finish(self, state: _JobState, outcome: Outcome, now: float) -> None:
        for slot_index in sorted(state.active):
            slot = self._slots[slot_index]
            assert slot is not None
            self._finished.retired[ABORTED] += 1
            # steps a cut-short trajectory ran still count as work for partial/aborted answers
            state.retired.setdefault(slot.traj, _Traj(outcome=ABORTED, steps=slot.steps))
            self._slots[slot_index] = None
        state.active.clear()
        del self._jobs[state.job.id]

        prefix_rule = self.mode == BatchingMode.continuous and not self._first_found(state)
        if outcome == Outcome.complete and prefix_rule:
            counted = {t: r for t, r in state.retired.items() if t < state.prefix}
        else:
            counted = state.retired
        limit = None if self.sampling else state.job.max_solutions
        self._finished.jobs.append(
            FinishedJob(
                job=state.job,
                outcome=outcome,
                solutions=_aggregate(counted, self.sampling, limit),
                num_trajectories=sum(1 for r in counted.values() if r.outcome != ABORTED or r.steps > 0),
                steps=sum(r.steps for r in counted.values()),
                queue_s=(state.first_admit if state.first_admit is not None else now) - state.arrived,
                trajectories_run=state.next_traj,
                progress=self._progress(state) if state.watch else None,
            )
        )


def _aggregate(records: dict[int, _Traj], sampling: bool, limit: int | None) -> list[SolutionRecord]:
    if sampling:
        return [
            SolutionRecord(
                key=t.to_bytes(8, "big"), payload=r.payload, score=r.score, count=1,
                first_step=r.steps, first_traj=t,
            )
            for t, r in sorted(records.items())
            if r.outcome == VALID
        ]
    groups: dict[bytes, SolutionRecord] = {}
    for traj, rec in sorted(records.items()):
        if rec.outcome != VALID or rec.key is None:
            continue
        group = groups.get(rec.key)
        if group is None:
            groups[rec.key] = SolutionRecord(rec.key, rec.payload, rec.score, 1, rec.steps, traj)
        else:
            group.count += 1
            group.score = max(group.score, rec.score)
            group.first_step = min(group.first_step, rec.steps)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, -g.score, g.first_traj))
    return ordered if limit is None else ordered[:limit]
