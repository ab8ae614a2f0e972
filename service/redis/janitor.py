"""The janitor of a Redis-mode worker (service/redis/worker.py): re-claim what dead workers left.

Every ``claim_idle_s / 2`` each worker takes every entry idle past ``claim_idle_s`` (its worker died: live
workers refresh theirs) into its engine's queue at once, even when all its slots are busy: there the job
waits its turn like any other, instead of waiting in Redis for some worker to become idle (which, under
load, may take longer than its deadline). Bounded by the room left in the engine's own queue
(``max_queue``); the pending list is scanned to its end (XAUTOCLAIM's cursor).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from service.redis.keys import GROUP, stream_key

if TYPE_CHECKING:
    from service.redis.worker import Worker

log = logging.getLogger(__name__)


async def reclaim(worker: Worker) -> None:
    idle_ms = int(worker.settings.claim_idle_s * 1000)
    await worker._refresh_running()  # our own running entries are never idle when we look
    for model, engine in worker.engines.items():
        room, cursor = engine.max_queue - engine.in_flight(), "0-0"
        while room > 0:
            try:
                reply = await worker.redis.xautoclaim(stream_key(model), GROUP, worker.consumer,
                                                      min_idle_time=idle_ms, start_id=cursor, count=room)
            except ResponseError as err:
                if "NOGROUP" not in str(err):
                    raise
                await worker._ensure_group(model)
                break
            claimed = [(_text(e), f) for e, f in reply[1] if e is not None and f is not None]
            await _take(worker, model, claimed)
            room -= len(claimed)
            cursor = _text(reply[0])
            if cursor == "0-0":  # the whole pending list was scanned
                break


async def _take(worker: Worker, model: str, claimed: list[tuple[str, dict[bytes, bytes]]]) -> None:
    if not claimed:
        return
    async with worker.redis.pipeline(transaction=False) as pipe:
        for entry, _ in claimed:
            pipe.xpending_range(stream_key(model), GROUP, min=entry, max=entry, count=1)
        pending = await pipe.execute()
    for (entry, fields), info in zip(claimed, pending, strict=True):
        if entry in worker.running[model]:  # ours and running: not refreshed in time (a stalled loop)
            continue
        deliveries = int(info[0]["times_delivered"]) if info else 1
        log.warning("worker %s: re-claimed entry %s of %s (delivery %d)", worker.consumer, entry, model,
                    deliveries)
        await worker._accept(model, entry, fields, deliveries)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
