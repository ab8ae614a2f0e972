"""`gram eval` off a terminal (a log, CI, a pipe) prints plain progress lines instead of a live bar."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app


def test_eval_reports_progress_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    from model.checkpoint import save_checkpoint
    from model.gram import tiny_model

    checkpoint = tmp_path / "nq.safetensors"
    save_checkpoint(tiny_model("nqueens"), checkpoint)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--per-setting", "2", "--samples", "2",
                                      "--max-steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("eval nq.safetensors: ")]
    assert lines and lines[-1].startswith("eval nq.safetensors: 4/4 instances")
    assert json.loads(out.read_text())["task"] == "nqueens"


def test_eval_can_take_only_some_settings(tmp_path: Path) -> None:
    from model.checkpoint import save_checkpoint
    from model.gram import tiny_model

    checkpoint = tmp_path / "nq.safetensors"
    save_checkpoint(tiny_model("nqueens"), checkpoint)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", str(checkpoint), "--per-setting", "2", "--samples", "2",
                                      "--max-steps", "1", "--setting", "n10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert list(json.loads(out.read_text())["settings"]) == ["n10"]
