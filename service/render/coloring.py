"""A graph-colouring answer: the graph drawn on a circle, each node filled with its colour.

The palette is the playground's (Okabe-Ito, colour-blind safe), so the pictures match the browser's.
Nodes the request fixed get a thick black rim.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from service.render.canvas import Circle, Drawing, Label, Line, Rect

PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#CC79A7")
NAMES = ("orange", "sky blue", "green", "pink")
UNKNOWN = "#999999"
SIZE = 320
NODE_R = 16
LEGEND_H = 28


def color_of(index: int) -> str:
    return PALETTE[index] if 0 <= index < len(PALETTE) else UNKNOWN


def name_of(index: int) -> str:
    return NAMES[index] if 0 <= index < len(NAMES) else f"colour {index}"


def colors(solution: Any) -> list[int]:
    return [int(c) for c in solution["colors"]]


def positions(num_nodes: int, size: float = SIZE) -> list[tuple[float, float]]:
    """Node i on a circle, clockwise from the top."""
    centre, radius = size / 2, size / 2 - NODE_R - 8
    if num_nodes == 1:
        return [(centre, centre)]
    return [
        (centre + radius * math.sin(2 * math.pi * i / num_nodes),
         centre - radius * math.cos(2 * math.pi * i / num_nodes))
        for i in range(num_nodes)
    ]


def draw(fields: dict[str, Any], solution: Any) -> Drawing:
    n, k = int(fields["num_nodes"]), int(fields["num_colors"])
    fixed = {int(node) for node in (fields.get("fixed") or {})}
    answer = colors(solution)
    at = positions(n)
    drawing = Drawing(SIZE, SIZE + LEGEND_H)
    for u, v in fields["edges"]:
        (x1, y1), (x2, y2) = at[int(u)], at[int(v)]
        drawing.add(Line(x1, y1, x2, y2, "#555555", 2))
    for i, (x, y) in enumerate(at):
        c = answer[i]
        data = {"node": str(i), "color": str(c), "fixed": "true" if i in fixed else "false"}
        drawing.add(Circle(x, y, NODE_R, color_of(c), "#000000", 3.5 if i in fixed else 1.0, data),
                    Label(x, y, str(i), 14, "#000000"))
    step = SIZE / k
    for c in range(k):
        x, label = c * step + 8, f"{c} {name_of(c)}"  # labels are centred: ~6.8 px a character
        drawing.add(Rect(x, SIZE + 6, 16, 16, fill=color_of(c), stroke="#000000"),
                    Label(x + 22 + len(label) * 3.4, SIZE + 14, label, 12, "#000000"))
    return drawing


def terminal(fields: dict[str, Any], solution: Any) -> Text:
    """The colour list, then one line per node: its colour as a coloured label, and its neighbours."""
    n = int(fields["num_nodes"])
    fixed = {int(node) for node in (fields.get("fixed") or {})}
    answer = colors(solution)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for u, v in fields["edges"]:
        neighbours[int(u)].add(int(v))
        neighbours[int(v)].add(int(u))
    text = Text("colors: ")
    for i, c in enumerate(answer):
        text.append(str(c), style=f"bold {color_of(c)}")
        text.append(" " if i < n - 1 else "\n")
    for i, c in enumerate(answer):
        text.append(f"  ● node {i:>2}", style=f"bold {color_of(c)}")
        text.append(f"  {c} {name_of(c):<8}")
        text.append(" fixed " if i in fixed else "       ", style="bold")
        text.append("  next to " + (", ".join(map(str, sorted(neighbours[i]))) or "-") + "\n", style="dim")
    text.rstrip()
    return text
