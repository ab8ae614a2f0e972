"""The errors a job can meet on its way to an engine, in one place with no torch import, so the API and the
Redis queue can raise and catch them without loading the model stack. The API maps them to HTTP:
QueueFull -> 429 (with Retry-After), NoModel (and QueueUnavailable) -> 503. A bad request is a
``model.tasks.base.TaskInputError`` (a ValueError) -> 422.
"""

from __future__ import annotations


class QueueFull(Exception):
    """The model already holds ``max_queue`` unfinished jobs."""

    kind = "queue_full"  # the 429's error type

    def __init__(self, model: str, retry_after_s: float) -> None:
        super().__init__(f"the queue of model {model!r} is full; retry in {retry_after_s:.0f} s")
        self.model = model
        self.retry_after_s = retry_after_s


class NoModel(Exception):
    """No loaded model serves the job's task (or its engine is not running)."""


class EngineStopped(RuntimeError):
    """submit() on an engine that is not running (not started yet, or stopped)."""


class QueueUnavailable(NoModel):
    """Redis cannot be reached, or no live worker serves the job's task: the API answers 503 with this
    message (a NoModel, so the app's 503 path handles it)."""


class LostWhileWaiting(QueueUnavailable):
    """Redis went away while a queued job was waiting for its result: the job may still complete, and a
    retry with the same Idempotency-Key gets its answer."""
