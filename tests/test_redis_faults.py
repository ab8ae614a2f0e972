"""Redis mode under faults and overload, in process against a real redis-server (loopback, stopped by pid):
a dead worker's jobs are re-claimed while the survivors are busy; a job the stream's work would make late
is refused at once; a retry with an Idempotency-Key after an outage gets the answer of the job that ran on;
the jobs of an API that is gone are aborted; the result cache keeps to its byte budget.
Workers run the toy model of tests/fake_model.py; the helpers are tests/test_redis_queue.py's."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import pytest
import redis

from service.admission import DeadlineUnmeetable
from service.errors import LostWhileWaiting
from service.jobs import Job, Outcome, Result, Solution
from service.redis.cache import ResultCache
from service.redis.keys import GROUP, connect, lease_key, result_key, work_key
from service.redis.scripts import SUBMIT_LUA
from tests.fake_model import FakeModel
from tests.test_redis_harness import Server
from tests.test_redis_queue import STREAM, make_queue, make_worker, serving, toy_job, until

pytestmark = pytest.mark.timeout(60)



def test_a_dead_workers_job_is_reclaimed_while_the_survivor_is_busy(url: str) -> None:
    """The survivor's capacity (two jobs) is taken by two long jobs (~20 s); the dead worker's short job must
    not wait for them: re-claimed after claim_idle_s, it shares the slots and is answered long before."""
    client = redis.Redis.from_url(url)
    survivor = make_worker(url, FakeModel(n_sup=8, step_delay_s=0.05), worker_max_jobs=2, claim_idle_s=0.3)
    queue = make_queue(url)

    async def scenario() -> tuple[float, bool]:
        await until(lambda: client.exists(f"gram:worker:{survivor.consumer}"))
        long_jobs = [asyncio.create_task(queue.submit(toy_job(seed=s, width=160, k=9, spread=9)))
                     for s in (1, 2)]
        await until(lambda: len(survivor.running["toy"]) == 2)
        victims_job = asyncio.create_task(queue.submit(toy_job(seed=3)))
        # a worker that reads the job and dies (never refreshes it, never answers)
        taken = await until(lambda: client.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=1))
        started = time.monotonic()
        result = await asyncio.wait_for(victims_job, 10.0)
        took = time.monotonic() - started
        busy = not any(t.done() for t in long_jobs)
        assert taken and result.outcome == Outcome.complete and result.num_trajectories == 6
        for task in long_jobs:
            task.cancel()
        await asyncio.gather(*long_jobs, return_exceptions=True)
        await queue.close()
        return took, busy

    took, busy = asyncio.run(serving(survivor, scenario()))
    assert busy, "the dead worker's job waited for the survivor's long jobs"
    assert took < 6.0


def test_a_job_whose_deadline_the_stream_would_make_it_miss_is_refused_at_once(url: str) -> None:
    """Deadline-aware admission in Redis mode: the workers publish their measured pace, the API sums the
    budgets queued in the stream; a job that would be late gets DeadlineUnmeetable (429) with a
    Retry-After, the accepted ones complete, and the work counter is back to nothing afterwards."""
    client = redis.Redis.from_url(url)
    worker = make_worker(url, FakeModel(n_sup=8, step_delay_s=0.05))
    queue = make_queue(url)

    def paced() -> bool:
        info = json.loads(client.get(f"gram:worker:{worker.consumer}") or "{}")
        return bool(info.get("models", {}).get("toy", {}).get("pace"))

    async def scenario() -> list[Any]:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        assert (await queue.submit(toy_job(seed=1, width=8, k=9, spread=9))).outcome == Outcome.complete
        await until(paced)
        await asyncio.sleep(1.1)  # the API reads the registrations at most once a second
        deadline = time.time() + 1.5  # about three jobs' work
        burst = [queue.submit(toy_job(seed=s, width=8, k=9, spread=9, deadline=deadline)) for s in range(12)]
        answers = await asyncio.gather(*burst, return_exceptions=True)
        await until(lambda: client.xlen(STREAM) == 0)
        await queue.close()
        return answers

    answers = asyncio.run(serving(worker, scenario()))
    refused = [a for a in answers if isinstance(a, DeadlineUnmeetable)]
    accepted = [a for a in answers if not isinstance(a, BaseException)]
    assert len(refused) + len(accepted) == 12 and refused and accepted, answers
    assert all(r.retry_after_s >= 1 and "deadline" in str(r) for r in refused)
    assert not client.exists(work_key("toy"))  # every entry's budget was taken off with the entry
    # admitted by the API, run by the worker: not refused again by its engine and left to be re-claimed
    assert client.xlen("gram:dead:toy") == 0
    # Each accepted job is answered: complete, or partial when the engine stops it before a step that
    # would end past its deadline (the admission estimate is a moving average, not a promise).
    assert all(a.outcome in (Outcome.complete, Outcome.partial) for a in accepted), accepted
    assert any(a.outcome == Outcome.complete for a in accepted), accepted


def test_a_retry_after_an_outage_gets_the_answer_of_the_job_that_ran_on(
    url: str, redis_server: Server
) -> None:
    """Redis stops answering for longer than GRAM_OUTAGE_GRACE_S while a keyed job runs: its first attempt
    fails (503), the job completes when Redis is back, and the retry with the same key gets that job's
    answer; the job ran once."""
    client = redis.Redis.from_url(url)
    worker = make_worker(url, FakeModel(n_sup=8, step_delay_s=0.05))
    queue = make_queue(url, redis_timeout_s=0.2, outage_grace_s=0.3)
    keys = queue.idempotency()
    job = toy_job(seed=5, width=40, k=9, spread=9)

    async def scenario() -> tuple[Any, Any]:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        first = asyncio.create_task(keys.run("order-7", "print", job))
        await until(lambda: worker.running["toy"])
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(LostWhileWaiting):
                await asyncio.wait_for(first, 20)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        retried = await keys.run("order-7", "print", toy_job(seed=99, width=40, k=9, spread=9))
        await queue.close()
        return retried

    attempt, result = asyncio.run(serving(worker, scenario()))
    assert (attempt.job_id, attempt.seed) == (job.id, 5)
    assert result.job_id == job.id and result.outcome == Outcome.complete and result.num_trajectories == 40
    assert worker.completed == 1


def test_the_jobs_of_an_api_that_is_gone_are_aborted_when_their_lease_lapses(url: str) -> None:
    """An API queues two jobs and dies (it stops renewing their leases, withdraws nothing): the running one
    is aborted and the queued one answered aborted unrun, within the lease, not after their seconds of
    work. A live API's job longer than the lease runs to its end (the API renews it)."""
    client = redis.Redis.from_url(url)
    model = FakeModel(n_sup=8, step_delay_s=0.05)
    worker = make_worker(url, model, worker_max_jobs=1, lease_s=0.5)
    live = make_queue(url, lease_s=0.5)
    submit = client.register_script(SUBMIT_LUA)

    def enqueue_and_die(seed: int) -> str:
        job = toy_job(seed=seed, width=40, k=9, spread=9)  # ~4 s of work each
        submit(keys=[STREAM, work_key("toy"), lease_key(job.id)], args=[64, job.to_json(), 320, -1, 500])
        return job.id

    async def scenario() -> tuple[float, Any]:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        orphans = [enqueue_and_die(1), enqueue_and_die(2)]
        await until(lambda: worker.running["toy"])
        started = time.monotonic()
        await until(lambda: client.xlen(STREAM) == 0, timeout_s=5.0)
        took = time.monotonic() - started
        answers = [Result.from_json(client.lpop(result_key(j)) or b"{}") for j in orphans]
        assert [a.outcome for a in answers] == [Outcome.aborted, Outcome.aborted], answers
        kept = await live.submit(toy_job(seed=3, width=16, k=9, spread=9))  # ~1.2 s > the lease
        await live.close()
        return took, kept

    took, kept = asyncio.run(serving(worker, scenario()))
    assert took < 2.0
    assert kept.outcome == Outcome.complete and kept.num_trajectories == 16


def test_the_result_cache_stays_within_its_byte_budget_evicting_the_least_recently_used(url: str) -> None:
    client = redis.Redis.from_url(url)

    def answer(job: Job, pad: int) -> Result:
        return Result(job.id, "toy", "toy", Outcome.complete, solutions=[Solution("x" * pad, 0.0, 1, 1)])

    async def scenario() -> list[bool]:
        cache = ResultCache(connect(url, 2.0), ttl_s=60, max_entry_bytes=3000, max_bytes=10_000)
        big = toy_job(seed=99)
        stored = [await cache.put(big, answer(big, 5000))]  # over the entry cap: not cached
        jobs = [toy_job(seed=s) for s in range(20)]
        for job in jobs:  # ~1.2 KB each: about 8 fit
            stored.append(await cache.put(job, answer(job, 1000)))
            assert await cache.get(jobs[0]) is not None  # the first stays in use
        hits = [await cache.get(job) is not None for job in (big, jobs[0], jobs[1], jobs[-1])]
        await cache.redis.aclose()
        return stored + hits

    outcome = asyncio.run(scenario())
    assert outcome[:21] == [False] + [True] * 20
    assert outcome[21:] == [False, True, False, True]  # big: never cached; the used one kept; the oldest gone
    entries = [client.get(k) for k in client.scan_iter("gram:cache:*")]
    held = sum(len(v) for v in entries if v is not None)
    assert 5_000 < held <= 10_000 and int(client.get("gram:cache-bytes") or 0) == held


def test_a_worker_runs_what_the_api_admitted_whatever_its_engines_own_estimate(url: str) -> None:
    """Admission by deadline is the API's, over the whole stream: a worker's engine, whose own meter says
    0.1 slot-steps a second, must still run the job instead of refusing it and leaving it pending."""
    client = redis.Redis.from_url(url)
    worker = make_worker(url, FakeModel(n_sup=8))
    worker.engines["toy"].meter.step(1, 10.0)
    worker.engines["toy"].meter.job_done(1, 1)
    queue = make_queue(url, deadline_admission=False)

    async def scenario() -> Any:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        result = await asyncio.wait_for(queue.submit(toy_job(seed=4, deadline=time.time() + 5)), 10)
        await queue.close()
        return result

    assert asyncio.run(serving(worker, scenario())).outcome == Outcome.complete
