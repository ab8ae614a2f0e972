"""Pictures of answers, one module per task family; used by `POST /solve` (``render``) and `gram solve`.

Each family module has ``draw(fields, solution) -> Drawing`` (the picture, written as PNG or SVG by
service/render/canvas.py) and ``terminal(fields, solution) -> rich Text`` (the same picture for a
terminal). ``fields`` are the request's task fields as JSON (``service.schemas.task_body``), ``solution``
one answer as the API returns it. Presentation only: nothing here imports torch or the model.
"""

from __future__ import annotations

import base64
from types import ModuleType
from typing import Any, Literal

from rich.text import Text

from service.render import coloring, nqueens, sudoku
from service.render.canvas import Drawing, tile, to_png, to_svg

RenderFormat = Literal["png", "svg"]

# task name -> its presentation module
FAMILIES: dict[str, ModuleType] = {"sudoku": sudoku, "nqueens": nqueens, "graph_coloring": coloring}


def drawing(task: str, fields: dict[str, Any], solution: Any) -> Drawing:
    family = FAMILIES.get(task)
    if family is None:
        raise KeyError(f"no picture for task {task!r}")
    return family.draw(fields, solution)


def picture(task: str, fields: dict[str, Any], solution: Any, fmt: RenderFormat) -> str:
    """One answer's picture: base64 PNG (``png``) or SVG text (``svg``)."""
    drawn = drawing(task, fields, solution)
    if fmt == "svg":
        return to_svg(drawn)
    return base64.b64encode(to_png(drawn)).decode()


def pictures(
    task: str, fields: dict[str, Any], solutions: list[Any], fmt: RenderFormat | None
) -> list[str | None]:
    """A picture per solution, or None for each when no format was asked for (or the family has none)."""
    if fmt is None or task not in FAMILIES:
        return [None] * len(solutions)
    return [picture(task, fields, s, fmt) for s in solutions]


def png_sheet(task: str, fields: dict[str, Any], solutions: list[Any], columns: int = 4) -> bytes:
    """Every solution's picture side by side in one PNG (`gram solve --png`)."""
    return to_png(tile([drawing(task, fields, s) for s in solutions], columns))


def terminal(task: str, fields: dict[str, Any], solution: Any) -> Text | None:
    """The answer as rich Text for a terminal, or None for a family without a picture."""
    family = FAMILIES.get(task)
    return None if family is None else family.terminal(fields, solution)
