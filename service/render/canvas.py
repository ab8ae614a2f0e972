"""A tiny display list drawn once per answer and written as PNG (Pillow) or SVG (text).

Each family module (service/render/<family>.py) builds a ``Drawing`` of rectangles, lines, circles and
centred text; ``to_png`` and ``to_svg`` turn the same drawing into either format, so the two never
disagree. Shapes may carry ``data`` (written as ``data-*`` attributes in SVG, so a client or a test can
find a node or a queen); PNG ignores it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from functools import lru_cache
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, ImageDraw, ImageFont

Data = dict[str, str]
SUPERSAMPLE = 2  # PNG: draw at twice the size, then downscale (smooth circles and text)
FONT_FAMILY = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str | None = None
    stroke: str | None = None
    width: float = 1.0
    data: Data = field(default_factory=dict)


@dataclass(frozen=True)
class Line:
    x1: float
    y1: float
    x2: float
    y2: float
    color: str
    width: float = 1.0


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str
    stroke: str | None = None
    width: float = 1.0
    data: Data = field(default_factory=dict)


@dataclass(frozen=True)
class Label:
    """Text centred on (x, y)."""

    x: float
    y: float
    text: str
    size: float
    color: str = "#000000"
    bold: bool = False
    data: Data = field(default_factory=dict)


Shape = Rect | Line | Circle | Label


@dataclass
class Drawing:
    width: int
    height: int
    background: str = "#ffffff"
    shapes: list[Shape] = field(default_factory=list)

    def add(self, *shapes: Shape) -> None:
        self.shapes.extend(shapes)


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_png(drawing: Drawing) -> bytes:
    """PNG bytes, ``drawing.width`` x ``drawing.height`` pixels."""
    s = SUPERSAMPLE
    image = Image.new("RGB", (drawing.width * s, drawing.height * s), drawing.background)
    pen = ImageDraw.Draw(image)
    for shape in drawing.shapes:
        if isinstance(shape, Rect):
            box = (shape.x * s, shape.y * s, (shape.x + shape.w) * s - 1, (shape.y + shape.h) * s - 1)
            pen.rectangle(box, fill=shape.fill, outline=shape.stroke,
                          width=round(shape.width * s) if shape.stroke else 0)
        elif isinstance(shape, Line):
            pen.line((shape.x1 * s, shape.y1 * s, shape.x2 * s, shape.y2 * s), fill=shape.color,
                     width=max(1, round(shape.width * s)))
        elif isinstance(shape, Circle):
            box = ((shape.cx - shape.r) * s, (shape.cy - shape.r) * s,
                   (shape.cx + shape.r) * s, (shape.cy + shape.r) * s)
            pen.ellipse(box, fill=shape.fill, outline=shape.stroke,
                        width=round(shape.width * s) if shape.stroke else 0)
        else:
            font = _font(round(shape.size * s))
            stroke = 1 if shape.bold else 0  # the bundled font has no bold face: thicken the strokes
            pen.text((shape.x * s, shape.y * s), shape.text, fill=shape.color, font=font, anchor="mm",
                     stroke_width=stroke, stroke_fill=shape.color)
    image = image.reduce(s)  # box filter: a quarter of LANCZOS's time, as smooth at 2x
    # a 64-colour palette: a fifth of the RGB file's size and faster to encode, no visible loss
    image = image.quantize(64, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _attrs(**values: object) -> str:
    return "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in values.items() if v is not None)


def _data(data: Data) -> str:
    return "".join(f" data-{k}={quoteattr(v)}" for k, v in data.items())


def _n(value: float) -> str:
    return f"{value:g}"


def to_svg(drawing: Drawing) -> str:
    """A standalone SVG document (UTF-8 text) of the same picture."""
    w, h = drawing.width, drawing.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
        f'<rect width="{w}" height="{h}" fill="{drawing.background}"/>',
    ]
    for shape in drawing.shapes:
        if isinstance(shape, Rect):
            out.append(
                f"<rect{_attrs(x=_n(shape.x), y=_n(shape.y), width=_n(shape.w), height=_n(shape.h))}"
                f"{_attrs(fill=shape.fill or 'none', stroke=shape.stroke)}"
                f"{_attrs(stroke_width=_n(shape.width) if shape.stroke else None)}{_data(shape.data)}/>"
            )
        elif isinstance(shape, Line):
            out.append(
                f"<line{_attrs(x1=_n(shape.x1), y1=_n(shape.y1), x2=_n(shape.x2), y2=_n(shape.y2))}"
                f"{_attrs(stroke=shape.color, stroke_width=_n(shape.width), stroke_linecap='square')}/>"
            )
        elif isinstance(shape, Circle):
            out.append(
                f"<circle{_attrs(cx=_n(shape.cx), cy=_n(shape.cy), r=_n(shape.r), fill=shape.fill)}"
                f"{_attrs(stroke=shape.stroke)}"
                f"{_attrs(stroke_width=_n(shape.width) if shape.stroke else None)}{_data(shape.data)}/>"
            )
        else:
            out.append(
                f"<text{_attrs(x=_n(shape.x), y=_n(shape.y), font_size=_n(shape.size), fill=shape.color)}"
                f"{_attrs(font_family=FONT_FAMILY, text_anchor='middle', dominant_baseline='central')}"
                f"{_attrs(font_weight='bold' if shape.bold else None)}{_data(shape.data)}>"
                f"{escape(shape.text)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out)


def tile(drawings: list[Drawing], columns: int = 4, gap: int = 16) -> Drawing:
    """Several drawings side by side, ``columns`` to a row, as one drawing (the CLI's ``--png``)."""
    if not drawings:
        return Drawing(1, 1)
    cell_w = max(d.width for d in drawings)
    cell_h = max(d.height for d in drawings)
    cols = min(columns, len(drawings))
    rows = -(-len(drawings) // cols)
    sheet = Drawing(cols * cell_w + (cols + 1) * gap, rows * cell_h + (rows + 1) * gap)
    for i, d in enumerate(drawings):
        dx = gap + (i % cols) * (cell_w + gap)
        dy = gap + (i // cols) * (cell_h + gap)
        sheet.add(Rect(dx, dy, d.width, d.height, fill=d.background))
        sheet.add(*(_moved(shape, dx, dy) for shape in d.shapes))
    return sheet


def _moved(shape: Shape, dx: float, dy: float) -> Shape:
    if isinstance(shape, Rect):
        return replace(shape, x=shape.x + dx, y=shape.y + dy)
    if isinstance(shape, Line):
        return replace(shape, x1=shape.x1 + dx, y1=shape.y1 + dy, x2=shape.x2 + dx, y2=shape.y2 + dy)
    if isinstance(shape, Circle):
        return replace(shape, cx=shape.cx + dx, cy=shape.cy + dy)
    return replace(shape, x=shape.x + dx, y=shape.y + dy)
