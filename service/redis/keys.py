"""The Redis key layout both sides of the queue share, and the fail-fast client they connect with."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

GROUP = "gram-engines"  # the consumer group every worker reads the job streams in
WORKER_KEY_PATTERN = "gram:worker:*"


def stream_key(model: str) -> str:
    return f"gram:jobs:{model}"


def work_key(model: str) -> str:
    """The budgets (slot-steps) of the jobs in the model's stream, summed: deadline-aware admission."""
    return f"gram:work:{model}"


def dead_letter_key(model: str) -> str:
    return f"gram:dead:{model}"


def result_key(job_id: str) -> str:
    return f"gram:result:{job_id}"


def abort_key(job_id: str) -> str:
    return f"gram:abort:{job_id}"


def lease_key(job_id: str) -> str:
    """Exists while the API waiting for the job renews it; a worker aborts a leased job without one."""
    return f"gram:lease:{job_id}"


def worker_key(consumer: str) -> str:
    return f"gram:worker:{consumer}"


def connect(url: str, timeout_s: float, *, block_s: float = 0.0) -> aioredis.Redis:
    """An asyncio client that fails fast: short timeouts and one quick retry, so an outage is a prompt
    error instead of a hang. ``block_s`` extends the read timeout for clients that run blocking reads."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s + block_s,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        health_check_interval=0,
        decode_responses=False,
    )
