"""Pictures of answers (service/render): decoded PNGs show the right thing at the right place, SVGs parse as
XML with the solution's colours and queens, and the terminal pictures are whole at 80 columns."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from PIL import Image
from rich.console import Console

from model.tasks.registry import TASKS
from service import render
from service.render import coloring, nqueens, sudoku
from service.render.canvas import Drawing, Rect, tile, to_png

SVG = "{http://www.w3.org/2000/svg}"
PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
SOLVED = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
QUEENS = {"n": 8, "queens": [[0, 0], [1, 4]]}
BOARD = {"queens": [[0, 0], [1, 4], [2, 7], [3, 5], [4, 2], [5, 6], [6, 1], [7, 3]]}
CYCLE = {"num_nodes": 5, "num_colors": 3, "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]],
         "fixed": {"0": 0}}
CYCLE_COLORS = {"colors": [0, 1, 0, 1, 2]}


def png(task: str, fields: dict[str, Any], solution: Any) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(render.picture(task, fields, solution, "png"))))
    assert image.format == "PNG"
    return image.convert("RGB")


def rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def close(pixel: tuple[int, ...], hex_color: str, tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb(hex_color), strict=True))


def svg(task: str, fields: dict[str, Any], solution: Any) -> ET.Element:
    root = ET.fromstring(render.picture(task, fields, solution, "svg"))
    assert root.tag == f"{SVG}svg"
    return root


def test_every_solve_family_has_a_picture() -> None:
    solvable = {name for name, task in TASKS.items() if task.request_model is not None}
    assert solvable == set(render.FAMILIES)


def test_nqueens_png_has_a_queen_exactly_on_each_answer_square() -> None:
    image = png("nqueens", QUEENS, BOARD)
    side = 8 * nqueens.CELL + 2 * nqueens.MARGIN
    assert image.size == (side, side)
    queens = {tuple(q) for q in BOARD["queens"]}
    for r in range(8):
        for c in range(8):
            # a point inside the queen's disc, clear of its "Q" letter
            x = nqueens.MARGIN + c * nqueens.CELL + nqueens.CELL // 2
            y = nqueens.MARGIN + r * nqueens.CELL + nqueens.CELL // 2 - int(nqueens.CELL * 0.28)
            pixel = image.getpixel((x, y))
            if (r, c) in {(0, 0), (1, 4)}:
                assert close(pixel, nqueens.GIVEN_QUEEN), (r, c, pixel)
            elif (r, c) in queens:
                assert close(pixel, nqueens.FOUND_QUEEN), (r, c, pixel)
            else:
                assert close(pixel, nqueens.LIGHT if (r + c) % 2 == 0 else nqueens.DARK), (r, c, pixel)


def test_nqueens_svg_marks_the_queens_and_which_were_given() -> None:
    discs = [e for e in svg("nqueens", QUEENS, BOARD).iter(f"{SVG}circle")]
    at = {(int(e.get("data-row")), int(e.get("data-col"))): e.get("data-given") for e in discs}
    assert set(at) == {tuple(q) for q in BOARD["queens"]}
    assert {square for square, given in at.items() if given == "true"} == {(0, 0), (1, 4)}


def test_sudoku_png_shades_the_givens_only() -> None:
    image = png("sudoku", {"puzzle": PUZZLE}, SOLVED)
    side = 9 * sudoku.CELL + 2 * sudoku.MARGIN
    assert image.size == (side, side)
    for i, ch in enumerate(PUZZLE):
        r, c = divmod(i, 9)
        corner = (sudoku.MARGIN + c * sudoku.CELL + 5, sudoku.MARGIN + r * sudoku.CELL + 5)
        assert close(image.getpixel(corner), sudoku.GIVEN_FILL if ch != "." else "#ffffff", 8), (r, c)


def test_sudoku_svg_holds_every_digit_and_sets_givens_apart() -> None:
    texts = [e for e in svg("sudoku", {"puzzle": PUZZLE}, SOLVED).iter(f"{SVG}text") if e.get("data-cell")]
    digits = {int(e.get("data-cell")): e for e in texts}
    assert "".join(digits[i].text for i in range(81)) == SOLVED
    for i, ch in enumerate(PUZZLE):
        expected = sudoku.GIVEN_INK if ch != "." else sudoku.FOUND_INK
        assert digits[i].get("fill") == expected and (digits[i].get("data-given") == "true") == (ch != ".")


def test_sudoku_grid_format_draws_the_same_picture() -> None:
    grid = [[int(d) for d in SOLVED[r * 9 : r * 9 + 9]] for r in range(9)]
    puzzle = [[0 if ch == "." else int(ch) for ch in PUZZLE[r * 9 : r * 9 + 9]] for r in range(9)]
    assert render.picture("sudoku", {"puzzle": puzzle}, grid, "svg") == render.picture(
        "sudoku", {"puzzle": PUZZLE}, SOLVED, "svg"
    )


def test_coloring_svg_fills_each_node_with_its_colour() -> None:
    nodes = [e for e in svg("graph_coloring", CYCLE, CYCLE_COLORS).iter(f"{SVG}circle")]
    assert [int(e.get("data-node")) for e in nodes] == list(range(5))
    assert [e.get("fill") for e in nodes] == [coloring.PALETTE[c] for c in CYCLE_COLORS["colors"]]
    assert [e.get("data-fixed") for e in nodes] == ["true", "false", "false", "false", "false"]


def test_coloring_png_node_centres_have_the_solution_colours() -> None:
    image = png("graph_coloring", CYCLE, CYCLE_COLORS)
    assert image.size == (coloring.SIZE, coloring.SIZE + coloring.LEGEND_H)
    for (x, y), c in zip(coloring.positions(5), CYCLE_COLORS["colors"], strict=True):
        # beside the node's number, inside its disc
        assert close(image.getpixel((round(x - coloring.NODE_R / 2 - 2), round(y))), coloring.PALETTE[c])


def test_a_sheet_tiles_drawings_in_rows() -> None:
    red = Drawing(10, 10, shapes=[Rect(0, 0, 10, 10, fill="#ff0000")])
    sheet = Image.open(io.BytesIO(to_png(tile([red] * 5, columns=2, gap=4)))).convert("RGB")
    assert sheet.size == (2 * 10 + 3 * 4, 3 * 10 + 4 * 4)
    assert close(sheet.getpixel((4 + 5, 4 + 5)), "#ff0000") and close(sheet.getpixel((1, 1)), "#ffffff")
    assert close(sheet.getpixel((4 + 5, 2 * 14 + 4 + 5)), "#ff0000")  # the fifth, third row


def test_no_render_means_no_pictures_and_a_family_without_one_gets_none() -> None:
    assert render.pictures("sudoku", {"puzzle": PUZZLE}, [SOLVED, SOLVED], None) == [None, None]
    assert render.pictures("mnist", {}, [["0" * 28] * 28], "png") == [None]


@pytest.mark.parametrize(
    ("task", "fields", "solution", "needles"),
    [
        ("sudoku", {"puzzle": PUZZLE}, SOLVED, ["┃ 5 3 4 ┃ 6 7 8 ┃ 9 1 2 ┃", "┃ 3 4 5 ┃ 2 8 6 ┃ 1 7 9 ┃"]),
        ("nqueens", QUEENS, BOARD, ["♛ · · · · · · · ", "· · · ♛ · · · · "]),
        ("graph_coloring", CYCLE, CYCLE_COLORS, ["colors: 0 1 0 1 2", "node  0  0 orange   fixed", "green"]),
    ],
)
def test_terminal_pictures_are_whole_at_80_columns(
    task: str, fields: dict[str, Any], solution: Any, needles: list[str]
) -> None:
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(render.terminal(task, fields, solution))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for needle in needles:
        assert needle in text


def test_the_renderers_import_no_torch() -> None:
    """Presentation only: drawing an answer loads neither torch nor the model."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, service.render\n"
        "assert 'torch' not in sys.modules and not any(m.startswith('model') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, check=True)
