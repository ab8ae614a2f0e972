"""The worker side of Redis mode: serve the engines of a Runtime from the Redis Streams queue.

One worker process per GPU (or per few CPU cores). For every model it serves, the worker reads its stream
in the consumer group (reads sized by the free capacity of the worker, ``worker_max_jobs`` jobs per model),
submits the jobs to the model's Engine and writes each Result back with one atomic script (result pushed
to the request's key, entry XACKed and deleted, only while this worker still owns the entry).

Background loops, all on one asyncio event loop (the engines run in their own threads):
- register: ``gram:worker:{consumer}`` with the models served, refreshed well inside its TTL, so the API
  knows which models are served and /readyz knows workers are alive; also (re)creates the consumer groups
  after a Redis restart that lost them.
- refresh: XCLAIM JUSTID on the entries being run, so no janitor takes them from a live worker however
  long a job runs; aborts jobs whose client went away (``gram:abort:{job}``), whose API is gone (its
  lease ``gram:lease:{job}`` expired: ``GRAM_LEASE_S``) or that another worker took.
- janitor (service/redis/janitor.py): XAUTOCLAIM entries idle for ``claim_idle_s`` (their worker died) into
  the engine's queue at once, busy or not; an entry
  delivered more than ``max_deliveries`` times goes to the dead-letter stream with an error for its client.
On stop() (SIGTERM, see process.py) the worker stops reading, finishes what it is running for a grace
period, and hands back the rest (marked idle, so the next janitor anywhere re-claims them at once).

Redis outages: every loop logs, backs off and retries; finished results are kept and written when Redis
is back (their jobs stay pending meanwhile, so nothing is lost or answered twice).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError, ResponseError

from service import metrics
from service.engine import Engine
from service.errors import QueueFull
from service.jobs import Job, Outcome, Result
from service.redis.events import EventWriter
from service.redis.janitor import reclaim
from service.redis.keys import (
    GROUP,
    abort_key,
    connect,
    dead_letter_key,
    lease_key,
    result_key,
    stream_key,
    work_key,
    worker_key,
)
from service.redis.scripts import COMPLETE_LUA, DEAD_LETTER_LUA, REFRESH_LUA
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class _Running:
    entry: str
    job: Job
    task: asyncio.Task[None]
    leased: bool  # its API renews a lease while it waits (older APIs do not)


class Worker:
    """Serves the engines of ``runtime`` from Redis until ``stop()``."""

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings | None = None,
        *,
        consumer: str | None = None,
        versions: dict[str, str] | None = None,
    ) -> None:
        self.runtime = runtime
        # the Redis knobs; by default the runtime's own settings (what `gram worker` read from GRAM_*)
        self.settings = settings or runtime.settings
        if not self.settings.queue_url:
            raise ValueError("a Worker needs settings.queue_url (GRAM_QUEUE_URL)")
        self.url: str = self.settings.queue_url
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.versions = versions or {}
        self.redis = connect(self.url, self.settings.redis_timeout_s)
        self.blocking = connect(self.url, self.settings.redis_timeout_s, block_s=self.settings.worker_block_s)
        self._complete = self.redis.register_script(COMPLETE_LUA)
        self._refresh = self.redis.register_script(REFRESH_LUA)
        self._dead_letter = self.redis.register_script(DEAD_LETTER_LUA)
        self.running: dict[str, dict[str, _Running]] = {name: {} for name in runtime.engines}
        self._capacity = {name: asyncio.Event() for name in runtime.engines}
        for engine in runtime.engines.values():  # the API admits by deadline, over the whole stream
            engine.deadline_admission = False
        self._stopping = asyncio.Event()
        self.redis_ok = True  # until a command fails (then the first failure is logged)
        self.last_tick = time.monotonic()
        self.completed = 0

    @property
    def engines(self) -> dict[str, Engine]:
        return self.runtime.engines

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def run(self, grace_s: float = 30.0) -> None:
        """Serve until stop(); then drain for up to ``grace_s`` and hand back what is left."""
        loops = [self._loop("register", self._register, self._heartbeat_s),
                 self._loop("refresh", self._refresh_running, self._heartbeat_s),
                 self._loop("janitor", lambda: reclaim(self), self.settings.claim_idle_s / 2)]
        loops += [self._read_loop(name) for name in self.engines]
        tasks = [asyncio.create_task(c) for c in loops]
        log.info("worker %s serving %s from %s", self.consumer, sorted(self.engines), self.url)
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drain(grace_s)
        await self.redis.aclose()
        await self.blocking.aclose()
        log.info("worker %s stopped (%d jobs answered)", self.consumer, self.completed)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def _heartbeat_s(self) -> float:
        return max(0.05, self.settings.claim_idle_s / 3)

    async def _loop(self, name: str, body: Callable[[], Awaitable[None]], every_s: float) -> None:
        backoff = 0.1
        while True:
            _honour_cancel()
            self.last_tick = time.monotonic()
            try:
                await body()
                self._redis_up()
                backoff = 0.1
                await asyncio.sleep(every_s)
            except RedisError as err:
                self._redis_down(name, err)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
            except Exception:  # a bug must not silently end a loop the worker depends on
                log.exception("worker %s: %s failed; retrying", self.consumer, name)
                await asyncio.sleep(1.0)

    def _redis_up(self) -> None:
        if not self.redis_ok:
            log.info("worker %s: Redis at %s is reachable", self.consumer, self.url)
        self.redis_ok = True

    def _redis_down(self, where: str, err: Exception) -> None:
        if self.redis_ok:
            log.warning("worker %s: Redis unavailable (%s: %s); retrying", self.consumer, where, err)
        self.redis_ok = False

    # -- register ----------------------------------------------------------------------------------------
    async def _register(self) -> None:
        models = {}
        for name, engine in self.engines.items():
            card = self.runtime.cards.get(name, {})
            models[name] = {
                "task": engine.task.name, "n_sup": engine.n_sup, "slots": engine.slots,
                "temperature": engine.temperature,
                "batching": str(engine.mode), "version": self.versions.get(name, ""),
                "answer_settings": engine.answer_settings(), "pace": engine.meter.snapshot(), **card,
            }
        info = {"consumer": self.consumer, "host": socket.gethostname(), "pid": os.getpid(), "models": models}
        ttl_ms = int(max(3 * self._heartbeat_s, 1.0) * 1000)
        await self.redis.set(worker_key(self.consumer), json.dumps(info, default=str), px=ttl_ms)
        for name in self.engines:
            await self._ensure_group(name)

    async def _ensure_group(self, model: str) -> None:
        try:
            # id 0: entries added before the group existed (e.g. after Redis lost it) are still delivered
            await self.redis.xgroup_create(stream_key(model), GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    # -- read --------------------------------------------------------------------------------------------
    def _free(self, model: str) -> int:
        return max(0, self.settings.worker_max_jobs - len(self.running[model]))

    async def _read_loop(self, model: str) -> None:
        backoff = 0.1
        while True:
            _honour_cancel()
            if self._free(model) == 0:
                self._capacity[model].clear()
                await self._capacity[model].wait()
                continue
            try:
                await self._read_once(model)
                self._redis_up()
                backoff = 0.1
            except RedisError as err:  # what was read stays pending here and is re-claimed after the outage
                self._redis_down(f"read {model}", err)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
            except Exception:  # likewise; a bug must not end the read loop
                log.exception("worker %s: reading jobs of %s failed", self.consumer, model)
                await asyncio.sleep(1.0)

    async def _read_once(self, model: str) -> None:
        """One XREADGROUP for as many new jobs as there is room for, and start them."""
        try:
            reply = await self.blocking.xreadgroup(
                GROUP, self.consumer, {stream_key(model): ">"}, count=self._free(model),
                block=int(self.settings.worker_block_s * 1000),
            )
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            await self._ensure_group(model)  # Redis restarted without its data, or a new stream
            return
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                await self._accept(model, _text(entry_id), fields, deliveries=1)

    async def _accept(
        self, model: str, entry: str, fields: dict[bytes, bytes] | None, deliveries: int
    ) -> None:
        """Start one delivered entry: run it, answer it at once (expired, invalid) or dead-letter it."""
        raw = (fields or {}).get(b"job")
        try:
            job = Job.from_json(raw) if raw is not None else None
        except (ValueError, TypeError, KeyError) as err:
            log.error("worker %s: entry %s of %s is not a job (%s); acknowledging it", self.consumer, entry,
                      model, err)
            job = None
        if job is None:
            await self.redis.xack(stream_key(model), GROUP, entry)
            await self.redis.xdel(stream_key(model), entry)
            return
        if deliveries > self.settings.max_deliveries:
            await self._to_dead_letter(model, entry, job, deliveries)
            return
        leased = b"lease" in (fields or {})
        if leased and not await self.redis.exists(lease_key(job.id)):
            await self._write(model, entry, Result(job.id, model, job.task, Outcome.aborted,
                                                   error="its API stopped waiting (lease lost)"))
            return
        if job.deadline is not None and time.time() >= job.deadline:
            expired = Result(job.id, model, job.task, Outcome.partial,
                             error="the deadline passed before a worker could start the job")
            await self._write(model, entry, expired)
            return
        # a streamed job's events go to its Redis stream, all of them before its Result
        ttl_ms = int(self.settings.result_ttl_s * 1000)
        writer = EventWriter(self.redis, job.id, ttl_ms) if job.stream else None
        try:
            future = self.engines[model].submit(job, writer.listener if writer is not None else None)
        except QueueFull:  # reads and claims are sized to fit; if not, left pending: re-claimed when idle
            if writer is not None:
                writer.discard()
            log.warning("worker %s: engine %s full; entry %s left to re-claim", self.consumer, model, entry)
            return
        except Exception as err:  # ValueError for a bad job
            if writer is not None:
                writer.discard()
            failed = Result(job.id, model, job.task, Outcome.error, error=f"{type(err).__name__}: {err}")
            await self._write(model, entry, failed)
            return
        task = asyncio.create_task(self._finish(model, entry, job, asyncio.wrap_future(future), writer))
        self.running[model][entry] = _Running(entry, job, task, leased)

    async def _finish(
        self, model: str, entry: str, job: Job, result: Awaitable[Result], writer: EventWriter | None = None
    ) -> None:
        try:
            answer = await result
            if writer is not None:
                await writer.close(drop=answer.outcome == Outcome.aborted)
            backoff = 0.1
            while True:  # the answer must reach Redis: keep it until Redis takes it
                try:
                    await self._write(model, entry, answer)
                    break
                except RedisError as err:
                    self._redis_down(f"write {job.id}", err)
                    await asyncio.sleep(backoff)
                    backoff = min(2.0, backoff * 2)
        finally:
            if writer is not None:
                writer.discard()
            self.running[model].pop(entry, None)
            self._capacity[model].set()

    async def _write(self, model: str, entry: str, result: Result) -> bool:
        written = await self._complete(
            keys=[stream_key(model), result_key(result.job_id), work_key(model)],
            args=[GROUP, entry, self.consumer, result.to_json(), int(self.settings.result_ttl_s * 1000)],
        )
        if written:
            self.completed += 1
        else:
            log.info("worker %s: job %s was taken over by another worker; not answering it",
                     self.consumer, result.job_id)
        return bool(written)

    async def _to_dead_letter(self, model: str, entry: str, job: Job, deliveries: int) -> None:
        message = (
            f"job {job.id} was started {deliveries - 1} times and no worker finished it (each one died while "
            f"running it); it was moved to the dead-letter stream {dead_letter_key(model)}"
        )
        log.error("worker %s: %s", self.consumer, message)
        failed = Result(job.id, model, job.task, Outcome.error, error=message)
        await self._dead_letter(
            keys=[stream_key(model), dead_letter_key(model), result_key(job.id), work_key(model)],
            args=[GROUP, entry, self.consumer, job.to_json(), deliveries, failed.to_json(),
                  int(self.settings.result_ttl_s * 1000), self.settings.dead_letter_maxlen],
        )
        metrics.JOBS.labels(task=job.task, outcome=Outcome.error.value).inc()

    # -- refresh: keep running entries ours; honour client aborts -----------------------------------------
    async def _refresh_running(self) -> None:
        for model, running in self.running.items():
            if not running:
                continue
            entries = list(running.values())
            lost = await self._refresh(keys=[stream_key(model)],
                                       args=[GROUP, self.consumer, *[r.entry for r in entries]])
            gone = {_text(e) for e in lost}
            ids, n = [r.job.id for r in entries], len(entries)
            flags = await self.redis.mget([abort_key(i) for i in ids] + [lease_key(i) for i in ids])
            for run, flag, lease in zip(entries, flags[:n], flags[n:], strict=True):
                if run.entry in gone or flag is not None or (run.leased and lease is None):
                    self.engines[model].abort(run.job.id)

    # -- shutdown --------------------------------------------------------------------------------------------
    async def _drain(self, grace_s: float) -> None:
        tasks = [r.task for running in self.running.values() for r in running.values()]
        if tasks:
            log.info("worker %s: finishing %d running jobs (up to %.0f s)", self.consumer, len(tasks),
                     grace_s)
            await asyncio.wait(tasks, timeout=grace_s)
        left = {model: list(running.values()) for model, running in self.running.items() if running}
        for runs in left.values():
            for run in runs:
                run.task.cancel()
        try:
            for model, runs in left.items():
                # Marked idle past the claim timeout: the next janitor anywhere takes them (no delivery
                # counted, JUSTID), instead of waiting for this worker's heartbeat to age.
                await self.redis.xclaim(stream_key(model), GROUP, self.consumer, 0, [r.entry for r in runs],
                                        idle=int(self.settings.claim_idle_s * 1000) + 1, justid=True)
            await self.redis.delete(worker_key(self.consumer))
        except RedisError as err:
            log.warning("worker %s: could not hand back unfinished jobs (%s); they are re-claimed after "
                        "%.0f s", self.consumer, err, self.settings.claim_idle_s)

    def healthy(self) -> bool:
        """Liveness: the event loop still turns (a wedged worker should be restarted)."""
        return time.monotonic() - self.last_tick < max(30.0, 10 * self._heartbeat_s)


def _honour_cancel() -> None:
    """Raise CancelledError when this task was cancelled: on Python 3.11, asyncio.wait_for inside redis-py
    can swallow a cancellation that lands while a command is being sent, and these loops never end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
