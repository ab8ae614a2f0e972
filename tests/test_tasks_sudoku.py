"""Sudoku: codec and errors, verifier (accepts solver output, rejects each violation), generator tiers."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tasks.base import TaskInputError
from model.tasks.sudoku import TASK, grid_tokens, tokens_grid
from model.tasks.sudoku_solver import needs_guessing, random_full_grid, search

seeds = st.integers(min_value=0, max_value=2**32 - 1)

# A well-known puzzle with a unique solution (and its solution).
PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def verify_one(y: torch.Tensor, x: torch.Tensor) -> bool:
    return bool(TASK.verify(y[None], x[None])[0])


def digits_tokens(s: str) -> torch.Tensor:
    return grid_tokens([int(ch) for ch in s])


def test_solves_a_known_puzzle_and_formats_like_the_input() -> None:
    instance = TASK.parse({"puzzle": PUZZLE})
    (y,) = TASK.solve(instance, cap=5)
    assert TASK.format(instance, y) == SOLUTION
    grid_body = [[int(ch) for ch in PUZZLE.replace(".", "0")[r * 9 : r * 9 + 9]] for r in range(9)]
    grid_instance = TASK.parse({"puzzle": grid_body})
    assert torch.equal(grid_instance.x, instance.x)
    assert TASK.parse({"puzzle": PUZZLE.replace(".", "0")}).x.equal(instance.x)
    as_grid = TASK.format(grid_instance, y)
    assert as_grid[0] == [5, 3, 4, 6, 7, 8, 9, 1, 2] and len(as_grid) == 9
    assert TASK.answer_mask(instance.x).all()


@settings(max_examples=25, deadline=None)
@given(seed=seeds, blanks=st.integers(40, 64))
def test_verifier_accepts_every_solver_solution(seed: int, blanks: int) -> None:
    rng = random.Random(seed)
    grid = random_full_grid(rng)
    for i in rng.sample(range(81), blanks):
        grid[i] = 0
    x = grid_tokens(grid)
    solutions = TASK.solve(TASK.parse({"puzzle": "".join(map(str, grid))}), cap=20)
    assert solutions
    assert TASK.verify(torch.stack(solutions), x.expand(len(solutions), -1, -1)).all()
    assert len({TASK.canonical_key(x, y) for y in solutions}) == len(solutions)


def test_rejects_a_changed_given() -> None:
    x = TASK.parse({"puzzle": PUZZLE}).x
    relabelled = SOLUTION.translate(str.maketrans("12", "21"))  # still a valid grid, givens changed
    assert verify_one(digits_tokens(relabelled), TASK.parse({"puzzle": "." * 81}).x)
    assert not verify_one(digits_tokens(relabelled), x)


def test_rejects_row_column_and_box_violations_separately() -> None:
    blank = TASK.parse({"puzzle": "." * 81}).x
    row_dup = list(SOLUTION)
    row_dup[0] = row_dup[1]  # row 0 and column 0 and box 0 now repeat
    cols_broken = list(SOLUTION)
    cols_broken[0], cols_broken[1] = cols_broken[1], cols_broken[0]  # rows fine, columns broken
    latin = "".join(str((r + c) % 9 + 1) for r in range(9) for c in range(9))  # rows/cols fine, boxes not
    for bad in ("".join(row_dup), "".join(cols_broken), latin):
        assert not verify_one(digits_tokens(bad), blank)


def test_rejects_non_digit_tokens_and_malformed_input() -> None:
    x = TASK.parse({"puzzle": PUZZLE}).x
    y = digits_tokens(SOLUTION)
    assert verify_one(y, x)
    for token in (0, 1, 11):  # PAD, blank, out of vocabulary
        bad = y.clone()
        bad[40, 0] = token
        assert not verify_one(bad, x)
    bad_x = x.clone()
    bad_x[2, 0] = 0  # PAD in a Sudoku input
    assert not verify_one(y, bad_x)
    batch = torch.stack([y, y, y])
    batch[1, 5, 0] = batch[1, 6, 0]
    assert TASK.verify(batch, x.expand(3, -1, -1)).tolist() == [True, False, True]


@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_augment_maps_solutions_to_solutions(seed: int) -> None:
    rng = random.Random(seed)
    instance = TASK.parse({"puzzle": PUZZLE})
    y = digits_tokens(SOLUTION)
    x2, y2 = TASK.augment(instance.x, y, rng)
    assert verify_one(y2, x2)
    assert int((x2 >= 2).sum()) == int((instance.x >= 2).sum())
    (only,) = TASK.solve(TASK.parse({"puzzle": "".join(map(str, tokens_grid(x2)))}), cap=2)
    assert torch.equal(only, y2)  # uniqueness survives the symmetry


def test_generator_tiers() -> None:
    rng = random.Random(4)
    for difficulty, lo, hi in (("easy", 36, 45), ("medium", 28, 35)):
        instance, y = TASK.generate(rng, difficulty=difficulty)
        assert lo <= instance.meta["givens"] <= hi
        assert [torch.equal(s, y) for s in TASK.solve(instance, cap=2)] == [True]
    for _ in range(2):
        instance, y = TASK.generate(rng, difficulty="hard")
        grid = tokens_grid(instance.x)
        assert needs_guessing(grid) and instance.meta["guesses"] >= 1
        assert [torch.equal(s, y) for s in TASK.solve(instance, cap=2)] == [True]
        # minimal: removing any given makes the solution ambiguous
        filled = [i for i in range(81) if grid[i]]
        i = filled[rng.randrange(len(filled))]
        assert len(search(grid[:i] + [0] + grid[i + 1 :], cap=2).solutions) == 2
    instance, y = TASK.generate(rng, difficulty="multi", max_solutions=6)
    solutions = TASK.solve(instance, cap=100)
    assert 2 <= len(solutions) <= 6 and any(torch.equal(s, y) for s in solutions)
    instance, _ = TASK.generate(rng, difficulty="medium", min_givens=30, max_givens=30)
    assert instance.meta["givens"] == 30
    with pytest.raises(ValueError, match="difficulty must be one of"):
        TASK.generate(rng, difficulty="extreme")


def test_generator_is_deterministic_and_training_path_is_fast() -> None:
    a = TASK.generate(random.Random(9), difficulty="medium")
    b = TASK.generate(random.Random(9), difficulty="medium")
    assert torch.equal(a[0].x, b[0].x) and torch.equal(a[1], b[1])
    dataset = TASK.generate_dataset(seed=3, count=3, difficulty="easy")
    again = TASK.generate_dataset(3, 3, difficulty="easy")
    assert all(torch.equal(p[0], q[0]) for p, q in zip(dataset, again, strict=True))
    rng = random.Random(0)
    for _ in range(20):
        x, y = TASK.sample_training_pair(rng, dataset=dataset)
        assert verify_one(y, x)


@pytest.mark.parametrize(
    ("puzzle", "message"),
    [
        (PUZZLE[:80], "'puzzle' string must have 81 characters, got 80"),
        (PUZZLE[:80] + "x", r"'puzzle' has 'x' at index 80 \(cell \[8, 8\]\)"),
        ("55" + "." * 79, r"digit 5 repeats in row 0 at cells \[0, 0\], \[0, 1\]"),
        ("7" + "." * 8 + "7" + "." * 71, r"digit 7 repeats in box 0 at cells \[0, 0\], \[1, 0\]"),
        ("9" + "." * 26 + "9" + "." * 53, r"digit 9 repeats in column 0 at cells \[0, 0\], \[3, 0\]"),
        ([[0] * 9] * 8, "'puzzle' grid must have 9 rows, got 8"),
        ([[0] * 9] * 8 + [[0] * 10], "'puzzle' row 8 must be a list of 9 ints, got 10 cells"),
        ([[0] * 9] * 8 + [[0] * 8 + [10]], r"puzzle\[8\]\[8\] = 10 is not an int 0-9"),
        ([[0] * 9] * 8 + [[0] * 8 + [True]], r"puzzle\[8\]\[8\] = True is not an int 0-9"),
        (81, "'puzzle' must be an 81-character string or a 9x9 list of ints, got int"),
        (None, "missing required field 'puzzle'"),
    ],
)
def test_parse_errors_name_the_problem(puzzle: object, message: str) -> None:
    with pytest.raises(TaskInputError, match=message):
        TASK.parse({"puzzle": puzzle})


@settings(max_examples=40, deadline=None)
@given(seed=seeds, cell=st.integers(0, 80), token=st.integers(-3, 14))
def test_any_single_token_change_is_rejected(seed: int, cell: int, token: int) -> None:
    """A solved grid with one cell changed always breaks a unit (or is no digit at all)."""
    rng = random.Random(seed)
    y = grid_tokens(random_full_grid(rng))
    x = TASK.parse({"puzzle": "." * 81}).x
    if int(y[cell, 0]) == token:
        return
    bad = y.clone()
    bad[cell, 0] = token
    assert TASK.verify(torch.stack([y, bad]), torch.stack([x, x])).tolist() == [True, False]
