"""The Redis queue's rules, in process, against a real redis-server (one per module, loopback, stopped by
pid): dead-lettering, expired jobs, the queue bound, exactly-once answers, client aborts, graceful hand-back,
and the result-cache key. Workers run the deterministic toy model of tests/fake_model.py."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis

from service.errors import QueueFull, QueueUnavailable
from service.jobs import Job, Outcome
from service.redis.cache import cache_key
from service.redis.keys import GROUP, result_key, stream_key, work_key
from service.redis.queue import RedisJobQueue
from service.redis.scripts import COMPLETE_LUA
from service.redis.worker import Worker
from service.runtime import Runtime
from service.settings import Settings
from tests.fake_model import FakeModel, ToyTask, expected_toy_outcome

pytestmark = pytest.mark.timeout(60)
TASK = ToyTask()
STREAM = stream_key("toy")



def toy_job(seed: int, width: int = 6, k: int = 3, spread: int = 3, **kw: Any) -> Job:
    x = TASK.parse({"k": k, "spread": spread, "halt": 1}).x.tolist()
    return Job.new(model="toy", task="toy", x=x, meta={}, num_trajectories=width, max_solutions=10,
                   seed=seed, **kw)


def make_worker(url: str, model: FakeModel | None = None, **rs: Any) -> Worker:
    settings = Settings(slots=4, queue_url=url)
    runtime = Runtime.from_models(settings, {"toy": (model or FakeModel(n_sup=8), TASK)})
    knobs = {"claim_idle_s": 0.3, "max_deliveries": 2, "worker_block_s": 0.1, **rs}
    return Worker(runtime, Settings(slots=4, queue_url=url, **knobs))


def make_queue(url: str, **settings: Any) -> RedisJobQueue:
    return RedisJobQueue(Settings(queue_url=url, cache_ttl_s=60, **settings))


def register_ghost(url: str) -> None:
    """A worker registration with no worker behind it: the API routes jobs to 'toy', nobody runs them."""
    redis.Redis.from_url(url).set("gram:worker:ghost", json.dumps({"models": {"toy": {"task": "toy"}}}))


async def until(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out: {check}")


async def serving(worker: Worker, body: Any) -> Any:
    """Run ``body`` while ``worker`` serves; always stop the worker and its engines."""
    task = asyncio.create_task(worker.run(grace_s=0.5))
    try:
        return await body
    finally:
        worker.stop()
        await task
        worker.runtime.stop()


def test_a_worker_answers_a_toy_job_with_the_closed_form_solutions(url: str) -> None:
    worker, queue = make_worker(url), make_queue(url)

    async def scenario() -> Any:
        await until(lambda: redis.Redis.from_url(url).exists(f"gram:worker:{worker.consumer}"))
        return await queue.submit(toy_job(seed=11, width=6))

    result = asyncio.run(serving(worker, scenario()))
    expected: dict[int, int] = {}
    for t in range(6):
        sol, _ = expected_toy_outcome(11, t, 3, 3)
        expected[sol] = expected.get(sol, 0) + 1
    assert result.outcome == Outcome.complete
    assert {s.solution: s.count for s in result.solutions} == expected
    assert redis.Redis.from_url(url).xlen(STREAM) == 0  # acknowledged and deleted


def test_job_delivered_more_than_max_deliveries_goes_to_dead_letter_with_a_clear_error(url: str) -> None:
    client = redis.Redis.from_url(url)
    register_ghost(url)
    queue = make_queue(url)
    job = toy_job(seed=1)

    async def scenario() -> Any:
        submitted = asyncio.create_task(queue.submit(job))
        await until(lambda: client.xlen(STREAM) == 1)
        client.xgroup_create(STREAM, GROUP, id="0")
        # two workers took it and died (deliveries 1 and 2), each leaving it pending
        (entry,) = [e for _, entries in client.xreadgroup(GROUP, "dead-1", {STREAM: ">"}) for e, _ in entries]
        client.xclaim(STREAM, GROUP, "dead-2", 0, [entry], idle=10_000)
        worker = make_worker(url)  # max_deliveries=2: its re-claim is delivery 3
        return await serving(worker, submitted)

    result = asyncio.run(scenario())
    assert result.outcome == Outcome.error
    assert "dead-letter stream gram:dead:toy" in result.error and job.id in result.error
    (dead,) = client.xrange("gram:dead:toy")
    assert json.loads(dead[1][b"job"])["id"] == job.id and dead[1][b"deliveries"] == b"3"
    assert client.xlen(STREAM) == 0


def test_expired_job_is_answered_partial_and_not_run(url: str) -> None:
    client = redis.Redis.from_url(url)
    model = FakeModel(n_sup=8)
    worker = make_worker(url, model)
    steps_before = model.steps_run
    job = toy_job(seed=3, deadline=time.time() - 1)
    client.xadd(STREAM, {"job": job.to_json()})

    async def scenario() -> Any:
        return await until(lambda: client.lpop(result_key(job.id)))

    raw = asyncio.run(serving(worker, scenario()))
    answer = json.loads(raw)
    assert answer["outcome"] == "partial" and "deadline passed" in answer["error"]
    assert model.steps_run == steps_before
    assert client.xlen(STREAM) == 0


def test_queue_bound_refuses_with_queue_full_and_withdrawn_jobs_leave_the_stream(url: str) -> None:
    client = redis.Redis.from_url(url)
    register_ghost(url)
    queue = make_queue(url, max_queue=2)

    async def scenario() -> None:
        waiting = [asyncio.create_task(queue.submit(toy_job(seed=s))) for s in range(2)]
        await until(lambda: client.xlen(STREAM) == 2)
        with pytest.raises(QueueFull):
            await queue.submit(toy_job(seed=9))
        for task in waiting:  # the clients go away before any worker read the jobs
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await queue.close()

    asyncio.run(scenario())
    assert client.xlen(STREAM) == 0


def test_no_live_worker_for_the_task_is_503_not_a_hang(url: str) -> None:
    queue = make_queue(url)

    async def scenario() -> float:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable, match="no gram worker is serving task 'toy'"):
            await queue.submit(toy_job(seed=1))
        await queue.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


def test_unreachable_redis_is_503_within_the_timeout() -> None:
    from tests.test_redis_harness import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    queue = make_queue(url)

    async def scenario() -> tuple[float, bool]:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable, match="Redis"):
            await queue.submit(toy_job(seed=1))
        took = time.monotonic() - started
        await asyncio.sleep(0.1)
        ready = queue.ready()
        await queue.close()
        return took, ready

    took, ready = asyncio.run(scenario())
    assert took < 1.0 and ready is False
    assert "unreachable" in (queue.not_ready or "")


def test_only_the_current_owner_of_an_entry_can_answer_it(url: str) -> None:
    client = redis.Redis.from_url(url)
    complete = client.register_script(COMPLETE_LUA)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    entry = client.xadd(STREAM, {"job": "{}"})
    client.xreadgroup(GROUP, "slow", {STREAM: ">"})
    client.xclaim(STREAM, GROUP, "rescuer", 0, [entry])  # "slow" was presumed dead
    args = [GROUP, entry, "slow", '{"answer": "late"}', 10_000]
    keys = [STREAM, result_key("j"), work_key("toy")]
    assert complete(keys=keys, args=args) == 0
    assert complete(keys=keys, args=[GROUP, entry, "rescuer", '{"a": 1}', 10_000]) == 1
    assert client.lrange(result_key("j"), 0, -1) == [b'{"a": 1}']
    assert client.xlen(STREAM) == 0 and client.xpending(STREAM, GROUP)["pending"] == 0
    assert 0 < client.pttl(result_key("j")) <= 10_000


def test_client_going_away_aborts_the_running_job(url: str) -> None:
    client = redis.Redis.from_url(url)
    model = FakeModel(n_sup=8, step_delay_s=0.05)  # 40 trajectories x 8 steps / 4 slots: ~4 s if not aborted
    worker, queue = make_worker(url, model), make_queue(url)

    async def scenario() -> float:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        submitted = asyncio.create_task(queue.submit(toy_job(seed=5, width=40, k=9, spread=9)))
        await until(lambda: worker.running["toy"])
        submitted.cancel()
        started = time.monotonic()
        await until(lambda: client.xlen(STREAM) == 0, timeout_s=3.0)  # answered (aborted) and acknowledged
        await queue.close()
        return time.monotonic() - started

    assert asyncio.run(serving(worker, scenario())) < 2.0


def test_a_stopping_worker_hands_its_unfinished_jobs_to_another_at_once(url: str) -> None:
    client = redis.Redis.from_url(url)
    slow = FakeModel(n_sup=8, step_delay_s=0.05)
    first = make_worker(url, slow, claim_idle_s=30.0)
    queue = make_queue(url)

    async def scenario() -> tuple[Any, float]:
        run_first = asyncio.create_task(first.run(grace_s=0.05))
        await until(lambda: client.exists(f"gram:worker:{first.consumer}"))
        submitted = asyncio.create_task(queue.submit(toy_job(seed=8, width=40, k=9, spread=9)))
        await until(lambda: first.running["toy"])
        first.stop()
        await run_first
        first.runtime.stop()
        # the second worker's janitor runs every claim_idle_s / 2 = 0.5 s; without the hand-back the entry
        # would only be claimable 30 s after the first worker's last refresh
        second = make_worker(url, FakeModel(n_sup=8), claim_idle_s=1.0)
        started = time.monotonic()
        result = await serving(second, submitted)
        await queue.close()
        return result, time.monotonic() - started

    result, took = asyncio.run(scenario())
    assert result.outcome == Outcome.complete and result.num_trajectories == 40
    assert took < 5.0


def test_cache_key_depends_on_the_inputs_and_nothing_else() -> None:
    job = toy_job(seed=4)
    same_inputs = toy_job(seed=4, deadline=time.time() + 60)  # another id, deadline and submit time
    assert cache_key(job, "v1") == cache_key(same_inputs, "v1")
    assert cache_key(job, "v1") != cache_key(job, "v2")  # new weights
    assert cache_key(job) != cache_key(toy_job(seed=5))
    assert cache_key(job) != cache_key(toy_job(seed=4, width=7))
    assert cache_key(job) != cache_key(toy_job(seed=4, k=4))
    formatted_differently = Job.from_dict({**job.to_dict(), "meta": {"format": "grid"}})
    assert cache_key(job) != cache_key(formatted_differently)


def test_gram_worker_without_a_queue_url_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    monkeypatch.delenv("GRAM_QUEUE_URL", raising=False)
    outcome = CliRunner().invoke(app, ["worker"])
    assert outcome.exit_code == 2 and "GRAM_QUEUE_URL" in outcome.output


def test_jobs_are_routed_by_task_or_to_the_named_model(url: str) -> None:
    """The intake routes among the queue's models(); the queue checks the model is still served."""
    from service.intake import route

    client = redis.Redis.from_url(url)
    models = {"toy-a": {"task": "toy"}, "toy-b": {"task": "toy"}, "other": {"task": "sudoku"}}
    client.set("gram:worker:ghost", json.dumps({"models": models}))
    queue = make_queue(url)

    def naming(model: str) -> Job:
        return Job.from_dict({**toy_job(seed=1).to_dict(), "model": model})

    async def lands_on(job: Job) -> str:
        waiting = asyncio.create_task(queue.submit(job))
        stream = await until(lambda: next((m for m in models if client.xlen(stream_key(m))), None))
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return stream

    async def scenario() -> list[str]:
        by_task = naming(route(await queue.models(), "toy"))
        landed = [await lands_on(by_task), await lands_on(naming("toy-b"))]  # by task; named
        for wrong in ("other", "typo"):  # serves another task; served by nobody
            with pytest.raises(ValueError, match="toy-a"):
                await queue.submit(naming(wrong))
        await queue.close()
        return landed

    assert asyncio.run(scenario()) == ["toy-a", "toy-b"]


def test_the_cache_key_changes_with_the_serving_workers_answer_settings(url: str) -> None:
    """A seeded job that leaves stall_patience / max_steps unset takes the worker's defaults, so two
    deployments that differ in them (or in batching mode) must not share cached answers."""

    async def version_served_by(settings: Settings) -> str:
        runtime = Runtime.from_models(settings, {"toy": (FakeModel(n_sup=8), TASK)})
        worker = Worker(runtime, settings)
        await worker._register()
        queue = make_queue(url)
        _, version = await queue._route(toy_job(seed=1))
        await queue.close()
        runtime.stop()
        redis.Redis.from_url(url).delete(*redis.Redis.from_url(url).keys("gram:worker:*"))
        return version

    def version(**settings: Any) -> str:
        return asyncio.run(version_served_by(Settings(slots=4, queue_url=url, **settings)))

    default = version()
    assert version() == default  # the same deployment: the same key, so its cache hits
    for differs in ({"stall_patience": 0}, {"stall_min_steps": 5}, {"use_halting": False},
                    {"batching": "request"}):
        assert version(**differs) != default, differs
    job = toy_job(seed=1)
    assert cache_key(job, version()) != cache_key(job, version(stall_patience=0))


def test_seeded_jobs_bypass_the_cache_while_the_workers_of_a_model_disagree_on_its_settings(url: str) -> None:
    """Two replicas of one model with different settings (a rolling update): either may answer, so no one
    cache key names the answer; the cache is neither read nor written until they agree again."""
    worker, queue = make_worker(url), make_queue(url)
    client = redis.Redis.from_url(url)
    job = toy_job(seed=5, seeded=True)

    async def fresh(job: Job) -> Any:
        await asyncio.sleep(1.1)  # the queue re-reads the worker registrations at most once a second
        return await queue.submit(job)

    async def scenario() -> list[bool]:
        await until(lambda: client.exists(f"gram:worker:{worker.consumer}"))
        mine = json.loads(client.get(f"gram:worker:{worker.consumer}"))["models"]["toy"]
        cached = [(await queue.submit(job)).cached, (await queue.submit(job)).cached]  # agreeing: cached
        other = {**mine, "answer_settings": {**mine["answer_settings"], "stall_patience": 0}}
        client.set("gram:worker:replica", json.dumps({"models": {"toy": other}}))
        # disagreeing: the cache is neither read (job) nor written (a new job, twice)
        new = toy_job(seed=6, seeded=True)
        cached.append((await fresh(job)).cached)
        cached += [(await queue.submit(new)).cached, (await queue.submit(new)).cached]
        client.delete("gram:worker:replica")
        cached += [(await fresh(job)).cached]  # agreeing again: the old entry serves
        return cached

    assert asyncio.run(serving(worker, scenario())) == [False, True, False, False, False, True]
