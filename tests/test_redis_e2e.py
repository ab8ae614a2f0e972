"""Redis mode end to end: a real redis-server, `gram serve` (no model loaded) and two `gram worker`
processes, all on loopback ports, stopped by pid.

- 100 mixed requests answered correctly (every solution checked here against its own request, and the
  seeded answers equal an embedded, in-process service's answers on the same checkpoints);
- a repeated seeded request is answered from the result cache;
- Redis stopped: the API answers 503 fast and /readyz says why; Redis back: served again, same API process;
- a worker SIGKILLed mid-job loses nothing: the other worker re-claims the job and the client gets one
  answer, the same as an undisturbed run (this test runs last: it leaves one worker).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.test_redis_harness import (
    Server,
    gram_env,
    start_api,
    start_redis,
    start_worker,
    wait_ready,
    wait_until,
    weights_dir,
)

pytestmark = pytest.mark.timeout(240)

SUDOKU_GRID = [[(r * 3 + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)]
VOLATILE = ("elapsed_ms", "cached", "job_id")  # timing, where the answer came from, the random job id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("redis-e2e")
    servers: list[Server] = []
    try:
        rds = start_redis(tmp)
        servers.append(rds)
        weights = weights_dir(tmp)
        env = gram_env(f"redis://127.0.0.1:{rds.port}/0", weights)
        workers = [start_worker(tmp, env, f"worker{i}") for i in range(2)]
        api = start_api(tmp, env)
        servers += [*workers, api]
        wait_ready(api, workers)
        state = {"tmp": tmp, "redis": rds, "workers": workers, "api": api, "env": env, "weights": weights}
        yield state
        servers.append(state["redis"])  # a test may have replaced it (restarted)
    finally:
        for server in reversed(servers):
            server.stop()


def _url(api: Server, path: str) -> str:
    return f"http://127.0.0.1:{api.port}{path}"


# -- requests and an independent check of every answer ---------------------------------------------------


def _requests(count: int, rng: random.Random) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for i in range(count):
        kind = ("sudoku", "nqueens", "graph_coloring")[i % 3]
        common: dict[str, Any] = {"num_trajectories": rng.choice([2, 4, 6]),
                                  "max_steps": rng.choice([2, 3, 4])}
        if rng.random() < 0.7:
            common["seed"] = rng.randrange(10**6)
        if kind == "sudoku":
            cells = [str(v) for row in SUDOKU_GRID for v in row]
            for j in rng.sample(range(81), rng.randint(4, 20)):
                cells[j] = "."
            bodies.append({"task": "sudoku", "puzzle": "".join(cells), **common})
        elif kind == "nqueens":
            n = rng.randint(4, 8)
            queens = [[0, 1]] if n == 4 else []
            bodies.append({"task": "nqueens", "n": n, "queens": queens, **common})
        else:
            n, k = rng.randint(4, 9), 3
            colour = [rng.randrange(k) for _ in range(n)]
            edges = [[u, v] for u in range(n) for v in range(u + 1, n)
                     if colour[u] != colour[v] and rng.random() < 0.5]
            bodies.append({"task": "graph_coloring", "num_nodes": n, "edges": edges, "num_colors": k,
                           "fixed": {"0": colour[0]}, **common})
    return bodies


def _check_solution(body: dict[str, Any], solution: Any) -> None:
    """Raise AssertionError unless ``solution`` solves ``body``'s puzzle (independent of the service)."""
    if body["task"] == "sudoku":
        assert isinstance(solution, str) and len(solution) == 81, solution
        grid = [[int(solution[9 * r + c]) for c in range(9)] for r in range(9)]
        units = [grid[r] for r in range(9)] + [[grid[r][c] for r in range(9)] for c in range(9)]
        units += [[grid[3 * br + r][3 * bc + c] for r in range(3) for c in range(3)]
                  for br in range(3) for bc in range(3)]
        assert all(sorted(u) == list(range(1, 10)) for u in units), solution
        assert all(g in ".0" or g == s for g, s in zip(body["puzzle"], solution, strict=True))
    elif body["task"] == "nqueens":
        n, queens = body["n"], [tuple(q) for q in solution["queens"]]
        assert len(queens) == n and len({r for r, _ in queens}) == n and len({c for _, c in queens}) == n
        assert len({r - c for r, c in queens}) == n and len({r + c for r, c in queens}) == n
        assert {tuple(q) for q in body["queens"]} <= set(queens)
        assert all(0 <= r < n and 0 <= c < n for r, c in queens)
    else:
        colors = solution["colors"]
        assert len(colors) == body["num_nodes"] and all(0 <= c < body["num_colors"] for c in colors)
        assert all(colors[u] != colors[v] for u, v in body["edges"])
        assert all(colors[int(node)] == c for node, c in body.get("fixed", {}).items())


async def _post_all(url: str, bodies: list[dict[str, Any]], concurrency: int = 16) -> list[httpx.Response]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120) as client:
        async def one(body: dict[str, Any]) -> httpx.Response:
            async with limit:
                return await client.post(url, json=body)

        return await asyncio.gather(*[one(b) for b in bodies])


@pytest.fixture(scope="module")
def embedded(stack: dict[str, Any]) -> Iterator[Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]:
    """Answers from an embedded (in-process, no Redis) service on the same checkpoints: the reference."""
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings

    settings = Settings(weights_dir=stack["weights"], models=stack["env"].get("GRAM_MODELS", ""),
                        queue_url=None)
    runtime = Runtime(settings)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRAM_CPU_PATH", stack["env"]["GRAM_CPU_PATH"])  # the workers' numerics, for equal answers
        runtime.load()
    assert runtime.error is None, runtime.error
    app = create_app(settings, runtime=runtime)

    def answer(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async def run() -> list[dict[str, Any]]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://embedded", timeout=120) as c:
                return [(await c.post("/solve", json=b)).json() for b in bodies]

        return asyncio.run(run())

    yield answer
    runtime.stop()


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal in everything that must not depend on the process or batch that computed it: all but timing
    and the cache flag; solutions keyed by content (the order among equal counts may follow float noise
    in the scores) and scores to 1e-3 (a batch of another size may round differently)."""
    def split(answer: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[int, int]], dict[str, float]]:
        rest = {k: v for k, v in answer.items() if k not in VOLATILE and k != "solutions"}
        keys = {json.dumps(s["solution"], sort_keys=True): s for s in answer["solutions"]}
        return rest, {k: (s["count"], s["first_step"]) for k, s in keys.items()}, {
            k: s["score"] for k, s in keys.items()}

    (got_rest, got_sol, got_score), (want_rest, want_sol, want_score) = split(got), split(want)
    assert got_rest == want_rest and got_sol == want_sol
    assert got_score == pytest.approx(want_score, abs=1e-3)


# -- the tests ---------------------------------------------------------------------------------------------


def test_the_answer_check_accepts_exact_solutions_and_rejects_broken_ones() -> None:
    """The check above must be right for the e2e test to mean anything (untrained models rarely solve)."""
    from model.tasks.registry import get_task

    for body in _requests(12, random.Random(1)):
        task = get_task(body["task"])
        instance = task.parse({k: v for k, v in body.items() if k not in ("num_trajectories", "max_steps",
                                                                             "seed")})
        solutions = [task.format(instance, y) for y in task.solve(instance, 3)]
        assert solutions
        for solution in solutions:
            _check_solution(body, solution)
        broken = json.loads(json.dumps(solutions[0]))
        if body["task"] == "sudoku":
            broken = broken[1] + broken[0] + broken[2:] if broken[0] != broken[1] else "1" * 81
        elif body["task"] == "nqueens":
            broken["queens"][0][1] = broken["queens"][1][1]
        else:
            u, v = body["edges"][0] if body["edges"] else (0, 0)
            broken["colors"][u] = broken["colors"][v] if body["edges"] else body["num_colors"]
        with pytest.raises(AssertionError):
            _check_solution(body, broken)


def test_100_mixed_requests_through_two_workers_are_answered_correctly(
    stack: dict[str, Any], embedded: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    rng = random.Random(6)
    bodies = _requests(100, rng)
    started = time.monotonic()
    responses = asyncio.run(_post_all(_url(stack["api"], "/solve"), bodies))
    took = time.monotonic() - started
    failed = [r.text for r in responses if r.status_code != 200]
    assert not failed, failed
    found = 0
    for body, response in zip(bodies, responses, strict=True):
        answer = response.json()
        assert answer["task"] == body["task"] and answer["complete"] is True
        assert 1 <= answer["num_trajectories"] <= body["num_trajectories"]
        if "seed" in body:
            assert answer["seed"] == body["seed"]
        for sol in answer["solutions"]:
            _check_solution(body, sol["solution"])
            found += 1
    client = redis.Redis(port=stack["redis"].port)
    assert client.xlen("gram:jobs:" + responses[0].json()["model"]) == 0  # nothing left behind
    # The seeded answers are exactly what an embedded service gives (routing and determinism).
    seeded = [(b, r.json()) for b, r in zip(bodies, responses, strict=True) if "seed" in b][:15]
    expected = embedded([b for b, _ in seeded])
    for (_body, got), want in zip(seeded, expected, strict=True):
        _assert_same(got, want)
    for worker in stack["workers"]:  # the load was shared
        text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).text
        finished = sum(float(line.split()[-1]) for line in text.splitlines()
                       if line.startswith("gram_jobs_total{"))
        assert finished > 0, f"{worker.name} ran no job"
    print(f"100 mixed requests in {took:.2f} s, {found} verified solutions")


def test_models_lists_what_the_workers_serve(stack: dict[str, Any]) -> None:
    cards = httpx.get(_url(stack["api"], "/models"), timeout=10).json()["models"]
    assert sorted(c["task"] for c in cards) == ["graph_coloring", "nqueens", "sudoku"]
    assert all(c["ready"] and c["n_sup"] >= 1 and c["slots"] >= 1 for c in cards)


def test_repeated_seeded_request_is_answered_from_the_cache(stack: dict[str, Any]) -> None:
    url = _url(stack["api"], "/solve")
    body = {"task": "nqueens", "n": 6, "queens": [], "num_trajectories": 4, "max_steps": 3, "seed": 4242}
    first = httpx.post(url, json=body, timeout=60).json()
    second = httpx.post(url, json=body, timeout=60).json()
    assert first["cached"] is False and second["cached"] is True
    _assert_same(second, first)
    unseeded = {k: v for k, v in body.items() if k != "seed"}
    again = [httpx.post(url, json=unseeded, timeout=60).json() for _ in range(2)]
    assert [a["cached"] for a in again] == [False, False]
    other_seed = httpx.post(url, json={**body, "seed": 4243}, timeout=60).json()
    assert other_seed["cached"] is False


def test_a_streamed_request_through_redis_ends_with_the_plain_answer(stack: dict[str, Any]) -> None:
    """Server-Sent Events from `gram serve` in Redis mode: the worker's events relayed through Redis, the
    done event the non-streamed answer, and no event stream left behind."""
    url = _url(stack["api"], "/solve")
    body = {"task": "graph_coloring", "num_nodes": 5, "num_colors": 3, "edges": [[0, 1], [1, 2], [2, 3],
            [3, 4], [4, 0]], "num_trajectories": 8, "max_steps": 4, "seed": 5151}
    events = []
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and "progress" in kinds, kinds
    done = events[-1][1]
    assert done["cached"] is False  # it ran on a worker: its events came through Redis
    streamed = [json.dumps(d["solution"], sort_keys=True) for k, d in events if k == "solution"]
    assert {json.dumps(s["solution"], sort_keys=True) for s in done["solutions"]} <= set(streamed)
    assert len(streamed) == len(set(streamed)) == events[-2][1]["distinct"]
    plain = httpx.post(url, json=body, timeout=60).json()
    _assert_same(plain, done)
    assert not redis.Redis(port=stack["redis"].port).keys("gram:events:*")


def test_redis_outage_gives_fast_503s_and_the_api_recovers_by_itself(stack: dict[str, Any]) -> None:
    api, rds = stack["api"], stack["redis"]
    api_pid = api.pid
    body = {"task": "nqueens", "n": 5, "queens": [], "num_trajectories": 2, "max_steps": 2, "seed": 1}
    rds.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            response = httpx.post(_url(api, "/solve"), json=body, timeout=30)
            assert response.status_code == 503, response.text
            assert time.monotonic() - started < 3.0
            assert "Redis" in response.text
        ready = wait_until(lambda: (r := httpx.get(_url(api, "/readyz"), timeout=5)).status_code == 503 and r,
                           5, "/readyz to report the outage")
        assert "Redis" in ready.json()["detail"]
    finally:
        restarted = start_redis(stack["tmp"], port=rds.port)
        stack["redis"] = restarted
    wait_until(lambda: httpx.get(_url(api, "/readyz"), timeout=5).status_code == 200, 20, "/readyz back")
    assert httpx.get(_url(api, "/readyz"), timeout=5).json()["models"]  # the workers' models
    response = httpx.post(_url(api, "/solve"), json={**body, "seed": 2}, timeout=60)
    assert response.status_code == 200, response.text
    assert api.alive() and api.pid == api_pid  # recovered without a restart


def test_worker_killed_mid_job_loses_no_job(
    stack: dict[str, Any], embedded: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    api, rds = stack["api"], stack["redis"]
    client = redis.Redis(port=rds.port)
    model = next(m for m, info in _served(client).items() if info["task"] == "nqueens")
    stream = f"gram:jobs:{model}"
    # A 12x12 board with queens at (0, 0) and (1, 2): the shipped checkpoint neither solves it nor halts on
    # it (q_halt < 0 at every step), so every trajectory runs for max_steps. (An unsolvable 4x4 board no
    # longer works: the halting head fires on it at the first step.) A short probe times a step of this
    # model here, and max_steps is chosen for about 2 s of work: long enough to kill the worker mid-job,
    # short enough to run twice.
    body = {"task": "nqueens", "n": 12, "queens": [[0, 0], [1, 2]], "num_trajectories": 32, "max_steps": 4,
            "seed": 77}
    started = time.monotonic()
    assert httpx.post(_url(api, "/solve"), json={**body, "seed": 78}, timeout=120).status_code == 200
    per_step = (time.monotonic() - started) / 4
    body["max_steps"] = int(min(256, max(8, 2.0 / per_step)))
    pids = {w.pid: w for w in stack["workers"]}

    async def scenario() -> tuple[httpx.Response, Server]:
        async with httpx.AsyncClient(timeout=120) as http:
            request = asyncio.create_task(http.post(_url(api, "/solve"), json=body))

            def running_on() -> Server | None:
                pending = client.xpending_range(stream, "gram-engines", "-", "+", 10)
                if not pending:
                    return None
                consumer = pending[0]["consumer"].decode()
                info = json.loads(client.get(f"gram:worker:{consumer}") or "{}")
                return pids.get(info.get("pid"))

            victim = await asyncio.to_thread(wait_until, running_on, 30, "the job to start on a worker", 0.01)
            await asyncio.sleep(0.2)  # well inside the job (it runs for seconds)
            assert not request.done(), "the job finished before the kill: make it longer"
            victim.kill()
            return await request, victim

    response, victim = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["complete"] is True and answer["num_trajectories"] == 32
    assert not victim.alive()
    # answered once: nothing pending, no duplicate result waiting, nothing dead-lettered
    assert client.xlen(stream) == 0
    assert client.xpending(stream, "gram-engines")["pending"] == 0
    assert list(client.scan_iter("gram:result:*")) == []
    assert client.xlen(f"gram:dead:{model}") == 0
    # the answer is the undisturbed one
    (want,) = embedded([body])
    _assert_same(answer, want)
    survivor = next(w for w in stack["workers"] if w is not victim)
    assert "re-claimed entry" in survivor.log.read_text()


def _served(client: redis.Redis) -> dict[str, dict[str, Any]]:
    registrations = [json.loads(v) for v in client.mget(list(client.scan_iter("gram:worker:*"))) if v]
    return {name: info for r in registrations for name, info in r["models"].items()}
