"""Result cache for seeded requests (Redis mode).

A seeded job's answer is a function of its inputs alone (the noise of trajectory i at step n depends only
on (seed, i, n), see model/gram.py), so a repeated request with the same canonical input tokens, instance
metadata (it decides the output format), parameters, seed and model version (the weights' digest
and the serving worker's answer settings: batching mode, exit rules, default max_steps, numerics) is answered
from Redis.
Only complete answers are cached: a partial one depends on timing. Entries expire after ``ttl_s``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis.asyncio as aioredis

from service import metrics
from service.jobs import Job, Outcome, Result

KEY_PREFIX = "gram:cache:"


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
    def __init__(self, redis: aioredis.Redis, ttl_s: float) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_s * 1000)

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    async def get(self, job: Job, model_version: str = "") -> Result | None:
        """The cached Result for this job's inputs (job id rewritten, ``cached`` attribute True), or None."""
        if not self.enabled:
            return None
        metrics.CACHE_REQUESTS.labels(task=job.task).inc()
        raw = await self.redis.get(cache_key(job, model_version))
        if raw is None:
            return None
        metrics.CACHE_HITS.labels(task=job.task).inc()
        data: dict[str, Any] = json.loads(raw)
        data.update(job_id=job.id, elapsed_ms=0.0, queue_ms=0.0)
        result = Result.from_dict(data)
        mark_cached(result)
        return result

    async def put(self, job: Job, result: Result, model_version: str = "") -> bool:
        """Store a complete answer; partial, aborted and failed ones are not reusable."""
        if not self.enabled or result.outcome != Outcome.complete:
            return False
        await self.redis.set(cache_key(job, model_version), result.to_json(), px=self.ttl_ms)
        return True


def mark_cached(result: Result) -> None:
    """Flag a Result as answered from the cache (the API reports it as ``"cached": true``)."""
    result.cached = True


def is_cached(result: Result) -> bool:
    return bool(getattr(result, "cached", False))
