"""A streamed job's events in Redis mode (service/streaming.py): one Redis stream per job.

- Worker (``EventWriter``): the engine calls the writer's ``listener`` for a job whose client streams it
  (``job.stream``); each event is appended to ``gram:events:{job}`` (fields ``kind`` and ``data``, JSON),
  and when the job has its Result an ``end`` entry, all before the worker writes the Result. Every append
  refreshes the stream's TTL (``GRAM_RESULT_TTL_S``), so a stream nobody reads (its API replica died)
  expires on its own; the stream of an aborted job (its client went away) is deleted.
- API (``relay``): while ``submit`` waits for the Result, it reads the stream (XREAD, blocking) and hands
  each event to the request; it stops at ``end`` (or, for a job answered without running, e.g. expired or
  dead-lettered, once the Result is in and the stream is drained), then deletes the stream.

Events are best effort: a Redis error drops them (logged), never the job; ``done`` always comes from the
Result. A job re-claimed from a dead worker runs again and streams its events again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.queues import Events

log = logging.getLogger(__name__)

END = "end"
MAXLEN = 10_000  # events kept per job: progress at 10/s for the longest deadline, and every solution
READ_BLOCK_MS = 200  # one XREAD's wait; the relay stops at most this long after the Result when no end came


def events_key(job_id: str) -> str:
    return f"gram:events:{job_id}"


class EventWriter:
    """Worker side: ``listener`` (engine thread) -> the job's Redis stream, in order, from one task."""

    def __init__(self, redis: aioredis.Redis, job_id: str, ttl_ms: int) -> None:
        self.redis = redis
        self.key = events_key(job_id)
        self.ttl_ms = ttl_ms
        self.loop = asyncio.get_running_loop()
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task = self.loop.create_task(self._run())

    def listener(self, kind: str, data: dict[str, Any]) -> None:
        """The engine's listener (on its thread): hand the event to the worker's loop."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._add, kind, data)

    def _add(self, kind: str, data: dict[str, Any]) -> None:
        self._buffer.append((kind, data))
        self._wake.set()

    async def close(self, drop: bool = False) -> None:
        """Append what is left and the end marker (call once the job has its Result). ``drop``: nobody
        reads them (the job was aborted: its client went away), delete the stream instead."""
        self._add(END, {})
        self._closed = True
        await self._task
        if drop:
            try:
                await self.redis.delete(self.key)
            except RedisError as err:  # it expires anyway
                log.warning("could not delete %s: %s", self.key, err)

    def discard(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                batch, self._buffer = self._buffer, []
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for kind, data in batch:
                            text = json.dumps(data, separators=(",", ":"))
                            pipe.xadd(self.key, {"kind": kind, "data": text}, maxlen=MAXLEN, approximate=True)
                        pipe.pexpire(self.key, self.ttl_ms)
                        await pipe.execute()
                except RedisError as err:
                    log.warning("dropped %d streamed events of %s: %s", len(batch), self.key, err)
            if self._closed:
                return


async def relay(redis: aioredis.Redis, job_id: str, events: Events, answered: asyncio.Event) -> None:
    """API side: hand the job's events to ``events`` until its end marker, or until ``answered`` is set
    and the stream has nothing more."""
    key, last = events_key(job_id), "0-0"
    while True:
        try:
            block = None if answered.is_set() else READ_BLOCK_MS  # None: do not block (0 is forever)
            reply = await redis.xread({key: last}, count=500, block=block)
        except RedisError as err:  # the wait for the Result deals with outages; the events are lost
            log.warning("stopped relaying the events of job %s: %s", job_id, err)
            return
        if not reply:
            if answered.is_set():
                return
            continue
        for _stream, entries in reply:
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                kind = fields[b"kind"].decode()
                if kind == END:
                    return
                events(kind, json.loads(fields[b"data"]))
