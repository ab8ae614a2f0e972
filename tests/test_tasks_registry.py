"""The registry and the shared token contract (README table) across all four families."""

from __future__ import annotations

import random

import pytest
import torch

from model.tasks.base import Task, TaskInputError, TaskSpec
from model.tasks.registry import TASKS, get_task

README_SPECS = {
    "sudoku": TaskSpec(81, 1, 11, 1, 11),
    "nqueens": TaskSpec(12, 1, 14, 1, 14),
    "graph_coloring": TaskSpec(16, 18, 6, 1, 5),
    "mnist": TaskSpec(49, 1, 2, 16, 3),
}
BODIES = {
    "sudoku": {"puzzle": "." * 81},
    "nqueens": {"n": 6, "queens": [[0, 1]]},
    "graph_coloring": {"num_nodes": 4, "num_colors": 3, "edges": [[0, 1], [1, 2]], "fixed": {"3": 2}},
    "mnist": {},
}


def test_registry_holds_the_four_families_with_the_readme_token_layout() -> None:
    assert set(TASKS) == set(README_SPECS)
    for name, spec in README_SPECS.items():
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name and task.spec == spec


def test_unknown_task_is_a_clear_input_error() -> None:
    with pytest.raises(TaskInputError, match="unknown task 'chess'; known tasks: graph_coloring, mnist"):
        get_task("chess")


@pytest.mark.parametrize("name", ["sudoku", "nqueens", "graph_coloring"])
def test_parse_solve_verify_format_round_trip(name: str) -> None:
    task = get_task(name)
    spec = task.spec
    instance = task.parse(BODIES[name])
    assert instance.x.shape == (spec.seq_len, spec.in_group) and instance.x.dtype == torch.long
    assert int(instance.x.max()) < spec.in_vocab
    solutions = task.solve(instance, cap=4)
    assert solutions
    ys = torch.stack(solutions)
    assert ys.shape[1:] == (spec.seq_len, spec.out_group) and int(ys.max()) < spec.out_vocab
    assert task.verify(ys, instance.x.expand(len(ys), -1, -1)).all()
    mask = task.answer_mask(instance.x)
    assert mask.shape == (spec.seq_len, spec.out_group) and mask.dtype == torch.bool
    assert bool(((ys != 0) == mask).all())  # answer positions are exactly the non-PAD targets
    task.format(instance, solutions[0])


@pytest.mark.parametrize("name", ["sudoku", "nqueens", "graph_coloring"])
def test_verify_on_the_meta_device_keeps_batch_shape(name: str) -> None:
    """No hidden CPU round trips: the verifier runs wherever its inputs live."""
    task = get_task(name)
    spec = task.spec
    y = torch.zeros(5, spec.seq_len, spec.out_group, dtype=torch.long, device="meta")
    x = torch.zeros(5, spec.seq_len, spec.in_group, dtype=torch.long, device="meta")
    out = task.verify(y, x)
    assert out.shape == (5,) and out.dtype == torch.bool and out.device.type == "meta"


@pytest.mark.parametrize("name", ["nqueens", "graph_coloring"])
def test_generate_and_training_pairs_follow_the_contract(name: str) -> None:
    task = get_task(name)
    rng = random.Random(0)
    for _ in range(5):
        x, y = task.sample_training_pair(rng)
        x, y = task.augment(x, y, rng)
        assert x.shape == (task.spec.seq_len, task.spec.in_group)
        assert task.verify(y[None], x[None]).all()
