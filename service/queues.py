"""The JobQueue seam: how a Job reaches an engine and its Result comes back to the API.

The API only calls ``submit`` (await the Result; raises ``QueueFull`` for a 429, ``NoModel`` for a 503)
and cancels the awaiting task when the client goes away, which must abort the job. Two implementations
share the Job/Result types (service/jobs.py):
- ``InProcessQueue`` (here, the embedded default): hands the job to the Engine of this process.
- the Redis Streams queue (service/redis_queue.py): API replicas XADD, ``gram worker`` processes run the
  engines and write Results back.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from service.engine import EngineStopped, QueueFull
from service.jobs import Job, Result
from service.runtime import Runtime

__all__ = ["JobQueue", "InProcessQueue", "NoModel", "QueueFull"]


class NoModel(Exception):
    """No loaded model serves the job's task."""


class JobQueue(Protocol):
    async def submit(self, job: Job) -> Result:
        """The job's Result. Raises QueueFull (over the bound), NoModel, ValueError (a bad job).
        Cancelling the awaiting task aborts the job."""
        ...

    def ready(self) -> bool:
        """Whether jobs can be served now (models loaded and warmed up / workers present)."""
        ...

    async def close(self) -> None: ...


class InProcessQueue:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def submit(self, job: Job) -> Result:
        engine = self.runtime.engines.get(job.model) or self.runtime.engine_for_task(job.task)
        if engine is None:
            raise NoModel(f"no loaded model serves task {job.task!r}")
        try:
            future = engine.submit(job)
        except EngineStopped as err:
            raise NoModel(str(err)) from None
        try:
            # shield: cancelling the wait must not cancel the engine's future (the engine answers it)
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            engine.abort(job.id)
            raise

    def ready(self) -> bool:
        return self.runtime.ready

    async def close(self) -> None:
        self.runtime.stop()
