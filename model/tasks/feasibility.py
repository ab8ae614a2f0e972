"""Does a parsed request have any solution at all? Exact searches with a bound on their work.

The service asks this only when the model returned no solution, to tell "no answer exists" (infeasible:
a 2-colouring of an odd cycle, Sudoku givens that contradict each other further down, queens that block
every completion) from "the model did not find one". The answer is True / False only when the search
decided it; None when ``max_nodes`` search nodes were not enough, so infeasibility is never claimed
by guessing.
"""

from __future__ import annotations

from collections.abc import Callable

from model.tasks.base import Instance
from model.tasks.coloring import decode_graph
from model.tasks.nqueens import board_size, queens_of
from model.tasks.sudoku import tokens_grid
from model.tasks.sudoku_solver import search

MAX_NODES = 200_000  # ~0.2-0.5 s of Python search; every small instance a user sends finishes far below


class _Budget(Exception):
    """The search used its nodes without deciding."""


def has_solution(instance: Instance, max_nodes: int = MAX_NODES) -> bool | None:
    """True / False when an exact search decided it within ``max_nodes`` nodes, else None (also for a
    task with no check: MNIST has no notion of infeasible)."""
    check = _CHECKS.get(instance.task)
    if check is None:
        return None
    try:
        return check(instance, max_nodes)
    except _Budget:
        return None


def _sudoku(instance: Instance, max_nodes: int) -> bool:
    result = search(tokens_grid(instance.x), cap=1, max_nodes=max_nodes)
    if result.solutions:
        return True
    if not result.complete:
        raise _Budget
    return False


def _nqueens(instance: Instance, max_nodes: int) -> bool:
    n = board_size(instance.x)
    given = queens_of(instance.x)
    full = (1 << n) - 1
    nodes = 0

    def place(row: int, used: int, diag: int, anti: int) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            raise _Budget
        if row == n:
            return True
        free = full & ~(used | diag | anti)
        if row in given:
            free &= 1 << given[row]
        while free:
            bit = free & -free
            free ^= bit
            if place(row + 1, used | bit, ((diag | bit) << 1) & full, (anti | bit) >> 1):
                return True
        return False

    return place(0, 0, 0, 0)


def _coloring(instance: Instance, max_nodes: int) -> bool:
    """Backtracking over nodes by decreasing degree (dense parts fail first), the first unfixed colour
    choice pinned to 0 when nothing is fixed (colours are interchangeable then)."""
    n, masks, k, fixed = decode_graph(instance.x)
    order = sorted(range(n), key=lambda v: (v not in fixed, -masks[v].bit_count()))
    color = [-1] * n
    nodes = 0

    def assign(i: int, used_max: int) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            raise _Budget
        if i == n:
            return True
        v = order[i]
        taken = 0
        for u in range(n):
            if masks[v] >> u & 1 and color[u] >= 0:
                taken |= 1 << color[u]
        if v in fixed:
            options: list[int] | range = [fixed[v]]
        elif fixed:
            options = range(k)
        else:
            options = range(min(k, used_max + 2))  # a new colour: any unused one is as good as another
        for c in options:
            if taken >> c & 1:
                continue
            color[v] = c
            if assign(i + 1, max(used_max, c)):
                return True
        color[v] = -1
        return False

    return assign(0, -1)


_CHECKS: dict[str, Callable[[Instance, int], bool]] = {
    "sudoku": _sudoku, "nqueens": _nqueens, "graph_coloring": _coloring,
}
