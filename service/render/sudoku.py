"""A Sudoku answer as a 9x9 grid with box lines; the puzzle's givens are set apart from the filled digits."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from service.render.canvas import Drawing, Label, Line, Rect

CELL = 40
MARGIN = 6
GIVEN_FILL = "#e6e6e6"
GIVEN_INK = "#000000"
FOUND_INK = "#1f5fbf"


def digits(value: Any) -> list[int]:
    """81 ints (0 blank) from the request's or the answer's format: 81 characters or a 9x9 list."""
    if isinstance(value, str):
        cells = [0 if ch in ".0" else int(ch) for ch in value]
    else:
        cells = [int(d) for row in value for d in row]
    if len(cells) != 81:
        raise ValueError(f"a Sudoku grid has 81 cells, got {len(cells)}")
    return cells


def draw(fields: dict[str, Any], solution: Any) -> Drawing:
    givens, answer = digits(fields["puzzle"]), digits(solution)
    side = 9 * CELL + 2 * MARGIN
    drawing = Drawing(side, side)
    for i, (given, digit) in enumerate(zip(givens, answer, strict=True)):
        r, c = divmod(i, 9)
        x, y = MARGIN + c * CELL, MARGIN + r * CELL
        data = {"cell": str(i), "digit": str(digit), "given": "true" if given else "false"}
        if given:
            drawing.add(Rect(x, y, CELL, CELL, fill=GIVEN_FILL, data=data))
        if digit:
            ink = GIVEN_INK if given else FOUND_INK
            drawing.add(Label(x + CELL / 2, y + CELL / 2, str(digit), CELL * 0.6, ink, bold=bool(given),
                              data=data))
    for k in range(10):
        width = 3.0 if k % 3 == 0 else 1.0
        color = "#000000" if k % 3 == 0 else "#999999"
        at = MARGIN + k * CELL
        drawing.add(Line(MARGIN, at, MARGIN + 9 * CELL, at, color, width),
                    Line(at, MARGIN, at, MARGIN + 9 * CELL, color, width))
    return drawing


def terminal(fields: dict[str, Any], solution: Any) -> Text:
    """25 columns: box-drawing lines, givens bold, filled digits cyan."""
    givens, answer = digits(fields["puzzle"]), digits(solution)
    text = Text()
    rule = {0: "┏━━━━━━━┳━━━━━━━┳━━━━━━━┓", 3: "┣━━━━━━━╋━━━━━━━╋━━━━━━━┫", 6: "┣━━━━━━━╋━━━━━━━╋━━━━━━━┫"}
    for r in range(9):
        if r in rule:
            text.append(rule[r] + "\n", style="dim")
        for c in range(9):
            if c % 3 == 0:
                text.append("┃ ", style="dim")
            i = r * 9 + c
            shown = str(answer[i]) if answer[i] else "."
            text.append(shown, style="bold" if givens[i] else "cyan")
            text.append(" ")
        text.append("┃\n", style="dim")
    text.append("┗━━━━━━━┻━━━━━━━┻━━━━━━━┛\n", style="dim")
    text.append("given", style="bold")
    text.append(" / ")
    text.append("filled in", style="cyan")
    return text
