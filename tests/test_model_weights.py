"""The shipped checkpoints (model/weights) load through the inference interface and solve instances;
every answer they call valid is checked against the exact solver."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.evaluate import sample_answers, sample_mnist
from model.tasks.registry import get_task

WEIGHTS = Path(__file__).resolve().parents[1] / "model" / "weights"
SHIPPED = sorted(WEIGHTS.glob("*.safetensors"))
# A few instances per checkpoint, at the easy end of what it serves: the CPU budget reached small boards
# only (the model cards give the held-out figures at the paper's sizes). (knobs, ...), minimum solved.
PROBES: dict[str, tuple[list[dict], int]] = {
    "nqueens": ([{"n": 4, "given": 1}, {"n": 4, "given": 2}, {"n": 5, "given": 2}], 2),
    "nqueens_baseline": ([{"n": 4, "given": 1}, {"n": 4, "given": 2}, {"n": 5, "given": 2}], 2),
    "graph_coloring": ([{"num_nodes": 4, "num_colors": 3, "min_colorings": 1},
                        {"num_nodes": 6, "num_colors": 3}, {"num_nodes": 8, "num_colors": 3}], 2),
    "sudoku": ([{"difficulty": "easy"}, {"difficulty": "easy"}, {"difficulty": "medium"}], 2),
}


def test_weights_folder_ships_every_checkpoint_with_a_card() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"nqueens", "graph_coloring", "sudoku", "mnist", "nqueens_baseline"} <= names
    for path in SHIPPED:
        assert path.stat().st_size < 8 * 1024 * 1024, f"{path.name} is too large to ship"
        assert path.with_suffix(".md").exists(), f"{path.name} has no model card"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_solves_and_every_answer_verifies(path: Path) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    model = load_checkpoint(path)
    task = get_task(model.config.task)
    if task.name == "mnist":
        tokens = sample_mnist(model, 16, seed=1)
        assert tokens.shape == (16, 49, 16) and bool(((tokens == 1) | (tokens == 2)).all())
        assert len({bytes(t.flatten().tolist()) for t in tokens}) > 1, "samples are all identical"
        ink = float((tokens == 2).float().mean())  # the data's: 13 %; a prior pulled to the mean: ~0
        assert 0.04 < ink < 0.3, f"ink fraction {ink:.3f}: blank or blotted samples"
        return
    rng = random.Random(2024)
    solved = 0
    probes, need = PROBES[path.stem]
    for knobs in probes:
        instance, _ = task.generate(rng, **knobs)
        answers, valid, _ = sample_answers(model, task, instance.x, 20, model.config.n_sup, seed=7)
        truth = {task.canonical_key(instance.x, s) for s in task.solve(instance, 5000)}
        for y in answers[valid]:
            assert task.canonical_key(instance.x, y) in truth, "a 'valid' answer is not a solution"
            assert bool(task.verify(y.unsqueeze(0), instance.x.unsqueeze(0))[0])
        solved += bool(valid.any())
    assert solved >= need, f"{path.stem} solved only {solved} of {len(probes)} probe instances"


def test_eval_samples_at_the_checkpoints_recommended_temperature(monkeypatch: pytest.MonkeyPatch) -> None:
    """gram eval samples as the service does: at the card's prior_temperature unless told otherwise."""
    import model.evaluate as evaluation
    from model.data import HeldOut

    model = load_checkpoint(WEIGHTS / "nqueens.safetensors")
    seen: list[float] = []

    real = evaluation.rollout

    def spy(*args, temperature: float = 1.0, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(temperature)
        return real(*args, temperature=temperature, **kwargs)

    monkeypatch.setattr(evaluation, "rollout", spy)
    instance, y = get_task("nqueens").generate(random.Random(0), n=6)
    heldout = [HeldOut("n6", instance, y)]
    report = evaluation.evaluate(model, n_max=1, max_steps=1, heldout=heldout)
    assert seen == [model.card.get("prior_temperature", 1.0)] and report["temperature"] == seen[0]
    hot = evaluation.evaluate(model, n_max=1, max_steps=1, heldout=heldout, temperature=3.0)
    assert hot["temperature"] == 3.0 and seen[-1] == 3.0


def test_mnist_samples_at_the_checkpoints_recommended_temperature() -> None:
    """gram eval and POST /sample draw MNIST at the card's prior_temperature unless told otherwise: the
    card's value gives the same samples as asking for it, and another temperature other samples."""
    model = load_checkpoint(WEIGHTS / "mnist.safetensors")
    model.card["prior_temperature"] = 0.5
    default = sample_mnist(model, 4, seed=2, steps=2)
    assert torch.equal(default, sample_mnist(model, 4, seed=2, steps=2, temperature=0.5))
    assert not torch.equal(default, sample_mnist(model, 4, seed=2, steps=2, temperature=1.0))


def test_eval_follows_the_checkpoints_halting_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """gram eval retires on the halting head as the service does: per the card's use_halting (the Sudoku
    checkpoint turns it off), unless told otherwise."""
    import model.evaluate as evaluation
    from model.data import HeldOut

    model = load_checkpoint(WEIGHTS / "sudoku.safetensors")
    seen: list[bool] = []

    real = evaluation.Rollout.served

    def spy(self, use_halting: bool):  # type: ignore[no-untyped-def]
        seen.append(use_halting)
        return real(self, use_halting)

    monkeypatch.setattr(evaluation.Rollout, "served", spy)
    instance, y = get_task("sudoku").generate(random.Random(0), difficulty="easy")
    heldout = [HeldOut("easy", instance, y)]
    report = evaluation.evaluate(model, n_max=1, max_steps=1, heldout=heldout)
    assert seen == [model.card.get("use_halting", True)] == [False] and report["use_halting"] is False
    assert evaluation.evaluate(model, n_max=1, max_steps=1, heldout=heldout, use_halting=True)["use_halting"]
    assert seen[-1] is True


@pytest.mark.parametrize("use_halting", [True, False])
def test_eval_rollout_reads_the_services_answers_and_the_final_ones(use_halting: bool) -> None:
    """The full rollout gives, per trajectory, exactly what early-retiring sampling (the service's
    semantics) gives, and its final answers are the last step's candidates."""
    from model.evaluate import rollout

    model = load_checkpoint(WEIGHTS / "nqueens.safetensors")
    task = get_task("nqueens")
    instance, _ = task.generate(random.Random(4), n=8, given=2)
    answers, valid, steps = sample_answers(model, task, instance.x, 12, 6, seed=3, use_halting=use_halting)
    run = rollout(model, task, instance.x, 12, 6, seed=3)
    got, ok, used = run.served(use_halting)
    assert torch.equal(got, answers.cpu()) and torch.equal(ok, valid.cpu()) and torch.equal(used, steps.cpu())
    final, final_ok = run.final()
    assert torch.equal(final, run.tokens[-1])
    assert torch.equal(final_ok, task.verify(final, instance.x.expand(12, -1, -1)))
