"""Request mixes for load tests, as JSON bodies of the HTTP contract (issue 4), deterministic in a seed.

The generators here are self-contained (no model/ import) so a load generator can run on any client
machine; every instance is solvable by construction (pre-placed queens are taken from a real solution,
Sudoku holes are punched in a complete grid, colourings are planted before edges are drawn).

Workloads (``WORKLOADS``):
- ``nqueens8``: N-Queens 8x8 with 1-3 pre-placed queens (mixed; the paper's 8x8 setting);
- ``nqueens6``: the same on 6x6 boards, which the shipped checkpoint solves at the first step;
- ``sudoku``: Sudoku with mixed difficulty (easy 45 / medium 36 / hard 28 givens);
- ``coloring``: graph colouring, 6-12 nodes, 3-4 colours, sometimes a fixed node;
- ``coloring8``: the same recipe at the paper's size only: 8 nodes, 3 colours;
- ``mix``: the three /solve families in equal parts;
- ``mix-sample``: ``mix`` plus 20% unconditional MNIST /sample requests.
Width (``num_trajectories``) is an integer, or ``"mixed"`` for widths drawn from 1, 4, 16, 64.
Answers wanted (``max_solutions`` of /solve) is the service default when unset, an integer (1 = "any one
answer", the common case for a solver), or ``"mixed"`` for 1, 3 or 10 per request.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import typer

MIXED_WIDTHS = (1, 4, 16, 64)
MIXED_MAX_SOLUTIONS = (1, 3, 10)
SUDOKU_GIVENS = {"easy": 45, "medium": 36, "hard": 28}


@dataclass(frozen=True)
class Request:
    path: str  # "/solve" or "/sample"
    body: dict[str, Any]
    kind: str  # label for per-kind breakdowns, e.g. "nqueens8-k2-w16"


Width = int | str
MaxSolutions = int | str | None  # None: the service default
Generator = Callable[[random.Random, Width], Request]


def _width(rng: random.Random, width: Width) -> int:
    if width == "mixed":
        return rng.choice(MIXED_WIDTHS)
    w = int(width)
    if w < 1:
        raise ValueError(f"width must be >= 1 or 'mixed', got {width}")
    return w


def _seed(rng: random.Random) -> int:
    return rng.randrange(2**31)


# ---- N-Queens ---------------------------------------------------------------------------------------


@cache
def nqueens_solutions(n: int) -> tuple[tuple[int, ...], ...]:
    """Every solution as a tuple col[row] (92 for n = 8), by backtracking."""
    out: list[tuple[int, ...]] = []
    cols: list[int] = []

    def place(row: int) -> None:
        if row == n:
            out.append(tuple(cols))
            return
        for c in range(n):
            if all(c != pc and abs(c - pc) != row - pr for pr, pc in enumerate(cols)):
                cols.append(c)
                place(row + 1)
                cols.pop()

    place(0)
    return tuple(out)


def nqueens_request(
    rng: random.Random, width: Width, n: int = 8, preplaced: tuple[int, ...] = (1, 2, 3)
) -> Request:
    k = rng.choice(preplaced)
    solution = rng.choice(nqueens_solutions(n))
    rows = sorted(rng.sample(range(n), k))
    w = _width(rng, width)
    body = {
        "task": "nqueens",
        "n": n,
        "queens": [[r, solution[r]] for r in rows],
        "num_trajectories": w,
        "seed": _seed(rng),
    }
    return Request("/solve", body, f"nqueens{n}-k{k}-w{w}")


# ---- Sudoku -----------------------------------------------------------------------------------------


def sudoku_grid(rng: random.Random) -> list[list[int]]:
    """A random complete Sudoku grid: the canonical pattern under random validity-preserving shuffles."""

    def shuffled_groups() -> list[int]:
        bands = rng.sample(range(3), 3)
        return [3 * b + i for b in bands for i in rng.sample(range(3), 3)]

    rows, cols, digits = shuffled_groups(), shuffled_groups(), rng.sample(range(1, 10), 9)
    return [[digits[(3 * (r % 3) + r // 3 + c) % 9] for c in cols] for r in rows]


def sudoku_request(rng: random.Random, width: Width) -> Request:
    difficulty = rng.choice(sorted(SUDOKU_GIVENS))
    grid = sudoku_grid(rng)
    keep = set(rng.sample(range(81), SUDOKU_GIVENS[difficulty]))
    puzzle = "".join(str(grid[i // 9][i % 9]) if i in keep else "." for i in range(81))
    w = _width(rng, width)
    body = {"task": "sudoku", "puzzle": puzzle, "num_trajectories": w, "seed": _seed(rng)}
    return Request("/solve", body, f"sudoku-{difficulty}-w{w}")


# ---- Graph colouring --------------------------------------------------------------------------------


def coloring_request(rng: random.Random, width: Width, n: int | None = None, k: int | None = None) -> Request:
    n = rng.randint(6, 12) if n is None else n
    k = rng.choice((3, 4)) if k is None else k
    planted = [rng.randrange(k) for _ in range(n)]
    density = rng.uniform(0.3, 0.6)
    edges = [
        [u, v]
        for u in range(n)
        for v in range(u + 1, n)
        if planted[u] != planted[v] and rng.random() < density
    ]
    if not edges:  # a graph with no edge is a trivial request; give it one
        u, v = next((u, v) for u in range(n) for v in range(u + 1, n) if planted[u] != planted[v])
        edges = [[u, v]]
    w = _width(rng, width)
    body: dict[str, Any] = {
        "task": "graph_coloring",
        "num_nodes": n,
        "edges": edges,
        "num_colors": k,
        "num_trajectories": w,
        "seed": _seed(rng),
    }
    if rng.random() < 0.3:
        node = rng.randrange(n)
        body["fixed"] = {str(node): planted[node]}
    return Request("/solve", body, f"coloring-n{n}-k{k}-w{w}")


# ---- MNIST sampling ---------------------------------------------------------------------------------


def sample_request(rng: random.Random, width: Width) -> Request:
    # /sample's "n" is the number of images; the width knob maps onto it, capped by the contract's 64.
    n = min(_width(rng, width), 64) if width != "mixed" else rng.choice((1, 2, 4, 8))
    return Request("/sample", {"n": n, "seed": _seed(rng), "format": "bits"}, f"sample-n{n}")


# ---- Mixes ------------------------------------------------------------------------------------------


def _mixture(parts: list[tuple[float, Generator]]) -> Generator:
    weights = [w for w, _ in parts]
    gens = [g for _, g in parts]

    def make(rng: random.Random, width: Width) -> Request:
        return rng.choices(gens, weights=weights)[0](rng, width)

    return make


WORKLOADS: dict[str, Generator] = {
    "nqueens8": nqueens_request,
    "sudoku": sudoku_request,
    "coloring": coloring_request,
    # A board size the shipped N-Queens checkpoint has mastered (every trajectory valid at step 1): what
    # continuous batching and early exit do for a model that solves.
    "nqueens6": lambda rng, width: nqueens_request(rng, width, n=6),
    # The paper's colouring size, where the shipped checkpoint solves most often.
    "coloring8": lambda rng, width: coloring_request(rng, width, n=8, k=3),
    "mix": _mixture([(1, nqueens_request), (1, sudoku_request), (1, coloring_request)]),
    "mix-sample": _mixture(
        [(4, nqueens_request), (4, sudoku_request), (4, coloring_request), (3, sample_request)]
    ),
}


def parse_width(text: str) -> Width:
    return "mixed" if text == "mixed" else int(text)


def parse_max_solutions(text: str) -> MaxSolutions:
    """ "" (service default), "mixed", or a positive integer."""
    if text in ("", "mixed"):
        return text or None
    value = int(text)
    if value < 1:
        raise ValueError(f"max_solutions must be >= 1 or 'mixed', got {text}")
    return value


def _with_max_solutions(req: Request, max_solutions: MaxSolutions, rng: random.Random) -> Request:
    if max_solutions is None or req.path != "/solve":
        return req
    m = rng.choice(MIXED_MAX_SOLUTIONS) if max_solutions == "mixed" else int(max_solutions)
    return Request(req.path, {**req.body, "max_solutions": m}, f"{req.kind}-s{m}")


def _without_seed(req: Request) -> Request:
    return Request(req.path, {k: v for k, v in req.body.items() if k != "seed"}, req.kind)


def make_requests(
    workload: str, width: Width, count: int, seed: int, max_solutions: MaxSolutions = None,
    seeded: bool = True,
) -> list[Request]:
    """``count`` requests of a workload; the same (workload, width, seed, max_solutions) gives the same
    list, and ``max_solutions`` changes nothing but that field (it draws from its own rng).
    ``seeded=False`` drops each body's seed: the service then draws one and, in continuous mode, answers
    with the first solutions found instead of the reproducible prefix (README, "No seed, first answers")."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose one of {sorted(WORKLOADS)}")
    rng, answers_rng = random.Random(seed), random.Random(seed + 1)
    requests = [
        _with_max_solutions(WORKLOADS[workload](rng, width), max_solutions, answers_rng) for _ in range(count)
    ]
    return requests if seeded else [_without_seed(r) for r in requests]


def main(
    workload: str = typer.Argument("nqueens8", help=f"one of {sorted(WORKLOADS)}"),
    width: str = typer.Option("16", help="num_trajectories per request, or 'mixed' (1/4/16/64)"),
    count: int = typer.Option(3, help="how many requests to print"),
    seed: int = typer.Option(0),
    max_solutions: str = typer.Option("", help="answers wanted per /solve: N, 'mixed' (1/3/10), '' default"),
    seeded: bool = typer.Option(True, help="send seeds (reproducible answers) or not (first answers found)"),
) -> None:
    """Print requests of a workload as JSON lines (what the load generator would send)."""
    for req in make_requests(workload, parse_width(width), count, seed, parse_max_solutions(max_solutions),
                             seeded):
        print(json.dumps({"path": req.path, "kind": req.kind, "body": req.body}))


if __name__ == "__main__":
    typer.run(main)
