"""`gram solve` and `gram sample` in-process (typer's CliRunner) on tiny random checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.checkpoint import save_checkpoint
    from model.gram import tiny_model

    folder = tmp_path_factory.mktemp("weights")
    for task in ("nqueens", "mnist"):
        save_checkpoint(tiny_model(task), folder / f"{task}.safetensors")
    return folder


def test_gram_lists_its_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "solve", "sample"):
        assert command in result.output


def test_solve_prints_json_with_the_contract_fields(weights: Path) -> None:
    args = ["solve", "--task", "nqueens", "--n", "5", "--queens", "[[0, 0]]", "--seed", "3",
            "--num-trajectories", "3", "--max-steps", "2", "--weights-dir", str(weights), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["task"] == "nqueens" and body["model"] == "nqueens" and body["seed"] == 3
    assert body["num_trajectories"] == 3 and body["steps"] == 6 and body["complete"] is True


def test_solve_reads_a_request_file_and_prints_a_table(weights: Path, tmp_path: Path) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"task": "nqueens", "n": 4, "num_trajectories": 2, "max_steps": 1}))
    result = runner.invoke(app, ["solve", "--file", str(request), "--weights-dir", str(weights)])
    assert result.exit_code == 0, result.output
    assert "nqueens" in result.output and "complete=True" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task", "nqueens", "--n", "3"], "'n' = 3"),
        (["--task", "chess"], "chess"),
        (["--task", "nqueens", "--n", "8", "--queens", "[[0, 0], [1, 1]]"], "attack"),
        (["--task", "sudoku", "--puzzle", "1" * 81], "no checkpoint"),
    ],
)
def test_solve_reports_bad_input_with_exit_code_2(weights: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["solve", *args, "--weights-dir", str(weights)])
    assert result.exit_code == 2
    assert needle in result.output


def test_sample_writes_a_png_grid(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["sample", "--n", "3", "--steps", "2", "--seed", "1", "--out", str(out),
                                 "--weights-dir", str(weights)])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 28 * 3
