"""The plain data the engine loop passes around: the scheduler's plan for one step (``StepPlan``), the
runner's verdict on each planned row (``RowOutcome``) and what the scheduler hands back as finished
(``Finished``). No tensors, no I/O: the scheduler stays testable with scripted outcomes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from service.jobs import Job, Outcome


@dataclass(frozen=True)
class PlanRow:
    slot: int
    job_id: str
    traj: int  # trajectory index within the job (the noise key "traj")
    step: int  # supervision steps this trajectory has already run (the noise key "step")
    new: bool  # admitted this iteration: the engine initialises the slot's state and input embedding
    verify: bool  # verify this row's candidate after the step
    final: bool  # this step is the trajectory's last (its job's max_steps)


@dataclass
class FinishedJob:
    job: Job
    outcome: Outcome
    solutions: list[SolutionRecord]
    num_trajectories: int  # trajectories the answer is made of
    steps: int  # supervision steps those trajectories ran
    queue_s: float  # add -> first admission (the whole life when never admitted)
    trajectories_run: int  # every trajectory that took a slot, counted or not
    progress: JobProgress | None = None  # watched jobs only: the job's last progress, cut-short included


@dataclass
class Found:
    """A trajectory of a watched job that retired with an answer (a verified solution, or a sample)."""

    job_id: str
    traj: int
    steps: int
    key: bytes | None
    score: float
    payload: Any


@dataclass
class JobProgress:
    """Where one job stands (what a streamed request's ``progress`` event reports)."""

    steps: int  # supervision steps its trajectories have run, summed
    alive: int  # trajectories in a slot now
    waiting: int  # trajectories not admitted yet
    retired: dict[str, int]  # trajectories retired, by outcome
    distinct: int  # distinct answers found so far (samples: answers)


@dataclass
class Finished:
    """What one scheduler call ended: jobs with their answers, and trajectories retired (by outcome).
    ``found``: the answers of watched jobs' trajectories retired in this call, in retirement order."""

    jobs: list[FinishedJob] = field(default_factory=list)
    retired: Counter[str] = field(default_factory=Counter)
    found: list[Found] = field(default_factory=list)

    def __iadd__(self, other: Finished) -> Finished:
        self.jobs += other.jobs
        self.retired.update(other.retired)
        self.found += other.found
        return self


@dataclass(frozen=True)
class StepPlan:
    rows: list[PlanRow]
    wake_at: float | None = None  # when rows is empty: earliest time a later schedule() may admit
    finished: Finished = field(default_factory=Finished)  # jobs whose deadline passed in schedule()


@dataclass(frozen=True)
class RowOutcome:
    valid: bool = False  # verified valid (False when the row was not verified)
    halted: bool = False  # the halting head says stop (q_halt > 0)
    unchanged: bool = False  # the candidate is the one this trajectory decoded after its previous step
    key: bytes | None = None  # canonical key of a valid candidate
    score: float = 0.0
    payload: Any = None  # the candidate (opaque here): kept for valid rows and for retiring samples


@dataclass
class SolutionRecord:
    key: bytes
    payload: Any
    score: float
    count: int
    first_step: int
    first_traj: int
