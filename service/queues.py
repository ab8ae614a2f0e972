"""The JobQueue seam: how a Job reaches an engine and its Result comes back to the API.

The API (service/app.py) depends on this protocol alone. Two implementations share the Job/Result types
(service/jobs.py):
- ``InProcessQueue`` (service/inprocess.py, the embedded default): owns the Runtime of this process and
  hands each job to its Engine.
- ``RedisJobQueue`` (service/redis/queue.py): API replicas XADD, ``gram worker`` processes run the engines
  and write Results back.

No torch import here or in the errors (service/errors.py): the Redis side never loads the model stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from service.jobs import Job, Result

# A streamed job's events: ("queued", {}) once the queue took it, then the engine's (service/watch.py)
Events = Callable[[str, dict[str, Any]], None]

if TYPE_CHECKING:
    from service.idempotency import IdempotencyKeys


@dataclass
class ModelInfo:
    """One served model as the API sees it: what GET /models reports, and the defaults a job that leaves
    them unset takes (n_sup -> max_steps, temperature, stall_patience)."""

    name: str
    task: str
    slots: int = 0
    batching: str = ""
    n_sup: int = 0
    ready: bool = True
    temperature: float = 1.0
    stall_patience: int | None = None  # None: the API's own GRAM_STALL_PATIENCE (older registrations)
    parameters: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    markdown: str | None = None


@dataclass
class QueueStatus:
    """What /readyz reports: ready, or why not."""

    ready: bool
    models: list[str] = field(default_factory=list)  # the models served, when ready
    error: bool = False  # not ready because something failed (not merely still loading)
    detail: str | None = None  # why it is not ready
    # while loading: each model's start-up stage, e.g. {"name": "sudoku", "stage": "warming", "elapsed_s": 3}
    progress: list[dict[str, Any]] = field(default_factory=list)


class JobQueue(Protocol):
    def start(self) -> None:
        """Begin loading models or watching workers; returns at once (the app's startup)."""

    async def submit(self, job: Job, events: Events | None = None) -> Result:
        """The job's Result. Raises QueueFull (over the bound), NoModel (503). Cancelling the awaiting
        task aborts the job. ``events``: called on the event loop with ("queued", {}) once the job is
        queued, then with the engine's events for it (service/watch.py), all before submit returns."""
        ...

    def status(self) -> QueueStatus:
        """Whether jobs can be served now (models loaded and warmed up / workers present), else why not."""
        ...

    async def models(self) -> list[ModelInfo]:
        """The models served now, in routing order (the first serving a task answers it by default)."""
        ...

    def idempotency(self) -> IdempotencyKeys:
        """Where Idempotency-Keys are kept (service/idempotency.py): one store per queue."""
        ...

    async def close(self) -> None:
        """Release what the queue owns (its runtime's engines, its Redis connections)."""

