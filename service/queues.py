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
from concurrent.futures import Future
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


def _settle(waiter: asyncio.Future[Result], done: Future[Result]) -> None:
    """Copy the engine's outcome onto the awaiting asyncio future (on the event loop's thread)."""
    if waiter.done():  # the wait was cancelled: the client went away
        return
    error = done.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


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
        # One loop callback from the engine thread straight to the awaiting task (asyncio.shield over
        # asyncio.wrap_future took three loop iterations). Cancelling the wait cancels only this asyncio
        # future, never the engine's: the engine still answers it.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Result] = loop.create_future()

        def hand_back(done: Future[Result]) -> None:  # runs on the engine thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, waiter, done)

        future.add_done_callback(hand_back)
        try:
            return await waiter
        except asyncio.CancelledError:
            engine.abort(job.id)
            raise

    def ready(self) -> bool:
        return self.runtime.ready

    async def close(self) -> None:
        self.runtime.stop()
