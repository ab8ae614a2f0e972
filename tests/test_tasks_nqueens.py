"""N-Queens: solver counts, verifier (accepts solver output, rejects each violation), codec, generator."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.tasks.base import TaskInputError
from model.tasks.nqueens import COL0, OPEN, SIDE, TASK, all_solutions, placement_tokens

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def verify_one(y: torch.Tensor, x: torch.Tensor) -> bool:
    return bool(TASK.verify(y[None], x[None])[0])


@pytest.mark.parametrize(("n", "count"), [(4, 2), (5, 10), (6, 4), (7, 40), (8, 92), (9, 352), (10, 724)])
def test_empty_board_completion_counts(n: int, count: int) -> None:
    instance = TASK.parse({"n": n})
    assert len(TASK.solve(instance, cap=10_000)) == count


def test_solve_respects_cap_and_givens() -> None:
    instance = TASK.parse({"n": 8, "queens": [[0, 0]]})
    solutions = TASK.solve(instance, cap=1000)
    assert len(solutions) == 4  # 8x8 solutions with a queen in the corner
    assert all(int(s[0, 0]) == COL0 for s in solutions)
    assert len(TASK.solve(instance, cap=3)) == 3


@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_verifier_accepts_every_solver_solution(seed: int) -> None:
    instance, target = TASK.generate(random.Random(seed))
    solutions = TASK.solve(instance, cap=200)
    assert len(solutions) == min(200, instance.meta["completions"])
    ys = torch.stack(solutions + [target])
    xs = instance.x.expand(len(ys), -1, -1)
    assert TASK.verify(ys, xs).all()
    keys = {TASK.canonical_key(instance.x, y) for y in solutions}
    assert len(keys) == len(solutions)


def test_batch_mixes_board_sizes() -> None:
    rng = random.Random(1)
    pairs = [TASK.generate(rng, n=n) for n in (4, 8, 12, 10)]
    xs = torch.stack([inst.x for inst, _ in pairs])
    ys = torch.stack([y for _, y in pairs])
    ys[2] = pairs[1][1]  # an 8x8 solution is no answer to the 12x12 row
    assert TASK.verify(ys, xs).tolist() == [True, True, False, True]


def valid_pair() -> tuple[torch.Tensor, torch.Tensor]:
    instance = TASK.parse({"n": 6, "queens": [[0, 1]]})
    (y,) = TASK.solve(instance, cap=1)
    return instance.x, y


def test_rejects_queen_moved_within_its_row() -> None:
    x, y = valid_pair()
    moved = y.clone()
    moved[3, 0] = COL0 + (int(y[3, 0]) - COL0 + 1) % 6
    assert not verify_one(moved, x)


def test_rejects_missing_given_queen() -> None:
    x = TASK.parse({"n": 6, "queens": [[0, 1]]}).x
    other = next(s for s in all_solutions(6) if s[0] != 1)
    y = placement_tokens(6, dict(enumerate(other)))
    assert verify_one(y, TASK.parse({"n": 6}).x)
    assert not verify_one(y, x)


def test_rejects_diagonal_attack_with_one_queen_per_row_and_column() -> None:
    x = TASK.parse({"n": 5}).x
    y = placement_tokens(5, {r: r for r in range(5)})
    assert not verify_one(y, x)


def test_rejects_missing_queens_and_shared_columns() -> None:
    x, y = valid_pair()
    open_row = y.clone()
    open_row[2, 0] = OPEN  # a board row left without a queen
    assert not verify_one(open_row, x)
    same_column = y.clone()
    same_column[4, 0] = y[5, 0]  # two queens in one column
    assert not verify_one(same_column, x)


def test_rejects_pad_on_board_and_tokens_off_board() -> None:
    x, y = valid_pair()
    pad_inside = y.clone()
    pad_inside[3] = 0
    assert not verify_one(pad_inside, x)
    outside = y.clone()
    outside[SIDE - 1] = COL0  # a queen in a row below the 6x6 board
    assert not verify_one(outside, x)
    off_board_column = y.clone()
    off_board_column[3] = COL0 + 7  # column 7 of a 6x6 board
    assert not verify_one(off_board_column, x)


def test_rejects_malformed_input_board() -> None:
    x, y = valid_pair()
    ragged = x.clone()
    ragged[8] = OPEN  # a row outside the 6x6 board marked as on-board
    assert not verify_one(y, ragged)
    gap = x.clone()
    gap[3] = 0  # a PAD row inside the board
    assert not verify_one(y, gap)
    with pytest.raises(ValueError, match=r"y must be \[B, 12, 1\]"):
        TASK.verify(y, x)


@settings(max_examples=20, deadline=None)
@given(seed=seeds)
def test_symmetries_map_solutions_to_solutions(seed: int) -> None:
    instance, y = TASK.generate(random.Random(seed))
    n = instance.meta["n"]
    images = set()
    for which in range(8):
        x2, y2 = TASK.symmetry(instance.x, y, which)
        assert verify_one(y2, x2)
        assert int((x2[:, 0] >= COL0).sum()) == len(instance.meta["queens"])
        assert torch.equal(x2 != 0, instance.x != 0)  # still n board rows
        images.add(TASK.canonical_key(x2, y2))
    x3, y3 = TASK.augment(instance.x, y, random.Random(seed))
    assert verify_one(y3, x3)
    assert len(images) >= 2 or n == 4  # the 8 symmetries do move a solution around


def test_generator_is_deterministic_and_follows_the_paper_defaults() -> None:
    a = [TASK.generate(random.Random(7)) for _ in range(2)]
    assert torch.equal(a[0][0].x, a[1][0].x) and torch.equal(a[0][1], a[1][1])
    rng = random.Random(3)
    sizes = [TASK.generate(rng)[0].meta["n"] for _ in range(300)]
    assert set(sizes) <= set(range(4, 13))
    assert sizes.count(8) > sizes.count(5) and sizes.count(10) > sizes.count(11)
    for _ in range(30):
        instance, _ = TASK.generate(rng, n=8)
        assert 1 <= len(instance.meta["queens"]) <= 3


def test_generator_stratifies_by_completions() -> None:
    rng = random.Random(5)
    for _ in range(10):
        instance, y = TASK.generate(rng, n=8, given=2, min_completions=3, max_completions=6)
        assert 3 <= len(TASK.solve(instance, cap=100)) <= 6
        assert verify_one(y, instance.x)
    with pytest.raises(ValueError, match="no 4x4 instance"):
        TASK.generate(rng, n=4, given=1, min_completions=2)


def test_format_lists_queens_by_row_and_board_rows() -> None:
    instance = TASK.parse({"n": 4, "queens": [[0, 1]]})
    (y,) = TASK.solve(instance, cap=5)
    out = TASK.format(instance, y)
    assert out == {"queens": [[0, 1], [1, 3], [2, 0], [3, 2]], "board": [".Q..", "...Q", "Q...", "..Q."]}
    assert TASK.answer_mask(instance.x).sum() == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "missing required field 'n'"),
        ({"n": 3}, "'n' = 3 is out of range 4..12"),
        ({"n": 13}, "'n' = 13 is out of range 4..12"),
        ({"n": "8"}, "'n' must be an integer"),
        ({"n": True}, "'n' must be an integer"),
        ({"n": 8, "queens": [[0, 8]]}, r"queens\[0\] = \[0, 8\] is off the 8x8 board"),
        ({"n": 8, "queens": [[-1, 0]]}, r"queens\[0\] = \[-1, 0\] is off the 8x8 board"),
        (
            {"n": 8, "queens": [[0, 0], [3, 3]]},
            r"queens\[0\] = \[0, 0\] and queens\[1\] = \[3, 3\] attack.*\(same diagonal\)",
        ),
        ({"n": 8, "queens": [[2, 0], [2, 5]]}, r"attack each other \(same row\)"),
        ({"n": 8, "queens": [[2, 5], [6, 5]]}, r"attack each other \(same column\)"),
        ({"n": 8, "queens": [[1, 1], [1, 1]]}, r"queens\[0\] and queens\[1\] are both at \[1, 1\]"),
        ({"n": 8, "queens": [[1, 1, 1]]}, r"queens\[0\] must be a pair"),
        ({"n": 8, "queens": "a1"}, "'queens' must be a list"),
    ],
)
def test_parse_errors_name_the_problem(body: dict, message: str) -> None:
    with pytest.raises(TaskInputError, match=message):
        TASK.parse(body)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, cell=st.integers(0, SIDE - 1), token=st.integers(-2, COL0 + SIDE + 1))
def test_any_single_token_change_is_rejected(seed: int, cell: int, token: int) -> None:
    """One changed row moves, removes or adds a queen, or puts a wrong token on or off the board."""
    instance, y = TASK.generate(random.Random(seed))
    if int(y[cell, 0]) == token:
        return
    bad = y.clone()
    bad[cell, 0] = token
    assert TASK.verify(torch.stack([y, bad]), torch.stack([instance.x, instance.x])).tolist() == [True, False]
