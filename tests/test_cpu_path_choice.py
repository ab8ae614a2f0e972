"""GRAM_CPU_PATH=auto picks a step path by timing; the paths round differently, so the choice is recorded
and reused, and a seeded answer is the same on every start of the same build on the same machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.fast_path import cpu_path
from model.gram import tiny_model

REPO = Path(__file__).resolve().parent.parent

# One process start: choose (measuring or reusing), then a seeded 3-step rollout on the chosen path.
START = """
import json, sys, torch
from model.fast_path import cpu_path
from model.gram import tiny_model
from model.gram import NoiseKeys
torch.manual_seed(0)
model = tiny_model("nqueens", seed=5).eval()
# the eager paths only: measuring bf16+compile compiles (minutes on a loaded CI machine)
path, figures = cpu_path.choose(model, 4, paths=("fp32", "bf16"))
step = cpu_path.make_step(model, path)
x = torch.randint(1, 3, (4, model.config.seq_len, model.config.in_group))
e_x = model.encode(x)
h, l = model.init_state(4)
with torch.no_grad():
    for n in range(3):
        keys = NoiseKeys(torch.full((4,), 7), torch.arange(4), torch.full((4,), n))
        out = step(h, l, e_x, keys)
        h, l = out.h, out.l
print(json.dumps({"path": path, "measured": bool(figures), "tokens": out.tokens.tolist()}))
"""


def _start(cache: Path, paths_env: str = "auto") -> dict:
    env = {**os.environ, "GRAM_CPU_PATH": paths_env, "GRAM_CPU_PATH_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", START], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_choice_is_recorded_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAM_CPU_PATH", "auto")
    monkeypatch.setenv("GRAM_CPU_PATH_CACHE", str(tmp_path / "choice.json"))
    model = tiny_model("sudoku", seed=1).eval()
    path, figures = cpu_path.choose(model, 4, paths=("fp32", "bf16"))
    assert figures and path in ("fp32", "bf16")
    recorded = json.loads((tmp_path / "choice.json").read_text())
    assert list(recorded.values()) == [path]
    # a record wins over measuring, even one naming the slower path
    (key,) = recorded
    other = "bf16" if path == "fp32" else "fp32"
    (tmp_path / "choice.json").write_text(json.dumps({key: other}))
    assert cpu_path.choose(model, 4, paths=("fp32", "bf16")) == (other, [])
    # other weights are another key: measured afresh
    _, figures = cpu_path.choose(tiny_model("sudoku", seed=2).eval(), 4, paths=("fp32", "bf16"))
    assert figures


def test_same_seed_same_answer_across_process_starts(tmp_path: Path) -> None:
    cache = tmp_path / "choice.json"
    first = _start(cache)
    second = _start(cache)
    assert first["measured"] and not second["measured"]
    assert second["path"] == first["path"]
    assert second["tokens"] == first["tokens"]
    # and the answer is the chosen path's own: a start pinned to that path gives it too
    pinned = _start(tmp_path / "unused.json", first["path"])
    assert pinned["tokens"] == first["tokens"]
