"""N-Queens on an n x n board, n = 4..12, with optional pre-placed queens.

Tokens: one token per board row, padded to 12 rows (L = 12): row r carries the column of its queen, as
token ``2 + column``; rows past the board are PAD (0), so one model serves every n and ``n`` is the
number of non-PAD rows of ``x``. Input: ``OPEN`` (1) for a row whose queen the model must place, ``2 + c``
for a pre-placed queen in column c. Output: ``2 + c`` in every board row.

Why rows and not the paper's 144 cells (docs/GRAM.md, token table): "one queen per row" then holds by
construction and a board is 12 tokens instead of 144, so a CPU training budget buys about ten times as
many examples; the model still has to learn columns and diagonals. The API (``n``, ``queens``, ``board``)
does not depend on the layout.

Generation follows the paper (GRAM C.2.1): take a complete solution, keep only ``given`` of its queens
(1-3 by default, as 8x8 with 5-7 removed); the target is the original board, and the input usually has
several completions. ``min_completions`` / ``max_completions`` stratify by completion count.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from model.tasks.base import PAD, Instance, TaskInputError, TaskSpec
from model.tasks.datasets import GeneratedPairs
from model.tasks.fields import as_int, as_int_pairs, require
from model.tasks.tensors import check_batch, small_ints_key

SIDE = 12  # rows of the padded board every n is embedded in
MIN_N, MAX_N = 4, 12
OPEN = 1  # input: a row whose queen is to be placed
COL0 = 2  # token of a queen in column 0; column c is COL0 + c
SPEC = TaskSpec(seq_len=SIDE, in_group=1, in_vocab=COL0 + SIDE, out_group=1, out_vocab=COL0 + SIDE)
# Default board sizes: the paper's 8 and 10 dominate, every other size still appears.
DEFAULT_N_WEIGHTS = {n: (4 if n in (8, 10) else 1) for n in range(MIN_N, MAX_N + 1)}

Placement = tuple[int, ...]  # column of the queen in each row


def completions(n: int, given: dict[int, int] | None = None) -> Iterator[Placement]:
    """Every full placement (column per row) that keeps the ``given`` row -> column queens.

    Bitmask backtracking row by row; a given row only tries its given column.
    """
    given = given or {}
    full = (1 << n) - 1
    cols: list[int] = [0] * n

    def place(row: int, used: int, diag: int, anti: int) -> Iterator[Placement]:
        if row == n:
            yield tuple(cols)
            return
        free = full & ~(used | diag | anti)
        if row in given:
            free &= 1 << given[row]
        while free:
            bit = free & -free
            free ^= bit
            cols[row] = bit.bit_length() - 1
            yield from place(row + 1, used | bit, ((diag | bit) << 1) & full, (anti | bit) >> 1)

    yield from place(0, 0, 0, 0)


@functools.cache
def all_solutions(n: int) -> tuple[Placement, ...]:
    """All solutions from the empty board (cached: n = 12 has 14,200 and takes about a second)."""
    return tuple(completions(n))


def placement_tokens(n: int, queens: dict[int, int]) -> torch.Tensor:
    """LongTensor[12, 1]: ``COL0 + column`` in rows with a queen, OPEN in the other board rows, PAD below."""
    # built as a list, one tensor at the end: each tensor write is a dispatcher call (parse measured in
    # isolation after an idle gap: 0.27 -> 0.22 ms; the service parses every /solve body with this)
    rows = [OPEN] * n + [PAD] * (SIDE - n)
    for r, c in queens.items():
        rows[r] = COL0 + c
    return torch.tensor(rows, dtype=torch.long).reshape(SIDE, 1)


def board_size(x: torch.Tensor) -> int:
    """n of one input x [12, 1] (its non-PAD rows)."""
    return int((x.reshape(SIDE) != PAD).sum())


def queens_of(tokens: torch.Tensor) -> dict[int, int]:
    """row -> column of the queens in a token board [12, 1]."""
    cols = tokens.reshape(SIDE).tolist()
    return {r: c - COL0 for r, c in enumerate(cols) if COL0 <= c < COL0 + SIDE}


def attack_reason(a: tuple[int, int], b: tuple[int, int]) -> str | None:
    """Why two queens attack each other, or None."""
    if a[0] == b[0]:
        return "same row"
    if a[1] == b[1]:
        return "same column"
    if abs(a[0] - b[0]) == abs(a[1] - b[1]):
        return "same diagonal"
    return None


@functools.cache
def _row_index(device: torch.device) -> torch.Tensor:
    return torch.arange(SIDE, device=device)


def _at_most_one_per_line(line: torch.Tensor, on_board: torch.Tensor, lines: int) -> torch.Tensor:
    """bool[B]: no two on-board rows share a line index (line: long[B, 12] in 0..lines-1)."""
    onehot = torch.nn.functional.one_hot(line.clamp(0, lines - 1), lines) * on_board[..., None]
    return (onehot.sum(1) <= 1).all(-1)


class NQueensRequest(BaseModel):
    """The /solve fields of an N-Queens request (the service adds the common ones: width, seed, ...)."""

    task: Literal["nqueens"]
    n: StrictInt = Field(description="board size, 4..12")
    queens: list[tuple[StrictInt, StrictInt]] = Field(
        default_factory=list, description="queens already placed, [row, col] 0-based"
    )
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"task": "nqueens", "n": 8, "queens": [[0, 0]], "max_solutions": 4, "seed": 0}]
        }
    )


# OpenAPI examples of POST /solve bodies
EXAMPLES: dict[str, dict[str, Any]] = {
    "nqueens": {
        "summary": "N-Queens, one queen placed",
        "value": {"task": "nqueens", "n": 8, "queens": [[0, 0]], "max_solutions": 4, "seed": 0},
    },
}


class NQueensTask(GeneratedPairs):
    name = "nqueens"
    spec = SPEC
    request_model = NQueensRequest
    openapi_examples = EXAMPLES

    # ---- codec -------------------------------------------------------------------------------------
    def parse(self, body: dict[str, Any]) -> Instance:
        n = as_int(require(body, "n"), "n", MIN_N, MAX_N)
        raw = body.get("queens") or []
        pairs = as_int_pairs(raw, "queens")
        for i, (r, c) in enumerate(pairs):
            if not (0 <= r < n and 0 <= c < n):
                raise TaskInputError(
                    f"queens[{i}] = [{r}, {c}] is off the {n}x{n} board (rows and columns are 0..{n - 1})",
                    "queens",
                )
        for i, a in enumerate(pairs):
            for j in range(i + 1, len(pairs)):
                b = pairs[j]
                if a == b:
                    raise TaskInputError(
                        f"queens[{i}] and queens[{j}] are both at [{a[0]}, {a[1]}]", "queens"
                    )
                reason = attack_reason(a, b)
                if reason:
                    raise TaskInputError(
                        f"queens[{i}] = [{a[0]}, {a[1]}] and queens[{j}] = [{b[0]}, {b[1]}] attack each "
                        f"other ({reason})",
                        "queens",
                    )
        placed = dict(pairs)
        return Instance(self.name, placement_tokens(n, placed), {"n": n, "queens": sorted(pairs)})

    def format(self, instance: Instance, y: torch.Tensor) -> dict[str, Any]:
        n = instance.meta.get("n") or board_size(instance.x)
        placed = queens_of(y)
        queens = [[r, placed[r]] for r in sorted(placed) if r < n and placed[r] < n]
        board = ["".join("Q" if placed.get(r) == c else "." for c in range(n)) for r in range(n)]
        return {"queens": queens, "board": board}

    def canonical_key(self, x: torch.Tensor, y: torch.Tensor) -> bytes:
        """The labelled board: distinct boards are distinct solutions (the paper's coverage)."""
        return small_ints_key(y.reshape(-1).tolist())

    def answer_mask(self, x: torch.Tensor) -> torch.Tensor:
        return x != PAD

    # ---- verifier ----------------------------------------------------------------------------------
    def verify(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        check_batch(self.spec, y, x)
        yy, xx = y[..., 0], x[..., 0]
        rows = _row_index(x.device)
        # x must be a board of n >= 4 leading rows, each OPEN or a queen on the board.
        n = (xx != PAD).sum(-1, keepdim=True)  # [B, 1]
        on_board = rows < n  # [B, 12]
        x_ok = ((xx != PAD) == on_board).all(-1) & (n[:, 0] >= MIN_N) & (xx < COL0 + n).all(-1)
        # y: a queen on the board in every board row, PAD below, and every given queen kept.
        col = yy - COL0
        y_ok = torch.where(on_board, (col >= 0) & (col < n), yy == PAD).all(-1)
        kept = torch.where(xx >= COL0, yy == xx, True).all(-1)
        # Distinct columns, diagonals (col - row) and anti-diagonals (col + row) among the board rows.
        lines_ok = (
            _at_most_one_per_line(col, on_board, SIDE)
            & _at_most_one_per_line(col - rows + SIDE - 1, on_board, 2 * SIDE - 1)
            & _at_most_one_per_line(col + rows, on_board, 2 * SIDE - 1)
        )
        return x_ok & y_ok & kept & lines_ok

    # ---- solver ------------------------------------------------------------------------------------
    def solve(self, instance: Instance, cap: int) -> list[torch.Tensor]:
        n = board_size(instance.x)
        given = queens_of(instance.x)
        out: list[torch.Tensor] = []
        for cols in completions(n, given):
            if len(out) >= cap:
                break
            out.append(placement_tokens(n, dict(enumerate(cols))))
        return out

    # ---- data --------------------------------------------------------------------------------------
    def generate(
        self,
        rng: random.Random,
        n: int | None = None,
        given: int | None = None,
        min_completions: int = 1,
        max_completions: int | None = None,
        max_tries: int = 1000,
    ) -> tuple[Instance, torch.Tensor]:
        """A partial placement with ``given`` queens of a random solution; the target is that solution.

        ``n``: default random from 4..12 with 8 and 10 four times as likely as the others.
        ``given``: default 1..3 (the paper's 8x8 setting keeps 1-3 of 8 queens).
        Completion counts between ``min_completions`` and ``max_completions`` (rejection sampling).
        """
        if n is None:
            sizes = list(DEFAULT_N_WEIGHTS)
            n = rng.choices(sizes, weights=[DEFAULT_N_WEIGHTS[s] for s in sizes])[0]
        if not MIN_N <= n <= MAX_N:
            raise ValueError(f"n must be in {MIN_N}..{MAX_N}, got {n}")
        solutions = all_solutions(n)
        for _ in range(max_tries):
            k = rng.randint(1, min(3, n - 1)) if given is None else given
            if not 0 <= k <= n:
                raise ValueError(f"given must be in 0..{n}, got {k}")
            target = solutions[rng.randrange(len(solutions))]
            rows = sorted(rng.sample(range(n), k))
            kept = {r: target[r] for r in rows}
            count = sum(1 for s in solutions if all(s[r] == c for r, c in kept.items()))
            if count >= min_completions and (max_completions is None or count <= max_completions):
                x = placement_tokens(n, kept)
                meta = {"n": n, "queens": [[r, c] for r, c in kept.items()], "completions": count}
                return Instance(self.name, x, meta), placement_tokens(n, dict(enumerate(target)))
        raise ValueError(
            f"no {n}x{n} instance with {given} given queens and {min_completions}..{max_completions} "
            f"completions found in {max_tries} tries"
        )

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One of the 8 symmetries of the n x n board (kept top-left inside the 12 x 12 padding)."""
        return self.symmetry(x, y, rng.randrange(8))

    def symmetry(self, x: torch.Tensor, y: torch.Tensor, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetry ``which`` in 0..7 of the n x n board: ``which % 4`` quarter turns, then a transpose when
        ``which >= 4``. Queens never share a row or column, so the image is again one queen per row."""
        n = board_size(x)

        def move(r: int, c: int) -> tuple[int, int]:
            for _ in range(which % 4):  # quarter turn, as torch.rot90 on the board
                r, c = n - 1 - c, r
            return (c, r) if which >= 4 else (r, c)

        def apply(t: torch.Tensor) -> torch.Tensor:
            return placement_tokens(n, dict(move(r, c) for r, c in queens_of(t).items())).reshape(t.shape)

        return apply(x), apply(y)


TASK = NQueensTask()
