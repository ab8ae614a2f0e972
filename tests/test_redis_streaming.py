"""Streamed jobs in Redis mode, against a real redis-server: a worker relays the engine's events through
the job's Redis stream, the API side hands them on in order before the Result, the stream is deleted when
the job ends, and a client that goes away mid-stream frees the job's slots on the worker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from service.jobs import Outcome
from service.redis.events import events_key
from tests.fake_model import FakeModel
from tests.test_redis_queue import make_queue, make_worker, serving, toy_job, until

pytestmark = pytest.mark.timeout(60)



def test_a_streamed_job_relays_its_events_through_redis_and_ends_with_the_same_answer(url: str) -> None:
    worker, queue = make_worker(url, FakeModel(n_sup=8, step_delay_s=0.01)), make_queue(url)
    client = redis.Redis.from_url(url)
    events: list[tuple[str, dict[str, Any]]] = []
    job = toy_job(seed=11, width=12, spread=6, stall_patience=0)

    async def scenario() -> Any:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        streamed = await queue.submit(job, events=lambda kind, data: events.append((kind, data)))
        plain = await queue.submit(toy_job(seed=11, width=12, spread=6, stall_patience=0))
        return streamed, plain

    streamed, plain = asyncio.run(serving(worker, scenario()))
    assert streamed.outcome == plain.outcome == Outcome.complete
    assert streamed.solutions == plain.solutions and streamed.steps == plain.steps
    kinds = [k for k, _ in events]
    assert kinds[0] == "queued" and "progress" in kinds and "solution" in kinds
    assert kinds[-1] == "progress"  # the final progress, written before the Result: none was lost
    solutions = [d for k, d in events if k == "solution"]
    assert [d["distinct"] for d in solutions] == list(range(1, len(solutions) + 1))
    assert {s.solution for s in streamed.solutions} <= {d["solution"] for d in solutions}
    assert events[-1][1]["alive"] == 0 and sum(events[-1][1]["retired"].values()) == 12
    assert not client.exists(events_key(job.id)) and not client.keys("gram:events:*")


def test_a_client_gone_mid_stream_frees_the_jobs_slots_on_the_worker(url: str) -> None:
    # 400 trajectories of up to 9 steps at 20 ms a step on 4 slots: about 10 s if it ran to the end
    worker, queue = make_worker(url, FakeModel(n_sup=60, step_delay_s=0.02)), make_queue(url)
    client = redis.Redis.from_url(url)
    engine = worker.engines["toy"]
    progress = asyncio.Event()
    job = toy_job(seed=3, width=400, spread=9, k=1, stall_patience=0, max_steps=60)

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["steps"] >= 4:
            progress.set()

    async def scenario() -> None:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        waiting = asyncio.create_task(queue.submit(job, events=on_event))
        await asyncio.wait_for(progress.wait(), 10)
        assert engine.in_flight() == 1
        waiting.cancel()  # what the API does when the client disconnects
        await asyncio.gather(waiting, return_exceptions=True)
        await until(lambda: engine.in_flight() == 0 and engine.scheduler.stats().active_slots == 0, 5)
        await until(lambda: not client.keys("gram:events:*"), 5)

    asyncio.run(serving(worker, scenario()))


def test_only_a_streamed_job_carries_the_stream_flag_to_the_workers() -> None:
    """An unstreamed job's JSON is what workers from before streaming read (a rolling update)."""
    from dataclasses import replace

    from service.jobs import Job

    job = toy_job(seed=1)
    assert "stream" not in job.to_dict() and Job.from_json(job.to_json()) == job
    streamed = replace(job, stream=True)
    assert json.loads(streamed.to_json())["stream"] is True and Job.from_json(streamed.to_json()) == streamed
