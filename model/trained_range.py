"""What the shipped checkpoints were trained on, in words (model cards, GET /models) and as a check the
service runs on every request (``outside``): a request outside the range is still answered, with a note
saying so, because the model's answers there are extrapolation (e.g. Sudoku grids far emptier than any
training puzzle).

Both follow the training mixtures in model/data.py; a checkpoint's card keeps the words it was trained
under (``input_range``), so the check applies to checkpoints whose card states a range.
"""

from __future__ import annotations

from model.tasks.base import Instance

TRAINED_RANGE: dict[str, str] = {
    "nqueens": "n = 4..12 (45 % 8x8, 45 % 10x10); 8x8 and 10x10 with 0 to n - 1 given queens (empty "
               "boards included), other sizes with 0-3",
    "graph_coloring": "2-16 nodes, 2-4 colours (70 % 8 or 10 nodes near the 3-colourability threshold); "
                      "1-3 fixed colours only with 3 colours and at most 12 nodes",
    "sudoku": "unique-solution puzzles: 36-45 givens (10 %), 28-35 (30 %), minimal puzzles needing "
              "guesses, 22-27 givens (60 %); no empty or near-empty grids",
    "mnist": "unconditional (no input)",
}

SUDOKU_MIN_GIVENS = 21  # the emptiest minimal puzzles the generator makes have 21-22 givens
NQUEENS_WIDE_SIZES = (8, 10)  # sizes trained with any number of given queens
NQUEENS_MAX_GIVEN_OTHER = 3
COLORING_FIXED = (3, 12, 3)  # fixed colours trained with: colours, at most nodes, at most fixed


def outside(instance: Instance) -> str | None:
    """Why ``instance`` lies outside the training range, in a sentence; None when it lies inside."""
    meta = instance.meta
    if instance.task == "sudoku":
        givens = int(meta.get("givens", 81))
        if givens < SUDOKU_MIN_GIVENS:
            return (f"the puzzle has {givens} givens; the model was trained on puzzles with at least "
                    f"{SUDOKU_MIN_GIVENS}, each with one solution")
    elif instance.task == "nqueens":
        n, given = int(meta.get("n", 0)), len(meta.get("queens", []))
        if n not in NQUEENS_WIDE_SIZES and given > NQUEENS_MAX_GIVEN_OTHER:
            return (f"{given} given queens on a {n}x{n} board; the model saw at most "
                    f"{NQUEENS_MAX_GIVEN_OTHER} given queens on boards other than 8x8 and 10x10")
    elif instance.task == "graph_coloring":
        fixed = meta.get("fixed") or {}
        k, n = int(meta.get("num_colors", 0)), int(meta.get("num_nodes", 0))
        colors, max_nodes, max_fixed = COLORING_FIXED
        if fixed and (k != colors or n > max_nodes or len(fixed) > max_fixed):
            return (f"{len(fixed)} fixed colours with {k} colours on {n} nodes; the model saw fixed colours "
                    f"only with {colors} colours, at most {max_nodes} nodes and {max_fixed} fixed")
        if n < 3 or (n < 4 and k > 2):
            return f"{n} nodes with {k} colours: the model saw graphs of 4-16 nodes (3-16 with 2 colours)"
    return None
