"""Idempotency-Key: a client that retries a request with the same key gets its first attempt's answer (or
waits for its still-running job) instead of running it twice.

The API (service/app.py) reads the header and calls ``keys.run(key, fingerprint, job)`` on the store its
queue provides (``JobQueue.idempotency()``): ``LocalKeys`` below in process, ``RedisKeys``
(service/redis/idempotency.py) in Redis mode, where a retry may reach another API replica and the first
attempt may have ended in a 503 while its job completed. A key names one request body (its fingerprint);
the same key with another body is a 422. Keys are kept for ``GRAM_RESULT_TTL_S``. A first attempt refused
before it ran (429, 503 before queueing) or withdrawn (its client went away) forgets its key, so a retry
runs anew.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from model.tasks.base import TaskInputError
from service.jobs import Job, Outcome, Result

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
MAX_LOCAL_KEYS = 10_000


def check_key(key: str) -> str:
    """A key is 1..255 visible ASCII characters (RFC 9110 token-ish); anything else is a 422."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(33 <= ord(c) <= 126 for c in key):
        raise TaskInputError(f"the {HEADER} header must be 1 to {MAX_KEY_CHARS} visible ASCII characters",
                             HEADER)
    return key


def fingerprint(path: str, body_json: str) -> str:
    return hashlib.sha256(f"{path}\n{body_json}".encode()).hexdigest()


def key_reused(key: str) -> TaskInputError:
    return TaskInputError(f"{HEADER} {key!r} was used before with a different request", HEADER)


@dataclass
class Attempt:
    """The job a key names: its id and seed (the answer reports them) and, once known, its Result."""

    job_id: str
    seed: int
    result: Result | None = None


class IdempotencyKeys(Protocol):
    async def run(self, key: str, fingerprint: str, job: Job) -> tuple[Attempt, Result]:
        """Submit ``job`` under ``key``, or attach to the job the key already names (its Attempt)."""
        ...


def forgettable(result: Result) -> bool:
    """An aborted or failed job is not an answer to keep: a retry runs anew."""
    return result.outcome in (Outcome.aborted, Outcome.error)


@dataclass
class _Local:
    fingerprint: str
    attempt: Attempt
    done: asyncio.Future[Result]
    at: float = field(default_factory=time.monotonic)


class LocalKeys:
    """Keys of an in-process queue: a bounded, expiring map from key to its first attempt's future."""

    def __init__(self, submit: Callable[[Job], Awaitable[Result]], ttl_s: float,
                 max_keys: int = MAX_LOCAL_KEYS) -> None:
        self.submit = submit
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _Local] = OrderedDict()

    async def run(self, key: str, fingerprint: str, job: Job) -> tuple[Attempt, Result]:
        self._expire()
        known = self._keys.get(key)
        if known is not None:
            if known.fingerprint != fingerprint:
                raise key_reused(key)
            return known.attempt, await asyncio.shield(known.done)
        entry = _Local(fingerprint, Attempt(job.id, job.seed), asyncio.get_running_loop().create_future())
        self._keys[key] = entry
        try:
            result = await self.submit(job)
        except BaseException as err:  # refused, or withdrawn: forget the key; attached retries see why
            self._keys.pop(key, None)
            if not entry.done.done():
                entry.done.set_exception(err if isinstance(err, Exception) else RuntimeError("withdrawn"))
                entry.done.exception()  # retrieved: no "never retrieved" warning when nobody attached
            raise
        if forgettable(result):
            self._keys.pop(key, None)
        entry.attempt.result = result
        entry.done.set_result(result)
        return entry.attempt, result

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest.at >= cutoff and len(self._keys) < self.max_keys:
                break
            self._keys.popitem(last=False)
