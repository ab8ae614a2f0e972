"""`POST /solve` with ``render``: each solution carries its picture (base64 PNG or SVG text), documented in
the OpenAPI schema; without ``render`` the response has no ``picture`` field at all. A scripted queue
answers, so no model runs."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.jobs import Job, Outcome, Result, Solution
from service.queues import ModelInfo, QueueStatus
from service.render import coloring, nqueens
from service.settings import Settings

QUEENS = [[0, 0], [1, 4], [2, 7], [3, 5], [4, 2], [5, 6], [6, 1], [7, 3]]
BOARD = {"queens": QUEENS, "board": ["".join("Q" if c == q else "." for c in range(8)) for _, q in QUEENS]}
ANSWERS: dict[str, list[Any]] = {
    "nqueens": [BOARD],
    "graph_coloring": [{"colors": [0, 1, 0, 1, 2]}, {"colors": [0, 2, 0, 2, 1]}],
    "sudoku": ["534678912672195348198342567859761423426853791713924856961537284287419635345286179"],
}
CYCLE = {"task": "graph_coloring", "num_nodes": 5, "num_colors": 3,
         "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]], "fixed": {"0": 0}, "seed": 0}


class ScriptedQueue:
    """A JobQueue whose every job is answered at once with ANSWERS[task]."""

    def start(self) -> None:
        pass

    async def submit(self, job: Job) -> Result:
        solutions = [Solution(s, -1.0, 1, 1) for s in ANSWERS[job.task]]
        return Result(job.id, job.model, job.task, Outcome.complete, solutions, num_trajectories=1, steps=1)

    def status(self) -> QueueStatus:
        return QueueStatus(ready=True, models=sorted(ANSWERS))

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=task, task=task, n_sup=8) for task in ANSWERS]

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(), queue=ScriptedQueue())) as c:
        yield c


def test_without_render_solutions_have_no_picture_field(client: TestClient) -> None:
    response = client.post("/solve", json=CYCLE)
    assert response.status_code == 200
    assert all("picture" not in s for s in response.json()["solutions"])


def test_render_svg_colours_each_node_as_the_solution_says(client: TestClient) -> None:
    response = client.post("/solve", json={**CYCLE, "render": "svg"})
    assert response.status_code == 200, response.text
    solutions = response.json()["solutions"]
    assert len(solutions) == 2
    for s in solutions:
        root = ET.fromstring(s["picture"])
        nodes = sorted(root.iter("{http://www.w3.org/2000/svg}circle"), key=lambda e: int(e.get("data-node")))
        assert [e.get("fill") for e in nodes] == [coloring.PALETTE[c] for c in s["solution"]["colors"]]


def test_render_png_draws_the_queens_of_the_answer(client: TestClient) -> None:
    body = {"task": "nqueens", "n": 8, "queens": [[0, 0], [1, 4]], "render": "png"}
    response = client.post("/solve", json=body)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["solutions"][0]["picture"])))
    assert image.format == "PNG" and image.size == (8 * nqueens.CELL + 2 * nqueens.MARGIN,) * 2
    image = image.convert("RGB")
    for r, c in BOARD["queens"]:
        x = nqueens.MARGIN + c * nqueens.CELL + nqueens.CELL // 2
        y = nqueens.MARGIN + r * nqueens.CELL + nqueens.CELL // 2 - int(nqueens.CELL * 0.28)
        queen = nqueens.GIVEN_QUEEN if [r, c] in body["queens"] else nqueens.FOUND_QUEEN
        expected = tuple(int(queen[i : i + 2], 16) for i in (1, 3, 5))
        assert all(abs(a - b) <= 24 for a, b in zip(image.getpixel((x, y)), expected, strict=True)), (r, c)


def test_an_unknown_render_format_gets_422(client: TestClient) -> None:
    response = client.post("/solve", json={**CYCLE, "render": "gif"})
    assert response.status_code == 422
    assert "render" in response.text


def test_the_schema_documents_render_and_picture(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    render = schemas["SudokuRequest"]["properties"]["render"]
    assert {"png", "svg"} <= {v for option in render["anyOf"] for v in option.get("enum", [])}
    assert "picture" in render["description"]
    assert "base64 PNG" in schemas["SolutionOut"]["properties"]["picture"]["description"]
