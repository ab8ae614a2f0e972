"""The embedded JobQueue: the engines of this process (a Runtime it owns or was lent) serve the jobs."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from service.errors import EngineStopped, NoModel
from service.idempotency import LocalKeys
from service.jobs import Job, Result
from service.queues import Events, ModelInfo, QueueStatus
from service.runtime import Runtime
from service.settings import Settings


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
    """``InProcessQueue(settings)`` loads the checkpoints of ``settings`` itself (in ``start``) and stops
    their engines on ``close``; ``InProcessQueue.over(runtime)`` serves a runtime the caller built and
    keeps (tests, models already in memory), so ``close`` leaves it running."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.owns_runtime = runtime is None
        self.runtime = runtime or Runtime(settings)
        self.keys = LocalKeys(self.submit, settings.result_ttl_s)

    @classmethod
    def over(cls, runtime: Runtime) -> InProcessQueue:
        return cls(runtime.settings, runtime)

    def start(self) -> None:
        if not self.runtime.loaded.is_set():
            # in the background, so /healthz answers while the checkpoints load and warm up
            threading.Thread(target=self.runtime.load, name="load-models", daemon=True).start()

    async def submit(self, job: Job, events: Events | None = None) -> Result:
        engine = self.runtime.engines.get(job.model) or self.runtime.engine_for_task(job.task)
        if engine is None:
            raise NoModel(f"no loaded model serves task {job.task!r}")
        loop = asyncio.get_running_loop()
        listener = None
        if events is not None:
            def listener(kind: str, data: dict[str, Any]) -> None:  # on the engine thread
                if not loop.is_closed():
                    loop.call_soon_threadsafe(events, kind, data)
        try:
            future = engine.submit(job, listener)
        except EngineStopped as err:
            raise NoModel(str(err)) from None
        if events is not None:
            events("queued", {})
        # One loop callback from the engine thread straight to the awaiting task (asyncio.shield over
        # asyncio.wrap_future took three loop iterations). Cancelling the wait cancels only this asyncio
        # future, never the engine's: the engine still answers it. A streamed job's events were queued on
        # the loop before its Result, so they reach ``events`` before submit returns.
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

    def idempotency(self) -> LocalKeys:
        return self.keys

    def status(self) -> QueueStatus:
        runtime = self.runtime
        if runtime.ready:
            return QueueStatus(ready=True, models=sorted(runtime.engines))
        return QueueStatus(ready=False, error=runtime.error is not None, detail=runtime.error,
                           progress=runtime.progress())

    async def models(self) -> list[ModelInfo]:
        return self.runtime.model_infos()

    async def close(self) -> None:
        if self.owns_runtime:
            self.runtime.stop()
