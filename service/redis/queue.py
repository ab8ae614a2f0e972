"""The Redis Streams job queue: API replicas enqueue, ``gram worker`` processes run the engines.

Selected by ``GRAM_QUEUE_URL=redis://host:port/db``. The API side lives here (``RedisJobQueue``); the
worker side is service/redis/worker.py. Both share the key layout (keys.py) and the Lua scripts (scripts.py).

Data path for one job (model ``m``, job id ``j``):
- API: ``XADD gram:jobs:{m}`` (atomically refused with QueueFull when the stream already holds
  ``max_queue`` unfinished jobs), then ``BLPOP gram:result:{j}`` until the job's deadline (plus a grace for
  the last supervision step and the network). No polling: BLPOP returns the moment the result lands.
- Worker: ``XREADGROUP`` in the consumer group ``gram-engines`` (reads sized by its free capacity), runs the
  job in its engine, then one script pushes the result to ``gram:result:{j}`` (with a TTL), XACKs and
  XDELs the entry. The script writes only while this worker still owns the entry, so a job re-claimed by
  another worker is answered exactly once.
- A worker refreshes the idle time of the entries it is running (XCLAIM JUSTID); a worker that died stops
  refreshing, and any other worker's janitor re-claims its entries with XAUTOCLAIM once they have been idle
  ``claim_idle_s``. An entry delivered more than ``max_deliveries`` times goes to ``gram:dead:{m}`` and the
  client gets an error result naming it (a job that kills every worker that runs it must not cycle forever).
- Expired jobs (deadline passed before a worker read them) are answered ``partial`` without being run.
- Because workers XDEL finished entries, ``XLEN gram:jobs:{m}`` is exactly the jobs waiting or running.

Redis down: every command fails within ``redis_timeout_s``; the API answers 503 (QueueUnavailable) and
/readyz says why. redis-py reconnects on the next command, so the API recovers by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from service import metrics
from service.admission import DeadlineUnmeetable, Pace, combined
from service.errors import LostWhileWaiting, QueueFull, QueueUnavailable
from service.jobs import Job, Outcome, Result
from service.queues import Events, ModelInfo, QueueStatus
from service.redis.cache import ResultCache
from service.redis.events import events_key, relay
from service.redis.keys import (
    GROUP,
    WORKER_KEY_PATTERN,
    abort_key,
    connect,
    lease_key,
    result_key,
    stream_key,
    work_key,
)
from service.redis.scripts import CANCEL_LUA, SUBMIT_LUA
from service.settings import Settings

if TYPE_CHECKING:
    from service.redis.idempotency import RedisKeys

log = logging.getLogger(__name__)

# Each BLPOP blocks at most this long, so a waiting request notices an outage or a cancellation promptly;
# a result still arrives the moment it is pushed.
BLOCK_CHUNK_S = 2.0


class RedisJobQueue:
    """The API side of Redis mode (the JobQueue of service/queues.py): ``await submit(job)`` enqueues and
    waits for the job's Result. Loads no model: the models are those the live workers registered
    (``gram:worker:*``), and a job is routed to the model named in it or else to one serving its task.

    A background monitor (started on first use) pings Redis and reads the worker registry twice a second,
    so the synchronous ``ready()`` and ``not_ready`` (for /readyz) are always current."""

    MONITOR_EVERY_S = 0.5

    def __init__(self, settings: Settings) -> None:
        if not settings.queue_url:
            raise ValueError("RedisJobQueue needs settings.queue_url (GRAM_QUEUE_URL)")
        self.settings = settings
        self.url = settings.queue_url
        self.redis = connect(self.url, self.settings.redis_timeout_s)
        # BLPOP holds its connection while it blocks: its own pool, with a read timeout past the block.
        self.blocking = connect(self.url, self.settings.redis_timeout_s, block_s=BLOCK_CHUNK_S)
        # the cache in a Redis of its own when GRAM_CACHE_URL names one, else beside the jobs
        cache_url = settings.cache_url
        self.cache_redis = connect(cache_url, settings.redis_timeout_s) if cache_url else None
        self.cache = ResultCache(self.cache_redis or self.redis, settings.cache_ttl_s,
                                 settings.cache_max_entry_bytes, settings.cache_max_bytes)
        self._submit = self.redis.register_script(SUBMIT_LUA)
        self._cancel = self.redis.register_script(CANCEL_LUA)
        self._workers: list[dict[str, Any]] = []
        self._workers_at = -1e9
        self._ready = False
        self.not_ready: str | None = "checking Redis and the workers"
        self.served: list[str] = []  # models of the live workers, as of the monitor's last look
        self._monitor: asyncio.Task[None] | None = None
        self._keys: RedisKeys | None = None
        self._lease_ms = int(settings.lease_s * 1000)

    # -- the JobQueue protocol -----------------------------------------------------------------------------
    async def submit(self, job: Job, events: Events | None = None) -> Result:
        """Run ``job`` on some worker and return its Result (``cached`` True when the result cache had it).

        Raises QueueFull (429) when the model's stream is at its bound, QueueUnavailable (503) when Redis
        is unreachable or no live worker serves the task, ValueError (422) for a model that does not serve
        the job's task. Cancelling the awaiting task (the client went away) withdraws the job: deleted if
        no worker has read it yet, else its worker aborts it. Only requests whose client chose the seed
        (``job.seeded``) use the result cache: a drawn seed would never repeat. ``events``: the job is
        streamed; its worker's events come through its Redis stream (service/redis/events.py)."""
        self._start_monitor()
        if events is not None:
            job = replace(job, stream=True)
        job, version = await self._route(job)
        cacheable = job.seeded and version is not None
        if job.seeded and version is None:
            metrics.CACHE_BYPASSED.labels(model=job.model).inc()
        if cacheable:
            cached = await self._guard(self.cache.get(job, version))
            if cached is not None:
                return cached
        budget, pace, allowed = await self._work_allowed(job)
        keys = [stream_key(job.model), work_key(job.model), lease_key(job.id)]
        args = [self.settings.max_queue, job.to_json(), budget, allowed, self._lease_ms]
        entry = await self._guard(self._submit(keys=keys, args=args))
        if entry is None:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise QueueFull(job.model, retry_after_s=1.0)
        if isinstance(entry, int) and pace is not None and job.deadline is not None:
            metrics.REJECTED.labels(reason="deadline").inc()
            raise DeadlineUnmeetable(job.model, pace.seconds(entry + budget), job.deadline - time.time())
        relaying: asyncio.Task[None] | None = None
        answered = asyncio.Event()
        if events is not None:
            events("queued", {})
            relaying = asyncio.create_task(relay(self.blocking, job.id, events, answered))
        try:
            result = await self._wait(job)
            if relaying is not None:
                answered.set()
                await relaying  # the worker wrote every event before the Result: nothing is left behind
        except asyncio.CancelledError:
            await asyncio.shield(self._withdraw(job, entry))
            raise
        finally:
            if relaying is not None:
                relaying.cancel()
                await asyncio.shield(self._forget_events(job))
        if cacheable and result.outcome == Outcome.complete:
            await self._remember(job, result, version)
        return result

    def start(self) -> None:
        self._start_monitor()

    def idempotency(self) -> RedisKeys:
        if self._keys is None:
            from service.redis.idempotency import RedisKeys

            self._keys = RedisKeys(self)
        return self._keys

    def ready(self) -> bool:
        """Redis answers and at least one worker is alive (as of the monitor's last look, <= 0.5 s ago)."""
        self._start_monitor()
        return self._ready

    def status(self) -> QueueStatus:
        if self.ready():
            return QueueStatus(ready=True, models=list(self.served))
        return QueueStatus(ready=False, detail=self.not_ready)

    async def models(self) -> list[ModelInfo]:
        """Each served model as its worker registered it (GET /models; the intake's routing)."""
        fields = ("task", "slots", "batching", "n_sup", "temperature", "parameters", "config", "card")
        infos = []
        for name, info in sorted((await self.served_models()).items()):
            stall = info.get("answer_settings", {}).get("stall_patience")
            infos.append(ModelInfo(name=name, ready=True, stall_patience=stall,
                                   **{k: info[k] for k in fields if k in info}))
        return infos

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        await self.redis.aclose()
        await self.blocking.aclose()
        if self.cache_redis is not None:
            await self.cache_redis.aclose()

    # -- internals ------------------------------------------------------------------------------------------
    async def _route(self, job: Job) -> tuple[Job, str | None]:
        """Check that a live worker serves the job's model (the intake chose it from ``models()``; a worker
        may have gone since), and return that model's version (for the cache key).

        The version is None when the live workers serving the model disagree on it (a rolling update, or
        replicas started with different settings): any of them may answer, so no one key names the
        answer, and the job bypasses the result cache."""
        served = await self.served_models()
        by_task = sorted(name for name, info in served.items() if info.get("task") == job.task)
        if job.model in served:
            if served[job.model].get("task") != job.task:
                raise ValueError(f"model {job.model!r} does not serve task {job.task!r}; models serving it: "
                                 f"{by_task}")
        elif not by_task:
            raise QueueUnavailable(f"no gram worker is serving task {job.task!r} yet; retry shortly")
        else:
            raise ValueError(f"model {job.model!r} is not served now; models serving task {job.task!r}: "
                             f"{by_task}")
        return job, await self._served_version(job.model)

    async def _work_allowed(self, job: Job) -> tuple[int, Pace | None, int]:
        """The job's budget in slot-steps, the pace of the workers serving its model (service/admission.py)
        and the budget the stream may hold with this job for it to meet its deadline (-1: no limit)."""
        infos = [w["models"][job.model] for w in await self._guard(self.live_workers())
                 if job.model in w.get("models", {})]
        n_sup = int(infos[0].get("n_sup", 1)) if infos else 1
        budget = job.num_trajectories * (job.max_steps or n_sup)
        pace = combined([info.get("pace") for info in infos])
        if pace is None or job.deadline is None or not self.settings.deadline_admission:
            return budget, pace, -1
        return budget, pace, int(max(0.0, job.deadline - time.time()) * pace.rate / pace.ratio)

    async def _remember(self, job: Job, result: Result, version: str) -> None:
        """Cache a complete seeded answer. A worker with other settings may have joined while the job ran
        and answered it, so only when the workers still agree on the version the job was routed under."""
        try:
            if await self._served_version(job.model) == version:
                await self.cache.put(job, result, version)
        except (RedisError, QueueUnavailable) as err:  # the answer is good; only the cache entry is lost
            log.warning("result cache write for job %s failed: %s", job.id, err)

    async def _served_version(self, model: str) -> str | None:
        """The one cache version all live workers serving ``model`` register, or None when they differ."""
        versions = {_cache_version(w["models"][model]) for w in await self._guard(self.live_workers())
                    if model in w.get("models", {})}
        return versions.pop() if len(versions) == 1 else None

    async def _wait(self, job: Job) -> Result:
        if job.deadline is not None:
            give_up = job.deadline + self.settings.deadline_grace_s
        else:
            give_up = time.time() + self.settings.max_timeout_ms / 1000.0 + self.settings.deadline_grace_s
        outage_since: float | None = None
        me = asyncio.current_task()
        while True:
            remaining = give_up - time.time()
            if remaining <= 0:
                return Result(job.id, job.model, job.task, Outcome.partial,
                              error="no worker answered before the deadline")
            try:
                # BLPOP's timeout 0 means forever: never pass less than 10 ms. Each block renews the lease
                # (the worker aborts a job whose API is gone), so blocks are well inside it.
                block = max(0.01, min(remaining, BLOCK_CHUNK_S, self.settings.lease_s / 3))
                await self.renew(job.id)
                popped = await self.blocking.blpop([result_key(job.id)], timeout=block)
            except RedisError as err:
                now = time.monotonic()
                outage_since = outage_since or now
                if now - outage_since >= self.settings.outage_grace_s:
                    raise LostWhileWaiting(
                        f"lost the job queue (Redis) while waiting for job {job.id}: {err}"
                    ) from err
                await asyncio.sleep(0.1)  # only while Redis is unreachable: give it a moment to return
                continue
            outage_since = None
            if popped is not None:
                return Result.from_json(popped[1])
            if me is not None and me.cancelling():
                # On Python 3.11, asyncio.wait_for inside redis-py can swallow a cancellation that lands
                # while a command is being sent; honour it here, at the latest one BLPOP block later.
                raise asyncio.CancelledError

    async def _forget_events(self, job: Job) -> None:
        try:
            await self.redis.delete(events_key(job.id))
        except RedisError as err:  # it expires with GRAM_RESULT_TTL_S anyway
            log.warning("could not delete the event stream of job %s: %s", job.id, err)

    async def renew(self, job_id: str) -> None:
        """Renew a job's lease: its API (or an attached retry) is still waiting for it."""
        await self.redis.set(lease_key(job_id), 1, px=self._lease_ms)

    async def _withdraw(self, job: Job, entry: bytes) -> None:
        try:
            await self._cancel(keys=[stream_key(job.model), abort_key(job.id), work_key(job.model)],
                               args=[GROUP, entry, int(self.settings.result_ttl_s * 1000)])
        except RedisError as err:
            log.warning("could not withdraw job %s: %s", job.id, err)

    async def _guard(self, awaitable: Any) -> Any:
        """Await a Redis command; an unreachable Redis becomes QueueUnavailable (503) at once."""
        try:
            return await awaitable
        except RedisError as err:
            self._down(err)
            raise QueueUnavailable(f"the job queue (Redis) is unavailable: {err}") from err

    def _down(self, err: Exception) -> None:
        self._ready = False
        self.not_ready = f"Redis at {self.url} is unreachable: {type(err).__name__}: {err}"

    def _start_monitor(self) -> None:
        if self._monitor is None or self._monitor.done():
            try:
                self._monitor = asyncio.get_running_loop().create_task(self._watch())
            except RuntimeError:  # no event loop in this thread: the next async caller starts it
                pass

    async def _watch(self) -> None:
        while True:
            try:
                await self.redis.ping()
                workers = await self.live_workers(max_age_s=0.0)
                self.served = sorted({m for w in workers for m in w.get("models", {})})
                self._ready = bool(workers)
                self.not_ready = None if workers else "Redis is up but no gram worker is alive"
            except RedisError as err:
                self._down(err)
            await asyncio.sleep(self.MONITOR_EVERY_S)

    # -- workers --------------------------------------------------------------------------------------------
    async def live_workers(self, max_age_s: float = 1.0) -> list[dict[str, Any]]:
        """Registrations of the workers alive now (each refreshes its key well inside the key's TTL)."""
        if time.monotonic() - self._workers_at < max_age_s:
            return self._workers
        keys = [k async for k in self.redis.scan_iter(match=WORKER_KEY_PATTERN, count=100)]
        values = await self.redis.mget(keys) if keys else []
        self._workers = [json.loads(v) for v in values if v is not None]
        self._workers_at = time.monotonic()
        return self._workers

    async def served_models(self) -> dict[str, dict[str, Any]]:
        """Model name -> its registration (task, n_sup, slots, version, card) from a live worker."""
        workers = await self._guard(self.live_workers())
        return {name: info for w in workers for name, info in w.get("models", {}).items()}

    async def depth(self, model: str) -> int:
        """Jobs waiting or running for ``model`` (workers delete finished entries)."""
        return int(await self._guard(self.redis.xlen(stream_key(model))))


def _cache_version(info: dict[str, Any]) -> str:
    """A model registration's part of the result-cache key: the weights' digest and the worker's
    answer-affecting settings (a job's max_steps / stall_patience left unset take that worker's defaults)."""
    settings = json.dumps(info.get("answer_settings", {}), sort_keys=True, separators=(",", ":"))
    return f"{info.get('version', '')}|{settings}"
