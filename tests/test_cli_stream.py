"""`gram solve --stream`: the live view in process and against a server (``--url``) ends with the same answer
as the plain command (tiny deterministic checkpoints, fp32)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
# an edgeless graph: any colouring is valid, so even an untrained model finds several
REQUEST = ["--task", "graph_coloring", "--num-nodes", "3", "--num-colors", "3", "--edges", "[]",
           "--num-trajectories", "16", "--seed", "2", "--max-steps", "4", "--max-solutions", "20",
           "--temperature", "3.0"]


@pytest.fixture(autouse=True)
def _fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAM_CPU_PATH", "fp32")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.checkpoint import save_checkpoint
    from model.gram import tiny_model

    folder = tmp_path_factory.mktemp("weights")
    save_checkpoint(tiny_model("graph_coloring", seed=7), folder / "graph_coloring.safetensors")
    return folder


def answer(output: str) -> dict[str, Any]:
    body = json.loads(output)
    body.pop("elapsed_ms")
    body.pop("job_id", None)  # each run its own job
    return body


def test_solve_stream_in_process_gives_the_plain_answer(weights: Path) -> None:
    args = ["solve", *REQUEST, "--weights-dir", str(weights), "--json"]
    plain = runner.invoke(app, args)
    streamed = runner.invoke(app, [*args, "--stream"])
    assert plain.exit_code == streamed.exit_code == 0, streamed.output
    assert answer(streamed.stdout) == answer(plain.stdout)
    assert answer(plain.stdout)["solutions"], "the request should find solutions"
    table = runner.invoke(app, ["solve", *REQUEST, "--weights-dir", str(weights), "--stream"])
    assert table.exit_code == 0 and "solutions" in table.output and "complete=True" in table.output


@pytest.fixture(scope="module")
def server(weights: Path) -> Iterator[str]:
    from model.checkpoint import load_checkpoint
    from model.tasks.registry import get_task
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings
    from tests.test_streaming import ThreadServer

    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRAM_CPU_PATH", "fp32")
        settings = Settings(slots=8)
        model = load_checkpoint(weights / "graph_coloring.safetensors", "cpu")
        runtime = Runtime.from_models(settings, {"graph_coloring": (model, get_task("graph_coloring"))})
    try:
        with ThreadServer(create_app(settings, runtime=runtime)) as started:
            yield started.url
    finally:
        runtime.stop()


def test_solve_stream_with_url_gives_the_servers_answer(server: str) -> None:
    plain = runner.invoke(app, ["solve", *REQUEST, "--url", server, "--json"])
    streamed = runner.invoke(app, ["solve", *REQUEST, "--url", server, "--json", "--stream"])
    assert plain.exit_code == streamed.exit_code == 0, streamed.output
    assert answer(streamed.stdout) == answer(plain.stdout)
    bad = ["--task", "graph_coloring", "--num-nodes", "3", "--num-colors", "3", "--edges", "[[0, 7]]"]
    refused = runner.invoke(app, ["solve", *bad, "--url", server, "--stream"])
    assert refused.exit_code == 2 and "422" in refused.output
