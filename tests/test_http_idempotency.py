"""Every response of a request that became a job names it (``job_id``, ``X-Job-Id``), and a retry with the
same Idempotency-Key attaches to its first attempt or gets its stored answer instead of running again.
In process over ASGI on tiny models (Redis mode: tests/test_redis_faults.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from model.gram import tiny_model
from model.tasks.registry import get_task
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings

BODY = {"task": "nqueens", "n": 8, "num_trajectories": 4, "max_steps": 6, "stall_patience": 0}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Any, Runtime]]:
    settings = Settings(slots=2, max_queue=2, max_steps_cap=64, deadline_admission=False)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRAM_CPU_PATH", "fp32")
        model = tiny_model("nqueens")
        step = model.step

        def slow_step(*args: Any) -> Any:  # ~12 steps a request: long enough to retry while it runs
            time.sleep(0.03)
            return step(*args)

        model.step = slow_step
        runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    yield create_app(settings, runtime=runtime), runtime
    runtime.stop()


async def _posts(app: Any, *requests: tuple[dict[str, Any], dict[str, str]]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return list(await asyncio.gather(*[client.post("/solve", json=b, headers=h) for b, h in requests]))


def post(app: Any, *requests: tuple[dict[str, Any], dict[str, str]]) -> list[httpx.Response]:
    return asyncio.run(_posts(app, *requests))


def test_every_answer_and_refusal_names_its_job(served: tuple[Any, Runtime]) -> None:
    app, _ = served
    responses = post(app, *[(BODY, {})] * 5)  # max_queue 2: some are refused
    assert {r.status_code for r in responses} == {200, 429}
    for response in responses:
        assert len(response.headers["X-Job-Id"]) == 32
        if response.status_code == 200:
            assert response.json()["job_id"] == response.headers["X-Job-Id"]
    assert len({r.headers["X-Job-Id"] for r in responses}) == 5


def test_a_retry_with_the_same_key_attaches_to_the_running_job_or_gets_its_answer(
    served: tuple[Any, Runtime]
) -> None:
    app, runtime = served
    engine = runtime.engines["nq"]
    before = engine.iterations
    key = {"Idempotency-Key": "order-1"}
    first, retry = post(app, (BODY, key), (BODY, key))  # concurrent: the retry attaches
    steps_once = engine.iterations - before
    (later,) = post(app, (BODY, key))  # after it finished: the stored answer
    assert engine.iterations - before == steps_once  # ran once
    for response in (first, retry, later):
        assert response.status_code == 200, response.text
        assert response.headers["X-Job-Id"] == first.headers["X-Job-Id"]
    # no seed in the request: a second run would have drawn another
    assert first.json() == retry.json() == later.json()
    (other,) = post(app, (BODY, {"Idempotency-Key": "order-2"}))
    assert other.json()["job_id"] != first.json()["job_id"]


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [({**BODY, "n": 9}, "order-1", "different request"), (BODY, "x" * 256, "255"),
     (BODY, "two words", "visible")],
)
def test_a_reused_or_malformed_key_gets_422_naming_the_header(
    served: tuple[Any, Runtime], body: dict[str, Any], key: str, needle: str
) -> None:
    app, _ = served
    post(app, (BODY, {"Idempotency-Key": "order-1"}))
    (response,) = post(app, (body, {"Idempotency-Key": key}))
    assert response.status_code == 422, response.text
    item = response.json()["detail"][0]
    assert item["loc"] == ["header", "Idempotency-Key"] and needle in item["msg"]
