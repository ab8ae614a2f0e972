"""Exact 9x9 Sudoku search on plain lists (0 = blank, 1..9 digits): bitmask backtracking.

Each node fills the blank cell with the fewest candidates (minimum remaining values), so forced cells
cost no branching; ``guesses`` counts nodes that had to branch, the hardness measure of the generator.
``singles_solve`` is the human-style propagation (naked + hidden singles): a puzzle it cannot finish
"needs guessing", the property of the Sudoku-Extreme tier.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ALL = 0x1FF  # nine digit bits
ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]
UNITS: list[list[int]] = (
    [[r * 9 + c for c in range(9)] for r in range(9)]
    + [[r * 9 + c for r in range(9)] for c in range(9)]
    + [[(b // 3) * 27 + (b % 3) * 3 + (k // 3) * 9 + k % 3 for k in range(9)] for b in range(9)]
)
DIGIT_OF_BIT = {1 << d: d + 1 for d in range(9)}


@dataclass
class SearchResult:
    solutions: list[list[int]] = field(default_factory=list)
    nodes: int = 0  # search nodes visited
    guesses: int = 0  # nodes that branched on a cell with 2+ candidates
    complete: bool = True  # False when ``max_nodes`` stopped the search before it was exhaustive


def _masks(grid: list[int]) -> tuple[list[int], list[int], list[int]] | None:
    """Digit bitmasks used per row, column and box; None when a given repeats."""
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, d in enumerate(grid):
        if d:
            bit = 1 << (d - 1)
            if (rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & bit:
                return None
            rows[ROW[i]] |= bit
            cols[COL[i]] |= bit
            boxes[BOX[i]] |= bit
    return rows, cols, boxes


def search(
    grid: list[int], cap: int = 2, rng: random.Random | None = None, max_nodes: int | None = None
) -> SearchResult:
    """Up to ``cap`` solutions of ``grid``; ``rng`` shuffles the digit order (random full grids);
    ``max_nodes`` bounds the work (the result then says ``complete`` False)."""
    result = SearchResult()
    masks = _masks(grid)
    if masks is None or cap <= 0:
        return result
    rows, cols, boxes = masks
    cells = list(grid)
    blanks = [i for i in range(81) if not cells[i]]

    def rec(remaining: int) -> bool:
        """Returns True when the cap is reached (stop everything)."""
        result.nodes += 1
        if max_nodes is not None and result.nodes > max_nodes:
            result.complete = False
            return True
        if remaining == 0:
            result.solutions.append(list(cells))
            return len(result.solutions) >= cap
        best, best_free, best_count = -1, 0, 10
        for i in blanks:
            if cells[i]:
                continue
            free = ALL & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]])
            count = free.bit_count()
            if count < best_count:
                best, best_free, best_count = i, free, count
                if count <= 1:
                    break
        if best_count == 0:
            return False
        if best_count > 1:
            result.guesses += 1
        options = []
        while best_free:
            bit = best_free & -best_free
            best_free ^= bit
            options.append(bit)
        if rng is not None:
            rng.shuffle(options)
        r, c, b = ROW[best], COL[best], BOX[best]
        for bit in options:
            cells[best] = DIGIT_OF_BIT[bit]
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            stop = rec(remaining - 1)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            cells[best] = 0
            if stop:
                return True
        return False

    rec(len(blanks))
    return result


def count_solutions(grid: list[int], cap: int) -> int:
    return len(search(grid, cap).solutions)


def random_full_grid(rng: random.Random) -> list[int]:
    """A uniformly-shuffled search's first solution from the empty grid."""
    return search([0] * 81, cap=1, rng=rng).solutions[0]


def singles_solve(grid: list[int]) -> list[int]:
    """Fill every cell that naked or hidden singles force; returns the grid reached (0 where stuck)."""
    cells = list(grid)
    changed = True
    while changed:
        changed = False
        masks = _masks(cells)
        if masks is None:
            return cells
        rows, cols, boxes = masks
        cand = [0] * 81
        for i in range(81):
            if not cells[i]:
                cand[i] = ALL & ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]])
                if cand[i] and cand[i] & (cand[i] - 1) == 0:  # naked single
                    cells[i] = DIGIT_OF_BIT[cand[i]]
                    changed = True
        if changed:
            continue
        for unit in UNITS:
            for d in range(9):
                bit = 1 << d
                spots = [i for i in unit if cand[i] & bit]
                if len(spots) == 1 and not cells[spots[0]]:  # hidden single
                    cells[spots[0]] = d + 1
                    changed = True
                    break
            if changed:
                break
    return cells


def needs_guessing(grid: list[int]) -> bool:
    return 0 in singles_solve(grid)
