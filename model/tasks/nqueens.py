"""N-Queens on an n x n board, n = 4..12, with optional pre-placed queens.

Tokens: the board sits top-left in a fixed 12 x 12 grid (L = 144, row-major); cells outside the n x n
board are PAD (0), so one model serves every n and ``n`` is recoverable from ``x`` (the number of
non-PAD cells in row 0). Input: 1 empty, 2 pre-placed queen. Output: 1 empty, 2 queen.

Generation follows the paper (GRAM C.2.1): take a complete solution, keep only ``given`` of its queens
(1-3 by default, as 8x8 with 5-7 removed); the target is the original board, and the input usually has
several completions. ``min_completions`` / ``max_completions`` stratify by completion count.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from typing import Any

import torch

from model.tasks.base import PAD, Instance, TaskInputError, TaskSpec
from model.tasks.datasets import GeneratedPairs
from model.tasks.fields import as_int, as_int_pairs, require
from model.tasks.tensors import check_batch, small_ints_key

SIDE = 12  # the padded board every n is embedded in
MIN_N, MAX_N = 4, 12
EMPTY, QUEEN = 1, 2
SPEC = TaskSpec(seq_len=SIDE * SIDE, in_group=1, in_vocab=3, out_group=1, out_vocab=3)
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
    """LongTensor[144, 1]: the n x n board top-left, 1 empty / 2 queen inside, PAD outside."""
    board = torch.full((SIDE, SIDE), PAD, dtype=torch.long)
    board[:n, :n] = EMPTY
    for r, c in queens.items():
        board[r, c] = QUEEN
    return board.reshape(SIDE * SIDE, 1)


def board_size(x: torch.Tensor) -> int:
    """n of one input x [144, 1] (non-PAD cells of row 0)."""
    return int((x.reshape(SIDE, SIDE)[0] != PAD).sum())


def queens_of(tokens: torch.Tensor) -> dict[int, int]:
    """row -> column of the queens in a token board [144, 1] (first queen of a row wins)."""
    board = tokens.reshape(SIDE, SIDE)
    rows, cols = (board == QUEEN).nonzero(as_tuple=True)
    placed: dict[int, int] = {}
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        placed.setdefault(r, c)
    return placed


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
def _line_matrix(device: torch.device) -> torch.Tensor:
    """float[144, 70]: one-hot of each cell's row (12), column (12), diagonal (23), anti-diagonal (23).

    ``queens @ M`` counts queens per line for a whole batch in one matmul.
    """
    idx = torch.arange(SIDE * SIDE)
    r, c = idx // SIDE, idx % SIDE
    m = torch.zeros(SIDE * SIDE, 2 * SIDE + 2 * (2 * SIDE - 1))
    m[idx, r] = 1
    m[idx, SIDE + c] = 1
    m[idx, 2 * SIDE + (r - c + SIDE - 1)] = 1
    m[idx, 2 * SIDE + (2 * SIDE - 1) + (r + c)] = 1
    return m.to(device)


@functools.cache
def _legal_cell_pairs(device: torch.device) -> torch.Tensor:
    """bool[25] over (x + 1) * 5 + (y + 1), tokens clamped to -1..3: the legal (input, output) pairs."""
    table = torch.zeros(25, dtype=torch.bool)
    for x_tok, y_tok in ((PAD, PAD), (EMPTY, EMPTY), (EMPTY, QUEEN), (QUEEN, QUEEN)):
        table[(x_tok + 1) * 5 + y_tok + 1] = True
    return table.to(device)


@functools.cache
def _cell_rows_cols(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of each of the 144 cells."""
    idx = torch.arange(SIDE * SIDE, device=device)
    return idx // SIDE, idx % SIDE


class NQueensTask(GeneratedPairs):
    name = "nqueens"
    spec = SPEC

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
        # One table lookup per cell checks both vocabularies, PAD exactly off the board, and kept givens.
        code = (xx.clamp(-1, 3) + 1) * 5 + (yy.clamp(-1, 3) + 1)
        cells_ok = _legal_cell_pairs(x.device)[code].all(-1)
        # x must be a top-left n x n board with n >= 4 (n = non-PAD cells of row 0).
        n = (xx[:, :SIDE] != PAD).sum(-1, keepdim=True)  # [B, 1]
        rows, cols = _cell_rows_cols(x.device)
        inside = (rows < n) & (cols < n)
        board_ok = ((xx != PAD) == inside).all(-1) & (n[:, 0] >= MIN_N)
        counts = (yy == QUEEN).to(torch.float32) @ _line_matrix(x.device)  # [B, 70] queens per line
        need = (cols[:SIDE] < n).to(torch.float32)  # one queen in each of the first n rows and columns
        lines_ok = (
            (counts[:, :SIDE] == need).all(-1)
            & (counts[:, SIDE : 2 * SIDE] == need).all(-1)
            & (counts[:, 2 * SIDE :] <= 1).all(-1)
        )
        return cells_ok & board_ok & lines_ok

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
        """Symmetry ``which`` in 0..7: ``which % 4`` quarter turns, then a transpose when ``which >= 4``."""
        n = board_size(x)

        def apply(t: torch.Tensor) -> torch.Tensor:
            grid = t.reshape(SIDE, SIDE).clone()
            sub = torch.rot90(grid[:n, :n], which % 4, dims=(0, 1))
            if which >= 4:
                sub = sub.transpose(0, 1)
            grid[:n, :n] = sub
            return grid.reshape(t.shape)

        return apply(x), apply(y)


TASK = NQueensTask()
