"""An N-Queens answer as a chequered board; the queens the request placed stand apart from the found ones."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from service.render.canvas import Circle, Drawing, Label, Rect

CELL = 40
MARGIN = 6
LIGHT, DARK = "#f0d9b5", "#b58863"
GIVEN_QUEEN = "#c0392b"
FOUND_QUEEN = "#1b1b1b"
QUEEN_RIM = "#ffffff"


def placed(solution: Any) -> list[tuple[int, int]]:
    """(row, col) of every queen in an answer ({queens, board})."""
    return [(int(r), int(c)) for r, c in solution["queens"]]


def draw(fields: dict[str, Any], solution: Any) -> Drawing:
    n = int(fields["n"])
    given = {(int(r), int(c)) for r, c in fields.get("queens") or []}
    side = n * CELL + 2 * MARGIN
    drawing = Drawing(side, side)
    for r in range(n):
        for c in range(n):
            drawing.add(Rect(MARGIN + c * CELL, MARGIN + r * CELL, CELL, CELL,
                             fill=LIGHT if (r + c) % 2 == 0 else DARK))
    for r, c in placed(solution):
        cx, cy = MARGIN + (c + 0.5) * CELL, MARGIN + (r + 0.5) * CELL
        is_given = (r, c) in given
        data = {"row": str(r), "col": str(c), "given": "true" if is_given else "false"}
        fill = GIVEN_QUEEN if is_given else FOUND_QUEEN
        drawing.add(Circle(cx, cy, CELL * 0.36, fill, QUEEN_RIM, 1.5, data),
                    Label(cx, cy, "Q", CELL * 0.4, QUEEN_RIM, bold=True))
    drawing.add(Rect(MARGIN, MARGIN, n * CELL, n * CELL, stroke="#000000", width=1.5))
    return drawing


def terminal(fields: dict[str, Any], solution: Any) -> Text:
    """Two columns a square: ♛ on a chequered board (· empty; readable without colour), given queens red."""
    n = int(fields["n"])
    given = {(int(r), int(c)) for r, c in fields.get("queens") or []}
    queens = set(placed(solution))
    text = Text()
    for r in range(n):
        for c in range(n):
            square = "on bright_white" if (r + c) % 2 == 0 else "on white"
            if (r, c) in queens:
                ink = "bold red" if (r, c) in given else "bold black"
                text.append("♛ ", style=f"{ink} {square}")
            else:
                text.append("· ", style=f"grey30 {square}")
        text.append("\n")
    text.append("♛ given", style="bold red")
    text.append(" / ")
    text.append("♛ placed by the model", style="bold")
    return text
