"""Every class of bad input gets a clear 4xx naming what was wrong; overload gets 429; never a 500.

In-process (ASGI transport) on tiny random models, so these run in seconds without checkpoints.
"""

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

TASKS = ("sudoku", "nqueens", "graph_coloring", "mnist")
SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


@pytest.fixture(autouse=True)
def _plain_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run tiny models, some with a slowed model.step (below): the engine must call that
    step itself, not time and compile a bf16 copy of the model (GRAM_CPU_PATH=auto)."""
    monkeypatch.setenv("GRAM_CPU_PATH", "fp32")


def _slow(model: Any, delay_s: float) -> Any:
    step = model.step

    def slow_step(*args: Any) -> Any:
        time.sleep(delay_s)
        return step(*args)

    model.step = slow_step
    return model


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    settings = Settings(slots=8, max_trajectories=64, max_steps_cap=16, max_body_bytes=4096, max_queue=64)
    # module-scoped, so set up before the autouse _plain_step: its own fp32, not a timed and compiled path
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRAM_CPU_PATH", "fp32")
        runtime = Runtime.from_models(settings, {t: (tiny_model(t), get_task(t)) for t in TASKS})
    yield create_app(settings, runtime=runtime)
    runtime.stop()


async def _request(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, **kw)


def call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    return asyncio.run(_request(app, method, path, **kw))


def detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"task": "chess"}, "chess"),
        ({"puzzle": SUDOKU}, "task"),
        ({"task": "sudoku"}, "puzzle"),
        ({"task": "sudoku", "puzzle": SUDOKU[:80]}, "81"),
        ({"task": "sudoku", "puzzle": "55" + SUDOKU[2:]}, "5"),
        ({"task": "sudoku", "puzzle": [[0] * 9] * 8}, "9"),
        ({"task": "sudoku", "puzzle": 42}, "puzzle"),
        ({"task": "nqueens", "n": 3}, "n"),
        ({"task": "nqueens", "n": "8"}, "n"),
        ({"task": "nqueens", "n": 8.0}, "n"),
        ({"task": "nqueens", "n": True}, "n"),
        ({"task": "nqueens", "n": 8, "queens": [[0, 8]]}, "off the 8x8 board"),
        ({"task": "nqueens", "n": 8, "queens": [[0, 0], [1, 1]]}, "attack"),
        ({"task": "nqueens", "n": 8, "queens": [[0]]}, "queens"),
        ({"task": "graph_coloring", "num_nodes": 3, "edges": [[0, 0]], "num_colors": 2}, "self-loop"),
        ({"task": "graph_coloring", "num_nodes": 3, "edges": [[0, 5]], "num_colors": 2}, "out of range"),
        ({"task": "graph_coloring", "num_nodes": 3, "edges": [], "num_colors": 9}, "num_colors"),
        ({"task": "graph_coloring", "num_nodes": 17, "edges": [], "num_colors": 3}, "num_nodes"),
        ({"task": "graph_coloring", "num_nodes": 2, "edges": [[0, 1]], "num_colors": 2,
          "fixed": {"0": 1, "1": 1}}, "conflict"),
        ({"task": "graph_coloring", "num_nodes": 2, "edges": [], "num_colors": 2, "fixed": {"x": 1}}, "x"),
        ({"task": "nqueens", "n": 8, "num_trajectories": 0}, "num_trajectories"),
        ({"task": "nqueens", "n": 8, "num_trajectories": 65}, "GRAM_MAX_TRAJECTORIES"),
        ({"task": "nqueens", "n": 8, "max_solutions": 0}, "max_solutions"),
        ({"task": "nqueens", "n": 8, "max_steps": 0}, "max_steps"),
        ({"task": "nqueens", "n": 8, "max_steps": 17}, "GRAM_MAX_STEPS_CAP"),
        ({"task": "nqueens", "n": 8, "seed": -1}, "seed"),
        ({"task": "nqueens", "n": 8, "seed": 2**64}, "seed"),
        ({"task": "nqueens", "n": 8, "timeout_ms": 0}, "timeout_ms"),
        ({"task": "nqueens", "n": 8, "temperature": 0}, "temperature"),
        ({"task": "nqueens", "n": 8, "temperature": 10.5}, "temperature"),
        ({"task": "nqueens", "n": 8, "temperature": "hot"}, "temperature"),
        ({"task": "nqueens", "n": 8, "timeout_ms": "soon"}, "timeout_ms"),
        ({"task": "nqueens", "n": 8, "colour": "blue"}, "colour"),
        ({"task": "nqueens", "n": 8, "model": "sudoku"}, "does not serve task 'nqueens'"),
        ({"task": "nqueens", "n": 8, "model": "nope"}, "nope"),
    ],
)
def test_invalid_solve_bodies_get_422_naming_the_problem(app: Any, body: dict[str, Any], needle: str) -> None:
    response = call(app, "POST", "/solve", json=body)
    assert response.status_code == 422, response.text
    assert needle in detail(response)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'"sudoku"', b"null", b""],
)
def test_malformed_json_gets_422(app: Any, content: bytes) -> None:
    response = call(app, "POST", "/solve", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/solve", b'{"task": "nqueens", "n": 6, "temperature": NaN}', "temperature"),
        ("/solve", b'{"task": "nqueens", "n": 6, "temperature": Infinity}', "temperature"),
        ("/solve", b'{"task": "nqueens", "n": 6, "timeout_ms": Infinity}', "timeout_ms"),
        ("/solve", b'{"task": "nqueens", "n": 6, "timeout_ms": -Infinity}', "timeout_ms"),
        ("/solve", b'{"task": "nqueens", "n": NaN}', "n"),
        ("/solve", b'{"task": "nqueens", "n": 6, "queens": [[0, NaN]]}', "queens"),
        ("/solve", b'{"task": "graph_coloring", "num_nodes": 3, "edges": [], "num_colors": 2, '
                   b'"fixed": {"0": -Infinity}}', "fixed"),
        ("/solve", b'{"task": "nqueens", "n": 6, "extra": NaN}', "extra"),
        ("/sample", b'{"n": 2, "temperature": NaN}', "temperature"),
        ("/sample", b'{"n": 2, "timeout_ms": Infinity}', "timeout_ms"),
    ],
)
def test_nan_and_infinity_get_422_naming_the_field_not_a_500(
    app: Any, path: str, content: bytes, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON has no NaN or Infinity, but Python's parser reads them; the 422 must still be JSON."""
    response = call(app, "POST", path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert any(field in item["loc"] for item in response.json()["detail"]), response.text
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize(
    ("body", "needle"),
    [({"n": 0}, "n"), ({"n": 65}, "n"), ({"format": "gif"}, "format"), ({"steps": 99}, "steps"),
     ({"seed": "x"}, "seed"), ({"temperature": -1}, "temperature")],
)
def test_invalid_sample_bodies_get_422(app: Any, body: dict[str, Any], needle: str) -> None:
    response = call(app, "POST", "/sample", json=body)
    assert response.status_code == 422 and needle in detail(response)


def test_body_over_the_limit_gets_413(app: Any) -> None:
    big = {"task": "sudoku", "puzzle": SUDOKU, "pad": "x" * 5000}
    response = call(app, "POST", "/solve", json=big)
    assert response.status_code == 413 and "4096" in detail(response)


def test_streamed_body_over_the_limit_gets_413_without_content_length(app: Any) -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    response = call(app, "POST", "/solve", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_valid_request_is_answered(app: Any) -> None:
    response = call(app, "POST", "/solve", json={"task": "nqueens", "n": 5, "num_trajectories": 3, "seed": 3,
                                                 "max_steps": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["complete"] and body["num_trajectories"] == 3 and body["steps"] == 6 and body["seed"] == 3


def test_deadline_returns_200_with_complete_false() -> None:
    settings = Settings(slots=2, max_steps_cap=64)
    model = _slow(tiny_model("nqueens"), 0.02)
    runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    try:
        app = create_app(settings, runtime=runtime)
        body = {"task": "nqueens", "n": 8, "num_trajectories": 50, "max_steps": 64, "timeout_ms": 300}
        started = time.monotonic()
        response = call(app, "POST", "/solve", json=body)
        assert response.status_code == 200
        assert response.json()["complete"] is False
        assert time.monotonic() - started < 10
    finally:
        runtime.stop()


def test_a_full_queue_gets_429_with_retry_after() -> None:
    settings = Settings(slots=1, max_queue=2, max_steps_cap=64)
    model = _slow(tiny_model("nqueens"), 0.02)
    runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    try:
        app = create_app(settings, runtime=runtime)
        body = {"task": "nqueens", "n": 8, "num_trajectories": 2, "max_steps": 10}

        async def burst() -> list[httpx.Response]:
            return await asyncio.gather(*[_request(app, "POST", "/solve", json=body) for _ in range(6)])

        statuses = sorted(r.status_code for r in asyncio.run(burst()))
        assert statuses.count(200) >= 2 and 429 in statuses and set(statuses) <= {200, 429}
        rejected = next(r for r in asyncio.run(burst()) if r.status_code == 429)
        assert int(rejected.headers["Retry-After"]) >= 1 and "full" in detail(rejected)
    finally:
        runtime.stop()


def test_a_request_whose_deadline_the_queue_would_make_it_miss_gets_429_at_once() -> None:
    """At several times capacity, requests the queue ahead would make late are refused with a Retry-After
    from the measured pace; those accepted are answered within their deadline."""
    settings = Settings(slots=2, max_queue=64, max_steps_cap=64)
    model = _slow(tiny_model("nqueens"), 0.02)  # ~100 slot-steps/s
    runtime = Runtime.from_models(settings, {"nq": (model, get_task("nqueens"))})
    body = {"task": "nqueens", "n": 8, "num_trajectories": 4, "max_steps": 8, "stall_patience": 0}
    try:
        app = create_app(settings, runtime=runtime)
        assert call(app, "POST", "/solve", json=body).json()["complete"]  # measures the pace

        async def burst() -> list[httpx.Response]:
            timed = {**body, "timeout_ms": 1500}  # ~0.3 s of work each: room for about 4
            return await asyncio.gather(*[_request(app, "POST", "/solve", json=timed) for _ in range(16)])

        started = time.monotonic()
        responses = asyncio.run(burst())
        took = time.monotonic() - started
    finally:
        runtime.stop()
    refused = [r for r in responses if r.status_code == 429]
    answered = [r.json() for r in responses if r.status_code == 200]
    assert len(refused) + len(answered) == 16 and refused and answered
    assert all(r.json()["detail"][0]["type"] == "deadline" for r in refused), refused[0].text
    assert "deadline" in detail(refused[0]) and int(refused[0].headers["Retry-After"]) >= 1
    assert sum(a["complete"] for a in answered) >= 0.9 * len(answered), answered
    assert took < 3.0


def test_a_task_without_a_model_gets_503() -> None:
    settings = Settings(slots=2)
    runtime = Runtime.from_models(settings, {"nq": (tiny_model("nqueens"), get_task("nqueens"))})
    try:
        app = create_app(settings, runtime=runtime)
        response = call(app, "POST", "/solve", json={"task": "sudoku", "puzzle": SUDOKU})
        assert response.status_code == 503 and "sudoku" in detail(response)
    finally:
        runtime.stop()


def test_openapi_has_an_example_per_task(app: Any) -> None:
    spec = call(app, "GET", "/openapi.json").json()
    examples = spec["paths"]["/solve"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {e["value"]["task"] for e in examples.values()} == {"sudoku", "nqueens", "graph_coloring"}
    for example in examples.values():
        assert call(app, "POST", "/solve", json={**example["value"], "num_trajectories": 2,
                                                 "max_steps": 1}).status_code == 200


def test_readyz_is_503_until_the_models_are_loaded(tmp_path: Any) -> None:
    settings = Settings(weights_dir=tmp_path)  # an empty folder: loading fails
    runtime = Runtime(settings)
    app = create_app(settings, runtime=runtime)
    loading = call(app, "GET", "/readyz")
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    assert call(app, "GET", "/healthz").status_code == 200
    runtime.load()
    failed = call(app, "GET", "/readyz")
    assert failed.status_code == 503 and failed.json()["status"] == "error"
    assert "no *.safetensors" in failed.json()["detail"]


def test_readyz_reports_each_models_start_up_stage(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While loading, /readyz names each model's stage (queued / loading / preparing / warming) and how
    long it has been in it; a user waiting on a cold start sees what it is doing."""
    import threading

    from model.checkpoint import save_checkpoint
    from service.engine import Engine

    for task in ("nqueens", "sudoku"):
        save_checkpoint(tiny_model(task), tmp_path / f"{task}.safetensors", card={})
    release = threading.Event()
    warming = threading.Event()
    real_warmup = Engine.warmup

    def held_warmup(self: Engine) -> None:
        warming.set()
        release.wait(60)
        real_warmup(self)

    monkeypatch.setattr(Engine, "warmup", held_warmup)
    settings = Settings(weights_dir=tmp_path, slots=4)
    runtime = Runtime(settings)
    app = create_app(settings, runtime=runtime)
    loader = threading.Thread(target=runtime.load)
    loader.start()
    try:
        assert warming.wait(120)
        body = call(app, "GET", "/readyz").json()
        stages = {m["name"]: m["stage"] for m in body["progress"]}
        assert body["status"] == "loading" and stages == {"nqueens": "warming", "sudoku": "queued"}
        assert all(m["elapsed_s"] >= 0 for m in body["progress"])
    finally:
        release.set()
        loader.join(120)
    assert call(app, "GET", "/readyz").status_code == 200
    assert {m["stage"] for m in runtime.progress()} == {"ready"}
    runtime.stop()
