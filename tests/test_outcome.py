"""What an empty answer means: exact feasibility checks, the trained-range note, and /solve's status,
hint and outside_trained_range (in-process, tiny random models: they find nothing, so every answer is
empty and the status comes from the checks alone)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from model.gram import tiny_model
from model.tasks.feasibility import has_solution
from model.tasks.registry import get_task
from model.trained_range import outside
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings

PETERSEN = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0], [0, 5], [1, 6], [2, 7], [3, 8], [4, 9],
            [5, 7], [7, 9], [9, 6], [6, 8], [8, 5]]
# No repeated given, yet no solution: row 0 needs a 9 and its only free cell's column already has one.
SUDOKU_DEAD = "12345678." + "........9" + "." * 63
SUDOKU_OK = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


def _instance(task: str, **body: Any) -> Any:
    return get_task(task).parse(body)


@pytest.mark.parametrize(("body", "expected"), [
    ({"num_nodes": 10, "edges": PETERSEN, "num_colors": 2}, False),  # odd cycles: not bipartite
    ({"num_nodes": 10, "edges": PETERSEN, "num_colors": 3}, True),
    ({"num_nodes": 4, "edges": [[a, b] for a in range(4) for b in range(a + 1, 4)], "num_colors": 3}, False),
    ({"num_nodes": 3, "edges": [[0, 1], [1, 2]], "num_colors": 2, "fixed": {"0": 0, "2": 1}}, False),
])
def test_coloring_feasibility(body: dict[str, Any], expected: bool) -> None:
    assert has_solution(_instance("graph_coloring", **body)) is expected


def test_nqueens_and_sudoku_feasibility() -> None:
    assert has_solution(_instance("nqueens", n=4, queens=[[0, 0]])) is False  # 4x4: corners never
    assert has_solution(_instance("nqueens", n=4, queens=[[0, 1]])) is True
    assert has_solution(_instance("nqueens", n=12)) is True
    assert has_solution(_instance("sudoku", puzzle=SUDOKU_DEAD)) is False
    assert has_solution(_instance("sudoku", puzzle=SUDOKU_OK)) is True
    assert has_solution(_instance("sudoku", puzzle="." * 81)) is True


def test_feasibility_budget_never_guesses() -> None:
    """Out of search nodes, the check says 'undecided', never 'infeasible'."""
    assert has_solution(_instance("sudoku", puzzle=SUDOKU_DEAD), max_nodes=1) is False  # decided at once
    assert has_solution(_instance("sudoku", puzzle="." * 81), max_nodes=40) is None
    petersen2 = _instance("graph_coloring", num_nodes=10, edges=PETERSEN, num_colors=2)
    assert has_solution(petersen2, max_nodes=3) is None


def test_trained_range() -> None:
    assert outside(_instance("sudoku", puzzle=SUDOKU_OK)) is None
    note = outside(_instance("sudoku", puzzle="." * 81))
    assert note is not None and "0 givens" in note
    assert outside(_instance("nqueens", n=8)) is None  # empty 8x8 boards are trained on
    assert outside(_instance("nqueens", n=6, queens=[[0, 1], [1, 3], [2, 5], [3, 0]])) is not None
    cycle = [[i, (i + 1) % 5] for i in range(5)]
    assert outside(_instance("graph_coloring", num_nodes=5, edges=cycle, num_colors=3)) is None
    pinned = _instance("graph_coloring", num_nodes=5, edges=cycle, num_colors=4, fixed={"0": 1})
    assert outside(pinned) is not None


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    settings = Settings(slots=8, max_trajectories=64, max_steps_cap=16)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRAM_CPU_PATH", "fp32")
        models = {t: (tiny_model(t), get_task(t)) for t in ("sudoku", "nqueens", "graph_coloring")}
        models["sudoku"][0].card = {"input_range": "unique puzzles with 21+ givens"}
        runtime = Runtime.from_models(settings, models)
    yield create_app(settings, runtime=runtime)
    runtime.stop()


def _solve(app: Any, body: dict[str, Any]) -> dict[str, Any]:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            common = {"num_trajectories": 4, "max_steps": 2, "seed": 1}
            return await client.post("/solve", json={**common, **body})

    response = asyncio.run(go())
    assert response.status_code == 200, response.text
    return response.json()


def test_infeasible_request_says_so(app: Any) -> None:
    out = _solve(app, {"task": "graph_coloring", "num_nodes": 10, "edges": PETERSEN, "num_colors": 2})
    assert out["solutions"] == [] and out["status"] == "infeasible"
    assert "no solution exists" in out["hint"]


def test_not_found_gives_a_hint(app: Any) -> None:
    out = _solve(app, {"task": "nqueens", "n": 8})
    assert out["status"] == "not_found" and out["solutions"] == []
    assert "solutions exist" in out["hint"] and "num_trajectories 16" in out["hint"]
    assert out["outside_trained_range"] is None  # the tiny model's card states no range


def test_outside_trained_range_is_a_note_not_a_refusal(app: Any) -> None:
    out = _solve(app, {"task": "sudoku", "puzzle": "." * 81})
    assert out["status"] == "not_found"
    assert "0 givens" in out["outside_trained_range"]
    assert "outside the model's training range" in out["hint"]


def test_models_report_trained_range(app: Any) -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/models")

    cards = {m["name"]: m for m in asyncio.run(go()).json()["models"]}
    assert cards["sudoku"]["trained_range"] == "unique puzzles with 21+ givens"
    assert cards["nqueens"]["trained_range"] is None


def test_seeds_stay_json_safe(app: Any) -> None:
    out = _solve(app, {"task": "nqueens", "n": 6, "seed": None})
    assert 0 <= out["seed"] < 2**53

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/solve", json={"task": "nqueens", "n": 6, "seed": 2**53})

    response = asyncio.run(go())
    assert response.status_code == 422 and "seed" in response.text
