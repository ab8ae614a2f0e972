"""Idempotency-Key in Redis mode (see service/idempotency.py for the contract).

``gram:idem:{sha256(key)}`` holds the first attempt's record (request fingerprint, job id, seed, when to
give up waiting) from the moment it is queued, and its Result once its API has it; it lives
``GRAM_RESULT_TTL_S``. A retry, on any API replica, with the same key:
- finds the Result in the record: answered with it (the job does not run again);
- finds no Result yet: attaches to the job. It waits on the job's result list like the first attempt
  (``BLPOP gram:result:{job}``, in short blocks, reading the record between them); whichever waiter pops the
  result puts it back for the other. This is how a retry after a 503 (a Redis outage longer than
  ``GRAM_OUTAGE_GRACE_S`` while the job ran on) gets the job's real answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from service.errors import LostWhileWaiting
from service.idempotency import Attempt, forgettable, key_reused
from service.jobs import Job, Outcome, Result
from service.redis.keys import result_key

if TYPE_CHECKING:
    from service.redis.queue import RedisJobQueue

ATTACH_BLOCK_S = 0.2  # an attached retry reads the record this often


def idem_key(key: str) -> str:
    return "gram:idem:" + hashlib.sha256(key.encode()).hexdigest()


class RedisKeys:
    def __init__(self, queue: RedisJobQueue) -> None:
        self.queue = queue
        self.ttl_ms = int(queue.settings.result_ttl_s * 1000)

    async def run(self, key: str, fingerprint: str, job: Job) -> tuple[Attempt, Result]:
        queue, name = self.queue, idem_key(key)
        settings = queue.settings
        give_up = (job.deadline if job.deadline is not None else time.time() + settings.max_timeout_ms / 1000)
        record = {"fp": fingerprint, "job": job.id, "seed": job.seed,
                  "give_up": give_up + settings.deadline_grace_s}
        while not await queue._guard(queue.redis.set(name, json.dumps(record), nx=True, px=self.ttl_ms)):
            raw = await queue._guard(queue.redis.get(name))
            if raw is None:
                continue  # expired between the two commands
            known: dict[str, Any] = json.loads(raw)
            if known["fp"] != fingerprint:
                raise key_reused(key)
            attempt = Attempt(known["job"], known["seed"])
            if known.get("result"):
                return attempt, Result.from_json(known["result"])
            return attempt, await self._attach(name, known, job)
        attempt = Attempt(job.id, job.seed)
        try:
            result = await queue.submit(job)
        except LostWhileWaiting:
            raise  # queued and maybe running on: a retry attaches to it
        except BaseException:  # refused before it was queued, or withdrawn: a retry runs anew
            await asyncio.shield(self._forget(name))
            raise
        await self._keep(name, record, result)
        return attempt, result

    async def _attach(self, name: str, known: dict[str, Any], job: Job) -> Result:
        queue, job_id = self.queue, known["job"]
        while time.time() < known["give_up"]:
            try:
                await queue.renew(job_id)  # attached: its client waits again
                popped = await queue.blocking.blpop([result_key(job_id)], timeout=ATTACH_BLOCK_S)
                if popped is not None:  # put back for the first attempt, should it still be waiting
                    async with queue.redis.pipeline(transaction=True) as pipe:
                        pipe.rpush(result_key(job_id), popped[1]).pexpire(result_key(job_id), self.ttl_ms)
                        await pipe.execute()
                    result = Result.from_json(popped[1])
                    await self._keep(name, known, result)
                    return result
                raw = await queue.redis.get(name)
            except RedisError:
                await asyncio.sleep(ATTACH_BLOCK_S)  # an outage: the record and the result outlive it
                continue
            stored = json.loads(raw) if raw is not None else {}
            if stored.get("result"):
                return Result.from_json(stored["result"])
        return Result(job_id, job.model, job.task, Outcome.partial,
                      error="no worker answered before the deadline")

    async def _keep(self, name: str, record: dict[str, Any], result: Result) -> None:
        if forgettable(result):
            await self._forget(name)
            return
        try:
            await self.queue.redis.set(name, json.dumps({**record, "result": result.to_json()}), xx=True,
                                       keepttl=True)
        except RedisError:  # the answer is good; a retry attaches to the job's result list instead
            pass

    async def _forget(self, name: str) -> None:
        try:
            await self.queue.redis.delete(name)
        except RedisError:
            pass
