"""`gram solve` and `gram sample` in-process (typer's CliRunner) on tiny random checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    body = json.loads(result.stdout)
    assert body["task"] == "nqueens" and body["model"] == "nqueens" and body["seed"] == 3
    assert body["num_trajectories"] == 3 and body["steps"] == 6 and body["complete"] is True


def test_solve_reads_a_request_file_and_prints_the_answer(weights: Path, tmp_path: Path) -> None:
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


def test_sample_writes_a_png_grid_where_asked(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "new folder" / "digits.png"
    result = runner.invoke(app, ["sample", "--n", "3", "--steps", "2", "--seed", "1", "--png", str(out),
                                 "--weights-dir", str(weights)])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 28 * 3


# ---- answers as pictures, help and usage (a scripted server answers; no model runs) ----------------------

SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
SOLVED = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
ANSWERED = {
    "sudoku": (["--task", "sudoku", "--puzzle", SUDOKU], [SOLVED]),
    "nqueens": (["--task", "nqueens", "--n", "4", "--queens", "[[0, 1]]"],
                [{"queens": [[0, 1], [1, 3], [2, 0], [3, 2]], "board": [".Q..", "...Q", "Q...", "..Q."]}]),
    "graph_coloring": (["--task", "graph_coloring", "--num-nodes", "3", "--num-colors", "3",
                        "--edges", "[[0, 1], [1, 2], [2, 0]]"],
                       [{"colors": [0, 1, 2]}, {"colors": [0, 2, 1]}]),
}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--url` requests answered with ANSWERED[task]; the terminal 80 columns wide."""
    import importlib

    from rich.console import Console

    solve_module = importlib.import_module("service.cli.solve")

    def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answers = ANSWERED[body["task"]][1]
        solutions = [{"solution": s, "score": -0.5, "count": 3, "first_step": 2} for s in answers]
        return {"task": body["task"], "model": body["task"], "solutions": solutions, "complete": True,
                "num_trajectories": 8, "steps": 16, "elapsed_ms": 12.0, "seed": 0}

    monkeypatch.setattr(solve_module, "_post", post)
    monkeypatch.setattr(solve_module, "console", Console(width=80))


def test_solve_shows_the_whole_sudoku_grid_at_80_columns(scripted: None, tmp_path: Path) -> None:
    png = tmp_path / "pictures" / "sudoku.png"
    args = [*ANSWERED["sudoku"][0], "--url", "http://server", "--png", str(png)]
    result = runner.invoke(app, ["solve", *args])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    for r in range(9):
        row = SOLVED[r * 9 : r * 9 + 9]
        assert f"┃ {' '.join(row[:3])} ┃ {' '.join(row[3:6])} ┃ {' '.join(row[6:])} ┃" in result.output
    image = Image.open(png)
    assert image.format == "PNG" and image.size == (16 * 2 + 9 * 40 + 12,) * 2


def test_solve_draws_board_and_colours_and_writes_every_picture(scripted: None, tmp_path: Path) -> None:
    result = runner.invoke(app, ["solve", *ANSWERED["nqueens"][0], "--url", "http://server"])
    assert result.exit_code == 0, result.output
    assert "· ♛ · · \n· · · ♛ \n♛ · · · \n· · ♛ · " in result.output
    png = tmp_path / "colours.png"
    result = runner.invoke(app, ["solve", *ANSWERED["graph_coloring"][0], "--url", "http://server",
                                 "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "colors: 0 1 2" in result.output and "colors: 0 2 1" in result.output
    assert "node  2  2 green" in result.output and "2 distinct verified solutions" in result.output
    assert Image.open(png).size == (16 + 2 * (320 + 16), 16 + 348 + 16)  # two pictures side by side


def test_solve_help_shows_the_json_shapes_with_their_brackets() -> None:
    result = runner.invoke(app, ["solve", "--help"])
    assert result.exit_code == 0
    assert "[[row, col], ...]" in result.output and "[[u, v], ...]" in result.output
    assert "--png" in result.output and "gram solve --task nqueens" in result.output


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ([], ["--task sudoku | nqueens | graph_coloring", "gram solve --task sudoku --puzzle",
              "gram solve --task graph_coloring"]),
        (["--task", "sudoku"], ["--task sudoku needs --puzzle", "gram solve --task sudoku --puzzle"]),
        (["--task", "graph_coloring", "--num-nodes", "3"], ["needs --edges", "and --num-colors"]),
    ],
)
def test_solve_says_what_is_missing_and_shows_examples(args: list[str], needles: list[str]) -> None:
    result = runner.invoke(app, ["solve", *args])
    assert result.exit_code == 2
    assert "discriminator" not in result.output
    for needle in needles:
        assert needle in result.output


def test_solve_says_when_no_answer_exists(weights: Path) -> None:
    """A 4x4 board with a corner queen has no completion: the CLI says infeasible, as the API does."""
    args = ["solve", "--task", "nqueens", "--n", "4", "--queens", "[[0, 0]]", "--seed", "1",
            "--num-trajectories", "2", "--max-steps", "1", "--weights-dir", str(weights)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "infeasible: no solution exists" in result.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert json.loads(as_json.stdout)["status"] == "infeasible"
