"""Sudoku 9x9.

Tokens (L = 81, row-major): input 1 blank, 2..10 digits 1-9; output 2..10 (every cell is answer, givens
included). Requests give ``puzzle`` as an 81-character string ('.' or '0' blank) or a 9x9 list of ints
(0 blank); solutions come back in the same shape (a string of digits or a 9x9 list).

Generation: a random full grid, then givens removed in random order while the solution stays unique.
Tiers (``difficulty``): "easy" 36-45 givens, "medium" 28-35, "hard" minimal puzzles (no given can be
removed) that naked and hidden singles cannot finish, i.e. that need guessing like Sudoku-Extreme, with
at least ``min_guesses`` branching nodes in the exact search; "multi" puzzles with 2..``max_solutions``
solutions. ``min_givens``/``max_givens`` override the range of the unique tiers. ``meta`` reports the
solver's search nodes and guesses as the hardness measure. Generating a hard puzzle costs tens of
milliseconds in Python, so the trainer should build a fixed set once with ``generate_dataset`` and
draw from it with ``sample_training_pair(rng, dataset=...)`` (augmented on the fly).
"""

from __future__ import annotations

import functools
import random
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from model.tasks.base import PAD, Instance, TaskInputError, TaskSpec
from model.tasks.datasets import GeneratedPairs, Pairs, generate_dataset
from model.tasks.fields import require
from model.tasks.sudoku_solver import (
    COL,
    ROW,
    UNITS,
    count_solutions,
    needs_guessing,
    random_full_grid,
    search,
)
from model.tasks.tensors import check_batch, small_ints_key

BLANK = 1
DIGIT0 = 2  # token of digit d is d + 1, so digit 1 -> 2, digit 9 -> 10
SPEC = TaskSpec(seq_len=81, in_group=1, in_vocab=11, out_group=1, out_vocab=11)
# Givens ranges per tier ("hard" is bounded by minimality, not by a range).
TIERS: dict[str, tuple[int, int]] = {
    "easy": (36, 45),
    "medium": (28, 35),
    "hard": (17, 81),
    "multi": (22, 40),
}
_UNIT_NAMES = ["row", "column", "box"]


def grid_tokens(grid: list[int]) -> torch.Tensor:
    """LongTensor[81, 1] from a list (0 blank): blank -> 1, digit d -> d + 1."""
    return torch.tensor([d + 1 if d else BLANK for d in grid], dtype=torch.long).reshape(81, 1)


def tokens_grid(tokens: torch.Tensor) -> list[int]:
    """Inverse of grid_tokens (blank and PAD -> 0)."""
    return [t - 1 if t >= DIGIT0 else 0 for t in tokens.reshape(-1).tolist()]


def _cell(i: int) -> str:
    return f"[{ROW[i]}, {COL[i]}]"


def repeated_givens(grid: list[int]) -> list[str]:
    """One message per row/column/box in which a given digit repeats (cells 0-based [row, col])."""
    problems = []
    for u, unit in enumerate(UNITS):
        seen: dict[int, list[int]] = {}
        for i in unit:
            if grid[i]:
                seen.setdefault(grid[i], []).append(i)
        for digit, cells in sorted(seen.items()):
            if len(cells) > 1:
                kind, index = _UNIT_NAMES[u // 9], u % 9
                where = ", ".join(_cell(i) for i in cells)
                problems.append(f"digit {digit} repeats in {kind} {index} at cells {where}")
    return problems


def _parse_grid(puzzle: Any) -> tuple[list[int], str]:
    """(cells, input format) from an 81-char string or a 9x9 list; TaskInputError on anything else."""
    if isinstance(puzzle, str):
        if len(puzzle) != 81:
            raise TaskInputError(f"'puzzle' string must have 81 characters, got {len(puzzle)}", "puzzle")
        cells = []
        for i, ch in enumerate(puzzle):
            if ch in ".0":
                cells.append(0)
            elif ch in "123456789":
                cells.append(int(ch))
            else:
                raise TaskInputError(
                    f"'puzzle' has {ch!r} at index {i} (cell {_cell(i)}): use digits 1-9 and '.' or '0' "
                    "for blanks",
                    "puzzle",
                )
        return cells, "string"
    if isinstance(puzzle, list):
        if len(puzzle) != 9:
            raise TaskInputError(f"'puzzle' grid must have 9 rows, got {len(puzzle)}", "puzzle")
        cells = []
        for r, row in enumerate(puzzle):
            if not isinstance(row, list) or len(row) != 9:
                got = f"{len(row)} cells" if isinstance(row, list) else type(row).__name__
                raise TaskInputError(f"'puzzle' row {r} must be a list of 9 ints, got {got}", "puzzle")
            for c, v in enumerate(row):
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9:
                    raise TaskInputError(f"puzzle[{r}][{c}] = {v!r} is not an int 0-9 (0 = blank)", "puzzle")
                cells.append(v)
        return cells, "grid"
    raise TaskInputError(
        f"'puzzle' must be an 81-character string or a 9x9 list of ints, got {type(puzzle).__name__}",
        "puzzle",
    )


_BITS_TABLE = 16  # tokens are clamped into this table; every non-digit entry is 0


@functools.cache
def _digit_bits(device: torch.device) -> torch.Tensor:
    """int32[16]: token -> 1 << digit for digit tokens 2..10, 0 for PAD, blank and out-of-vocab."""
    table = [0, 0] + [1 << d for d in range(9)] + [0] * (_BITS_TABLE - 11)
    return torch.tensor(table, dtype=torch.int32, device=device)


EXAMPLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


class SudokuRequest(BaseModel):
    """The /solve fields of a Sudoku request (the service adds the common ones: width, seed, ...)."""

    task: Literal["sudoku"]
    puzzle: StrictStr | list[list[StrictInt]] = Field(
        description="81 characters ('.' or '0' blank) or a 9x9 array of ints (0 blank)"
    )
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"task": "sudoku", "puzzle": EXAMPLE, "seed": 0}]}
    )


# OpenAPI examples of POST /solve bodies
EXAMPLES: dict[str, dict[str, Any]] = {
    "sudoku": {
        "summary": "Sudoku (81-char string, '.' blank)",
        "value": {"task": "sudoku", "puzzle": EXAMPLE, "num_trajectories": 8, "seed": 0},
    },
    "sudoku_grid": {
        "summary": "Sudoku (9x9 array, 0 blank)",
        "value": {"task": "sudoku", "puzzle": [[0] * 9 for _ in range(9)], "max_solutions": 3, "seed": 1},
    },
}


class SudokuTask(GeneratedPairs):
    name = "sudoku"
    spec = SPEC
    request_model = SudokuRequest
    openapi_examples = EXAMPLES

    # ---- codec -------------------------------------------------------------------------------------
    def parse(self, body: dict[str, Any]) -> Instance:
        cells, fmt = _parse_grid(require(body, "puzzle"))
        problems = repeated_givens(cells)
        if problems:
            raise TaskInputError("; ".join(problems), "puzzle")
        return Instance(self.name, grid_tokens(cells), {"format": fmt, "givens": 81 - cells.count(0)})

    def format(self, instance: Instance, y: torch.Tensor) -> str | list[list[int]]:
        digits = tokens_grid(y)
        if instance.meta.get("format") == "grid":
            return [digits[r * 9 : r * 9 + 9] for r in range(9)]
        return "".join(str(d) for d in digits)

    def canonical_key(self, x: torch.Tensor, y: torch.Tensor) -> bytes:
        return small_ints_key(y.reshape(-1).tolist())

    def answer_mask(self, x: torch.Tensor) -> torch.Tensor:
        return x != PAD

    # ---- verifier ----------------------------------------------------------------------------------
    def verify(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Every cell a digit, givens kept, each row/column/box holding 1-9 once.

        Each token maps to ``1 << digit`` (non-digit tokens to 0) and a unit is a permutation iff its 9
        values sum to 511: nine powers of two add up to 2^9 - 1 (popcount 9) only when all differ, and a
        0 leaves at most 8 bits. So three strided sums check all 27 units of the batch, no gathers.
        """
        check_batch(self.spec, y, x)
        yy, xx = y[..., 0], x[..., 0]
        batch = yy.shape[0]
        bits = _digit_bits(y.device)[yy.clamp(0, _BITS_TABLE - 1)].view(batch, 9, 9)
        rows = bits.sum(2, dtype=torch.int32)
        cols = bits.sum(1, dtype=torch.int32)
        boxes = bits.view(batch, 3, 3, 3, 3).sum((2, 4), dtype=torch.int32).view(batch, 9)
        units_ok = ((rows == 511) & (cols == 511) & (boxes == 511)).all(-1)
        # A cell must be blank in x or equal to its given; a PAD or out-of-vocabulary input token then
        # forces the same non-digit into y, which the unit sums reject.
        keeps_givens = ((xx == BLANK) | (yy == xx)).all(-1)
        return units_ok & keeps_givens

    # ---- solver ------------------------------------------------------------------------------------
    def solve(self, instance: Instance, cap: int) -> list[torch.Tensor]:
        return [grid_tokens(s) for s in search(tokens_grid(instance.x), cap).solutions]

    # ---- data --------------------------------------------------------------------------------------
    def generate(
        self,
        rng: random.Random,
        difficulty: str = "hard",
        min_givens: int | None = None,
        max_givens: int | None = None,
        min_guesses: int = 1,
        max_solutions: int = 20,
        max_tries: int = 200,
    ) -> tuple[Instance, torch.Tensor]:
        """A puzzle and its (for "multi": one of its) solutions; see the module docstring for tiers."""
        if difficulty not in TIERS:
            raise ValueError(f"difficulty must be one of {sorted(TIERS)}, got {difficulty!r}")
        lo, hi = TIERS[difficulty]
        lo = lo if min_givens is None else min_givens
        hi = hi if max_givens is None else max_givens
        for _ in range(max_tries):
            solution = random_full_grid(rng)
            if difficulty == "multi":
                puzzle = self._carve_multi(solution, rng, lo, hi, max_solutions)
            else:
                minimal = difficulty == "hard" and min_givens is None and max_givens is None
                puzzle = self._carve_unique(solution, rng, 0 if minimal else rng.randint(lo, hi))
                if difficulty == "hard" and not needs_guessing(puzzle):
                    continue
            if puzzle is None:
                continue
            givens = 81 - puzzle.count(0)
            if not lo <= givens <= hi:
                continue
            stats = search(puzzle, cap=max_solutions + 1 if difficulty == "multi" else 2)
            if difficulty == "hard" and stats.guesses < min_guesses:
                continue
            meta = {
                "format": "string",
                "difficulty": difficulty,
                "givens": givens,
                "nodes": stats.nodes,
                "guesses": stats.guesses,
                "solutions": len(stats.solutions),
            }
            return Instance(self.name, grid_tokens(puzzle), meta), grid_tokens(solution)
        raise ValueError(f"no {difficulty} puzzle with {lo}..{hi} givens found in {max_tries} tries")

    @staticmethod
    def _carve_unique(solution: list[int], rng: random.Random, target: int) -> list[int]:
        """Remove givens in random order, keeping each removal only if the solution stays unique."""
        puzzle = list(solution)
        order = list(range(81))
        rng.shuffle(order)
        givens = 81
        for i in order:
            if givens <= target:
                break
            digit, puzzle[i] = puzzle[i], 0
            if count_solutions(puzzle, 2) == 1:
                givens -= 1
            else:
                puzzle[i] = digit
        return puzzle

    def _carve_multi(
        self, solution: list[int], rng: random.Random, lo: int, hi: int, max_solutions: int
    ) -> list[int] | None:
        """A unique puzzle with a few more givens removed until it has 2..max_solutions solutions."""
        puzzle = self._carve_unique(solution, rng, rng.randint(lo + 1, max(lo + 1, hi)))
        filled = [i for i in range(81) if puzzle[i]]
        rng.shuffle(filled)
        for i in filled:
            puzzle[i] = 0
            count = count_solutions(puzzle, max_solutions + 1)
            if 2 <= count <= max_solutions:
                return puzzle
            if count > max_solutions:
                return None
        return None

    def sample_training_pair(
        self, rng: random.Random, dataset: Pairs | None = None, **knobs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path for trainers: an augmented pair drawn from a fixed set of puzzles.

        The set is ``dataset`` when given, else ``pool_size`` (default ``POOL_SIZE``) puzzles generated
        once per knob setting from seed ``POOL_SEED`` and cached in the process (the TRM recipe: a
        fixed puzzle set, each seen under many of its ~10^12 symmetric variants).
        Deterministic in ``rng`` because the pool is.
        """
        pool = dataset if dataset else _pool(tuple(sorted(knobs.items())))
        x, y = pool[rng.randrange(len(pool))]
        return self.augment(x, y, rng)

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Digit relabelling, band/stack order, rows within bands, columns within stacks, transpose."""
        digits = list(range(1, 10))
        rng.shuffle(digits)
        rows = self._line_order(rng)
        cols = self._line_order(rng)
        return self.transform(x, y, digits, rows, cols, rng.random() < 0.5)

    @staticmethod
    def _line_order(rng: random.Random) -> list[int]:
        bands = [0, 1, 2]
        rng.shuffle(bands)
        order = []
        for b in bands:
            within = [0, 1, 2]
            rng.shuffle(within)
            order += [b * 3 + r for r in within]
        return order

    @staticmethod
    def transform(
        x: torch.Tensor, y: torch.Tensor, digits: list[int], rows: list[int], cols: list[int], transpose: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Digit d becomes ``digits[d - 1]``; new row i is old row ``rows[i]`` (same for columns)."""
        lut = torch.tensor([PAD, BLANK] + [d + 1 for d in digits], dtype=torch.long)
        r = torch.tensor(rows, dtype=torch.long)
        c = torch.tensor(cols, dtype=torch.long)

        def apply(t: torch.Tensor) -> torch.Tensor:
            grid = lut[t.reshape(9, 9)][r][:, c]
            if transpose:
                grid = grid.transpose(0, 1)
            return grid.reshape(t.shape).contiguous()

        return apply(x), apply(y)


TASK = SudokuTask()

POOL_SEED = 20_260_529
POOL_SIZE = 512  # ~40 s of generation for the default (hard) tier on one CPU core, once per process


@functools.cache
def _pool(knobs: tuple[tuple[str, Any], ...]) -> Pairs:
    given = dict(knobs)
    size = int(given.pop("pool_size", POOL_SIZE))
    return generate_dataset(TASK, POOL_SEED, size, **given)
