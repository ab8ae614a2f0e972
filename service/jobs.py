"""The unit of work and its answer: ``Job`` in, ``Result`` out. Plain dataclasses that round-trip through
JSON, so the same types travel through the in-process queue and through Redis Streams.

A Job carries everything an engine needs and nothing process-local: the input tokens ``x`` (``[L][G_in]``
ints, as ``Task.parse`` produced them), the instance ``meta`` (JSON values, for ``Task.format``), the
resolved ``seed`` (the API draws one when the client sent null, so a Job is always reproducible) and an
absolute ``deadline`` in Unix seconds (``time.time()``), which stays meaningful across processes.

    job = Job.new(model="sudoku", task="sudoku", x=tokens, meta=instance.meta, seed=7, num_trajectories=20)
    payload = job.to_json()                 # -> str, e.g. for XADD
    same = Job.from_json(payload)           # on the worker
    result = Result.from_json(result_json)  # on the API replica
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    complete = "complete"  # max_solutions found, or every trajectory of the budget retired
    partial = "partial"  # the deadline passed first: what was found so far
    aborted = "aborted"  # the client went away (or the job was cancelled)
    error = "error"  # the engine failed on this job (message in Result.error)


@dataclass
class Job:
    id: str
    model: str
    task: str
    x: list[list[int]]
    meta: dict[str, Any] = field(default_factory=dict)
    num_trajectories: int = 20
    max_solutions: int = 10
    max_steps: int | None = None  # None: the model's n_sup
    # continuous mode: retire a trajectory whose invalid candidate stayed the same this many steps in a
    # row (0: never); None: the engine's GRAM_STALL_PATIENCE
    stall_patience: int | None = None
    seed: int = 0
    temperature: float | None = None  # the prior's temperature; None: the engine's default for its model
    deadline: float | None = None  # Unix seconds; None: no deadline
    submitted_at: float = field(default_factory=time.time)
    seeded: bool = False  # the client chose the seed: the result cache may answer it (service/redis/cache.py)
    stream: bool = False  # the client streams it: the worker relays its events (service/redis/events.py)

    @classmethod
    def new(cls, **fields: Any) -> Job:
        return cls(id=uuid.uuid4().hex, **fields)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.stream:  # an unstreamed job stays readable by workers that predate streaming
            del data["stream"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        # sampling is the task's property now (Task.unconditional); a job from an older API may say "kind"
        data.pop("kind", None)
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        return cls.from_dict(json.loads(text))


@dataclass
class Solution:
    solution: Any  # the task's JSON format (Task.format)
    score: float  # decoder log-likelihood of the answer tokens (sum of token_logprob over the answer mask)
    count: int  # trajectories that reached this solution
    first_step: int  # supervision steps the first trajectory to reach it had run (1-based)


@dataclass
class Result:
    job_id: str
    model: str
    task: str
    outcome: Outcome
    solutions: list[Solution] = field(default_factory=list)
    num_trajectories: int = 0  # trajectories whose outcome the answer is made of
    steps: int = 0  # supervision steps those trajectories ran, summed
    elapsed_ms: float = 0.0  # submit -> result
    queue_ms: float = 0.0  # submit -> first trajectory admitted
    error: str | None = None
    cached: bool = False  # answered from the Redis result cache (service/redis/cache.py)

    @property
    def complete(self) -> bool:
        return self.outcome == Outcome.complete

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        data = dict(data)
        data["outcome"] = Outcome(data["outcome"])
        data["solutions"] = [Solution(**s) for s in data.get("solutions", [])]
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Result:
        return cls.from_dict(json.loads(text))
