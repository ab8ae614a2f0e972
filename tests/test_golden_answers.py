"""Golden answers: the full /solve and /sample response bodies for a few seeded requests per family, served
in process by tiny deterministic models (``tiny_model(task, seed=...)``, not the shipped checkpoints, which
change when a model is retrained).

A restructure of the data path must leave these byte-identical (``elapsed_ms`` aside: it is wall time; and the
random ``job_id``).
Record again only for an intended change of answers:

    GRAM_GOLDEN_RECORD=1 .venv/bin/python -m pytest tests/test_golden_answers.py
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.gram import tiny_model
from model.tasks.registry import get_task
from service.app import create_app
from service.runtime import Runtime
from service.settings import BatchingMode, Settings

GOLDEN = Path(__file__).parent / "data" / "golden_answers.json"
TASKS = ("sudoku", "nqueens", "graph_coloring", "mnist")
SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"

# (name, path, body). Untrained models answer noise, so the solve requests verify against what a random
# network can produce: max_steps small, widths small; nothing here depends on quality.
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("sudoku-string", "/solve", {"task": "sudoku", "puzzle": SUDOKU, "num_trajectories": 4, "seed": 3,
                                 "max_steps": 3}),
    ("sudoku-grid", "/solve", {"task": "sudoku", "puzzle": [[0] * 9 for _ in range(9)], "seed": 11,
                               "num_trajectories": 3, "max_steps": 2, "max_solutions": 2}),
    ("nqueens-4", "/solve", {"task": "nqueens", "n": 4, "num_trajectories": 12, "seed": 0, "max_steps": 4}),
    ("nqueens-6", "/solve", {"task": "nqueens", "n": 6, "queens": [[0, 1]], "num_trajectories": 8,
                             "seed": 5, "max_steps": 3, "temperature": 2.0, "stall_patience": 0}),
    # no edges: any colouring is valid, so even an untrained model finds solutions (counts, scores, order)
    ("coloring-free", "/solve", {"task": "graph_coloring", "num_nodes": 3, "num_colors": 3, "edges": [],
                                 "num_trajectories": 16, "seed": 2, "max_steps": 4, "max_solutions": 20,
                                 "temperature": 3.0}),
    ("coloring-free-3", "/solve", {"task": "graph_coloring", "num_nodes": 4, "num_colors": 4, "edges": [],
                                   "num_trajectories": 24, "seed": 8, "max_steps": 5, "max_solutions": 3,
                                   "temperature": 6.0}),
    ("coloring-path", "/solve", {"task": "graph_coloring", "num_nodes": 3, "num_colors": 3,
                                 "edges": [[0, 1], [1, 2]], "num_trajectories": 16, "seed": 2,
                                 "max_steps": 4, "max_solutions": 20}),
    ("coloring-cycle", "/solve", {"task": "graph_coloring", "num_nodes": 5, "num_colors": 3,
                                  "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]], "fixed": {"0": 0},
                                  "num_trajectories": 8, "seed": 9, "max_steps": 3}),
    ("mnist-bits", "/sample", {"n": 2, "seed": 4, "steps": 2, "format": "bits"}),
    ("mnist-png", "/sample", {"n": 3, "seed": 1, "steps": 3, "format": "png", "temperature": 0.5}),
]
MODES = (BatchingMode.continuous, BatchingMode.request)


@pytest.fixture(autouse=True)
def _fp32_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # fp32 eager: GRAM_CPU_PATH=auto picks the fastest path by timing, and bf16 samples other answers
    monkeypatch.setenv("GRAM_CPU_PATH", "fp32")


def _app(mode: BatchingMode) -> Iterator[Any]:
    settings = Settings(slots=8, batching=mode)
    models = {t: (tiny_model(t, seed=7), get_task(t)) for t in TASKS}
    runtime = Runtime.from_models(settings, models)
    try:
        yield create_app(settings, runtime=runtime)
    finally:
        runtime.stop()


async def _answers(app: Any) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name, path, body in REQUESTS:
            response = await client.post(path, json=body)
            assert response.status_code == 200, (name, response.text)
            data = response.json()
            data.pop("elapsed_ms")
            data.pop("job_id")
            out[name] = {"status": response.status_code, "body": data}
    return out


def _recorded() -> dict[str, Any]:
    answers = {}
    for mode in MODES:
        for app in _app(mode):
            answers[mode.value] = asyncio.run(_answers(app))
    return answers


def test_seeded_answers_are_byte_identical_to_the_recording() -> None:
    answers = _recorded()
    text = json.dumps(answers, indent=1, sort_keys=True) + "\n"
    if os.environ.get("GRAM_GOLDEN_RECORD"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    golden = GOLDEN.read_text()
    assert text == golden
    # the recording must be worth something: some solve request found solutions
    assert any(a["body"].get("solutions") for mode in answers.values() for a in mode.values())


def test_the_openapi_schema_is_unchanged() -> None:
    """The public API's schema (request unions, examples, response models): a restructure keeps it."""
    golden = GOLDEN.with_name("golden_openapi.json")
    app = create_app(Settings(), runtime=Runtime.from_models(Settings(), {}))
    text = json.dumps(app.openapi(), indent=1, sort_keys=True) + "\n"
    if os.environ.get("GRAM_GOLDEN_RECORD"):
        golden.write_text(text)
    assert text == golden.read_text()
