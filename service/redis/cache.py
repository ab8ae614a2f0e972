"""Result cache for seeded requests (Redis mode).

A seeded job's answer is a function of its inputs alone (the noise of trajectory i at step n depends only
on (seed, i, n), see model/gram.py), so a repeated request with the same canonical input tokens, instance
metadata (it decides the output format), parameters, seed and model version (the weights' digest
and the serving worker's answer settings: batching mode, exit rules, default max_steps, numerics) is answered
from Redis.
Only complete answers are cached: a partial one depends on timing. Entries expire after ``ttl_s``.

Bounded, since it may share its Redis with the job streams (which must never be evicted): an answer over
``max_entry_bytes`` is not cached, and the entries' bytes are kept within ``max_bytes`` by evicting the
least recently used (one script: the entry, a sorted set of keys by last use, their sizes and the total,
``gram:cache:lru`` / ``:sizes`` / ``:bytes``). ``GRAM_CACHE_URL`` puts the cache in a Redis of its own (give
that one ``maxmemory`` and ``allkeys-lru``). A cache that cannot be reached is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service import metrics
from service.jobs import Job, Outcome, Result

log = logging.getLogger(__name__)

KEY_PREFIX = "gram:cache:"
LRU_KEY, SIZES_KEY, BYTES_KEY = "gram:cache-lru", "gram:cache-sizes", "gram:cache-bytes"

# KEYS: entry, lru, sizes, bytes. ARGV: value, ttl ms, now ms, budget. Store, then evict the least recently
# used entries while the total is over the budget (an expired entry is still counted until it is evicted).
PUT_LUA = """
local old = redis.call('HGET', KEYS[3], KEYS[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], #ARGV[1])
local total = redis.call('INCRBY', KEYS[4], #ARGV[1])
while total > tonumber(ARGV[4]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  local size = tonumber(redis.call('HGET', KEYS[3], oldest[1]) or '0')
  redis.call('ZREM', KEYS[2], oldest[1])
  redis.call('HDEL', KEYS[3], oldest[1])
  redis.call('DEL', oldest[1])
  total = redis.call('DECRBY', KEYS[4], size)
end
return total
"""

# KEYS: entry, lru. ARGV: now ms. -> the entry, its last use moved to now.
GET_LUA = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], 'XX', ARGV[1], KEYS[1]) end
return value
"""


def cache_key(job: Job, model_version: str = "") -> str:
    """Everything the answer depends on; nothing it does not (job id, deadline, submit time)."""
    canonical = {
        "model": job.model,
        "version": model_version,
        "task": job.task,
        "x": job.x,
        "meta": job.meta,
        "num_trajectories": job.num_trajectories,
        "max_solutions": job.max_solutions,
        "max_steps": job.max_steps,
        "stall_patience": job.stall_patience,
        "seed": job.seed,
        "temperature": job.temperature,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return KEY_PREFIX + hashlib.sha256(text.encode()).hexdigest()


class ResultCache:
    def __init__(self, redis: aioredis.Redis, ttl_s: float, max_entry_bytes: int = 65536,
                 max_bytes: int = 256 * 2**20) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_s * 1000)
        self.max_entry_bytes = max_entry_bytes
        self.max_bytes = max_bytes
        self._get = redis.register_script(GET_LUA)
        self._put = redis.register_script(PUT_LUA)

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    async def get(self, job: Job, model_version: str = "") -> Result | None:
        """The cached Result for this job's inputs (job id rewritten, ``cached`` attribute True), or None."""
        if not self.enabled:
            return None
        metrics.CACHE_REQUESTS.labels(task=job.task).inc()
        try:
            raw = await self._get(keys=[cache_key(job, model_version), LRU_KEY], args=[_now_ms()])
        except RedisError as err:
            log.warning("result cache unavailable: %s", err)
            return None
        if raw is None:
            return None
        metrics.CACHE_HITS.labels(task=job.task).inc()
        data: dict[str, Any] = json.loads(raw)
        data.update(job_id=job.id, elapsed_ms=0.0, queue_ms=0.0)
        result = Result.from_dict(data)
        mark_cached(result)
        return result

    async def put(self, job: Job, result: Result, model_version: str = "") -> bool:
        """Store a complete answer no larger than ``max_entry_bytes``; partial, aborted and failed ones are
        not reusable."""
        if not self.enabled or result.outcome != Outcome.complete:
            return False
        text = result.to_json()
        if len(text.encode()) > self.max_entry_bytes:
            return False
        try:
            await self._put(keys=[cache_key(job, model_version), LRU_KEY, SIZES_KEY, BYTES_KEY],
                            args=[text, self.ttl_ms, _now_ms(), self.max_bytes])
        except RedisError as err:
            log.warning("result cache unavailable: %s", err)
            return False
        return True


def _now_ms() -> int:
    return int(time.time() * 1000)


def mark_cached(result: Result) -> None:
    """Flag a Result as answered from the cache (the API reports it as ``"cached": true``)."""
    result.cached = True


def is_cached(result: Result) -> bool:
    return bool(getattr(result, "cached", False))
