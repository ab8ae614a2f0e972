"""The training loop: exact resume, presets, progress reports, shipped model export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.gram import tiny_config
from model.presets import TrainConfig, preset
from model.train import MODEL_FILE, Trainer, learning_rate, saved_train_config, train


def tiny_run(max_steps: int) -> TrainConfig:
    return TrainConfig(
        name="graph_coloring", model=tiny_config("graph_coloring", n_sup=2), batch=6, max_steps=max_steps,
        heldout_per_setting=2, ckpt_every_s=1e9, log_every=1, warmup=2, seed=3,
    )


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train(tiny_run(4), tmp_path / "a")
    train(tiny_run(2), tmp_path / "b")
    resumed = train(None, tmp_path / "b", resume=True, overrides={"max_steps": 4})
    assert resumed.step == straight.step == 4
    for part in ("model", "ema"):
        a, b = getattr(straight, part).state_dict(), getattr(resumed, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert torch.equal(straight.carry.x, resumed.carry.x) and torch.equal(straight.carry.h, resumed.carry.h)
    assert straight.stream.state() == resumed.stream.state()


def test_progress_reports_and_exported_model(tmp_path: Path) -> None:
    reports: list[dict] = []
    trainer = train(tiny_run(3), tmp_path, progress=reports.append)
    assert [r["step"] for r in reports] == [1, 2, 3]
    for key in ("loss", "ce", "kl", "acc", "samples_per_s", "eta_s", "token_acc"):
        assert key in reports[-1]
    model = load_checkpoint(tmp_path / MODEL_FILE)
    assert model.card["train_steps"] == 3 and model.card["weights"] == "EMA"
    ema = dict(trainer.ema.state_dict())
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


def test_training_excludes_the_heldout_inputs(tmp_path: Path) -> None:
    from model.data import input_key

    trainer = Trainer(tiny_run(1), tmp_path)
    held = {input_key(trainer.task, h.instance.x) for h in trainer.heldout}
    from model.data import EVAL_SETTINGS

    assert len(held) == 2 * len(EVAL_SETTINGS["graph_coloring"])  # 2 per evaluation setting, distinct
    x, _ = trainer.stream.batch(50)
    assert not any(input_key(trainer.task, xi) in held for xi in x)


def test_presets_build_and_paper_preset_runs_one_step(tmp_path: Path) -> None:
    from model.presets import RUNS

    for name in RUNS:
        cpu = preset(name, "cpu")
        assert cpu.model.stochastic == (not name.endswith("baseline"))
    paper = preset("graph_coloring", "paper")
    assert (paper.model.d_model, paper.model.T, paper.model.K, paper.model.n_sup) == (512, 3, 4, 16)
    assert preset("sudoku", "paper").model.mixer == "mlp_t" and preset("sudoku", "paper").model.K == 6
    smoke = paper.with_(batch=2, max_steps=1, heldout_per_setting=1, ckpt_every_s=1e9)
    trainer = train(smoke, tmp_path)
    # 2 shared D=512 blocks (6.8M, as TRM) + guidance heads: 8M; the paper reports ~10M (heads unknown)
    assert trainer.step == 1 and 7e6 < trainer.model.num_parameters() < 1.2e7


def test_learning_rate_warms_up_holds_then_decays_to_zero_over_the_budgets_last_seconds() -> None:
    tc = tiny_run(100).with_(lr=1.0, warmup=4, time_budget_s=100.0)
    assert [learning_rate(tc, s, 0.0) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert learning_rate(tc, 50, 99.0) == 1.0  # no decay asked: constant to the end
    wsd = tc.with_(decay_s=20.0)
    assert [learning_rate(wsd, 50, t) for t in (0.0, 80.0, 90.0, 95.0, 100.0, 120.0)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.25, 0.0, 0.0]
    )
    assert learning_rate(wsd.with_(time_budget_s=0.0), 50, 1e6) == 1.0  # no budget: nothing to decay towards


def test_a_resumed_run_takes_a_new_decay_and_budget(tmp_path: Path) -> None:
    train(tiny_run(2), tmp_path / "r")
    resumed = train(None, tmp_path / "r", resume=True,
                    overrides={"max_steps": 3, "time_budget_s": 1e6, "decay_s": 10.0})
    assert resumed.step == 3 and resumed.tc.decay_s == 10.0
    assert saved_train_config(tmp_path / "r").decay_s == 10.0  # and a later resume keeps it


def test_bf16_autocast_step_trains(tmp_path: Path) -> None:
    tc = tiny_run(2).with_(autocast="bf16")
    trainer = train(tc, tmp_path)
    assert trainer.step == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.model.decoder.weight.dtype == torch.float32  # autocast leaves the master weights fp32
