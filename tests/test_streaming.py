"""Streamed answers (Server-Sent Events) in process: the framing, the engine's events for a watched job, the
HTTP routes (a seeded streamed request ends with the non-streamed answer), and a client that disconnects
mid-stream freeing the job's slots (a real uvicorn server, since httpx's ASGI transport buffers bodies)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import aconnect_sse

from model.gram import tiny_model
from model.tasks.registry import get_task
from service.app import create_app
from service.engine import Engine
from service.runtime import Runtime
from service.settings import Settings
from service.streaming import frame
from tests.fake_model import FakeModel, SamplingToyTask, ToyTask
from tests.test_engine import toy_job
from tests.test_golden_answers import REQUESTS
from tests.test_http_errors import _slow
from tests.test_redis_harness import free_port, wait_until

pytestmark = pytest.mark.timeout(120)
TASKS = ("sudoku", "nqueens", "graph_coloring", "mnist")


@pytest.fixture(autouse=True)
def _plain_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models, some with a slowed model.step: the engine must call that step itself (fp32 eager)."""
    monkeypatch.setenv("GRAM_CPU_PATH", "fp32")


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) of a whole SSE body, data parsed as JSON; comment lines (pings) skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


# -- framing --------------------------------------------------------------------------------------------
def test_an_event_is_one_event_line_and_one_compact_json_data_line() -> None:
    data = {"solution": {"board": ["Q.", ".Q"]}, "note": "two\nlines", "score": -0.5}
    encoded = frame("solution", data).encode()
    assert encoded == (
        b'event: solution\r\ndata: {"solution":{"board":["Q.",".Q"]},"note":"two\\nlines",'
        b'"score":-0.5}\r\n\r\n'
    )
    assert parse_sse(encoded.decode()) == [("solution", data)]
    # the done event's data is the response body as it is, not JSON-encoded again
    assert frame("done", '{"a":1}').encode() == b'event: done\r\ndata: {"a":1}\r\n\r\n'


# -- the engine's events ----------------------------------------------------------------------------------
@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.stop()


def start(engines: list[Engine], task: Any, **kw: Any) -> Engine:
    settings = Settings(slots=4, stall_patience=0, **kw)
    engine = Engine("toy", FakeModel(n_sup=8), task, settings)
    engine.warmup()
    engine.start()
    engines.append(engine)
    return engine


def test_a_watched_job_reports_each_distinct_solution_once_then_its_final_progress(engines: list) -> None:
    engine = start(engines, ToyTask())
    events: list[tuple[str, dict[str, Any]]] = []
    job = toy_job(seed=5, width=12, max_solutions=10, k=3, spread=4)
    result = engine.submit(job, lambda kind, data: events.append((kind, data))).result(10)
    solutions = [d for k, d in events if k == "solution"]
    assert [d["distinct"] for d in solutions] == list(range(1, len(solutions) + 1))
    assert len({d["solution"] for d in solutions}) == len(solutions)  # each distinct solution once
    # the answer (a seeded job's: a prefix of its trajectories) holds only solutions that were streamed
    assert {s.solution for s in result.solutions} <= {d["solution"] for d in solutions}
    for d in solutions:
        assert d["first_step"] >= 1 and 0 <= d["trajectory"] < 12 and d["count"] >= 1
    kind, last = events[-1]
    assert kind == "progress" and last["alive"] == 0 and last["waiting"] == 0
    assert sum(last["retired"].values()) == 12 and last["distinct"] == len(solutions)
    # an unwatched job on the same engine gets the same answer: watching changes nothing
    again = engine.submit(toy_job(seed=5, width=12, max_solutions=10, k=3, spread=4)).result(10)
    assert again.solutions == result.solutions


def test_a_sampling_job_reports_every_sample_as_it_finishes(engines: list) -> None:
    engine = start(engines, SamplingToyTask())
    task = SamplingToyTask()
    events: list[tuple[str, dict[str, Any]]] = []
    x = task.parse({"k": 3, "spread": 3, "halt": 1}).x.tolist()
    job = toy_job(seed=1, width=6).__class__.new(model="toy", task=task.name, x=x, meta={},
                                                  num_trajectories=6, max_solutions=6, seed=1, seeded=True)
    result = engine.submit(job, lambda kind, data: events.append((kind, data))).result(10)
    samples = [d for k, d in events if k == "sample"]
    assert [d["index"] for d in samples] == list(range(6))
    assert sorted(d["trajectory"] for d in samples) == list(range(6))
    assert sorted(map(str, (d["solution"] for d in samples))) == sorted(map(str, (s.solution for s in
                                                                                   result.solutions)))


# -- HTTP -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    settings = Settings(slots=8)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRAM_CPU_PATH", "fp32")  # the golden requests' numerics: they find solutions
        runtime = Runtime.from_models(settings, {t: (tiny_model(t, seed=7), get_task(t)) for t in TASKS})
    yield create_app(settings, runtime=runtime)
    runtime.stop()


async def post(app: Any, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post(path, json=body, **kw)


@pytest.mark.parametrize("name", ["coloring-free", "coloring-free-3", "nqueens-4", "mnist-bits", "mnist-png"])
# the colouring requests find solutions (nqueens-4 none: the tiny untrained models only colour freely)
def test_a_seeded_streamed_request_ends_with_the_non_streamed_answer(app: Any, name: str) -> None:
    _, path, body = next(r for r in REQUESTS if r[0] == name)
    plain = asyncio.run(post(app, path, body))
    streamed = asyncio.run(post(app, path, {**body, "stream": True}))
    assert plain.status_code == streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(streamed.text)
    kind, done = events[-1]
    assert kind == "done" and [k for k, _ in events].count("done") == 1
    expected = plain.json()
    assert done.pop("elapsed_ms") > 0 and expected.pop("elapsed_ms") > 0
    assert len(done.pop("job_id")) == len(expected.pop("job_id")) == 32  # each request its own job
    assert done == expected
    kinds = {k for k, _ in events[:-1]}
    assert "progress" in kinds
    if path == "/sample":
        images = [d["image"] for k, d in events if k == "sample"]
        assert sorted(map(str, images)) == sorted(map(str, expected["images"]))
    else:
        streamed_solutions = [d["solution"] for k, d in events if k == "solution"]
        assert all(s["solution"] in streamed_solutions for s in expected["solutions"])
        assert bool(expected["solutions"]) == name.startswith("coloring")


def test_accept_event_stream_streams_too(app: Any) -> None:
    _, path, body = next(r for r in REQUESTS if r[0] == "coloring-path")
    response = asyncio.run(post(app, path, body, headers={"accept": "text/event-stream"}))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert parse_sse(response.text)[-1][0] == "done"


def test_bad_input_is_a_plain_422_even_when_streamed(app: Any) -> None:
    response = asyncio.run(post(app, "/solve", {"task": "nqueens", "n": 8, "queens": [[0, 0], [1, 1]],
                                               "stream": True}))
    assert response.status_code == 422 and response.headers["content-type"] == "application/json"
    assert "queens" in response.text
    refused = asyncio.run(post(app, "/solve", {"task": "nqueens", "n": 8, "stream": "yes"}))
    assert refused.status_code == 422 and "stream" in refused.text


def test_a_full_queue_is_a_plain_429_when_streamed() -> None:
    settings = Settings(slots=1, max_queue=1, max_steps_cap=64)
    model = _slow(tiny_model("nqueens"), 0.02)
    runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    try:
        app = create_app(settings, runtime=runtime)
        body = {"task": "nqueens", "n": 8, "num_trajectories": 4, "max_steps": 20, "stream": True}

        async def two() -> list[httpx.Response]:
            first = asyncio.create_task(post(app, "/solve", body))
            await asyncio.sleep(0.2)
            second = await post(app, "/solve", body)
            return [await first, second]

        ok, full = asyncio.run(two())
        assert ok.status_code == 200 and parse_sse(ok.text)[-1][0] == "done"
        assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
    finally:
        runtime.stop()


# -- disconnect -------------------------------------------------------------------------------------------
class ThreadServer:
    """uvicorn serving ``app`` on a free loopback port from a thread (bodies really stream)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(lambda: httpx.get(self.url + "/healthz").status_code == 200, 20, "uvicorn")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_a_client_that_disconnects_mid_stream_frees_the_jobs_slots() -> None:
    settings = Settings(slots=8, max_steps_cap=256, stall_patience=0, use_halting=False)
    model = _slow(tiny_model("nqueens"), 0.02)
    runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    engine = runtime.engines["nq"]
    # 64 trajectories x 200 steps at >= 20 ms a step: over 30 s if it ran to the end
    body = {"task": "nqueens", "n": 12, "num_trajectories": 64, "max_steps": 200, "stream": True}
    try:
        with ThreadServer(create_app(settings, runtime=runtime)) as server:

            async def read_a_little() -> list[str]:
                kinds = []
                async with httpx.AsyncClient(timeout=30) as client:
                    async with aconnect_sse(client, "POST", server.url + "/solve", json=body) as source:
                        async for sse in source.aiter_sse():
                            kinds.append(sse.event)
                            if sse.event == "progress" and json.loads(sse.data)["steps"] >= 8:
                                break  # leaves the block: the connection closes mid-stream
                return kinds

            started = time.monotonic()
            kinds = asyncio.run(read_a_little())
            assert "progress" in kinds and "done" not in kinds
            wait_until(lambda: engine.in_flight() == 0 and engine.scheduler.stats().active_slots == 0, 10,
                       "the aborted job's slots to be freed")
            assert time.monotonic() - started < 20
    finally:
        runtime.stop()


def test_a_job_that_fails_mid_stream_ends_with_an_error_event() -> None:
    settings = Settings(slots=2, stall_patience=0, use_halting=False)
    model = tiny_model("nqueens")
    step, calls = model.step, []

    def failing_step(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return step(*args)

    model.step = failing_step
    runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    try:
        app = create_app(settings, runtime=runtime)
        body = {"task": "nqueens", "n": 8, "num_trajectories": 2, "max_steps": 8, "stream": True}
        response = asyncio.run(post(app, "/solve", body))
        assert response.status_code == 200
        kind, data = parse_sse(response.text)[-1]
        assert kind == "error" and data["status"] == 500 and "boom" in data["detail"], data
    finally:
        runtime.stop()
