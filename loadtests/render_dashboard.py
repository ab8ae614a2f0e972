"""Render the Grafana dashboard (deploy/grafana/dashboards/gram.json) as a picture without Grafana: start
the compose stack's processes on loopback (``loadtests.dashboard_stack``: Redis, a worker, the API and a
real Prometheus), serve a short mixed load, ask Prometheus for every panel's PromQL over the load window
(``/api/v1/query_range``) and draw the panels in the dashboard's grid layout with matplotlib.

    .venv/bin/python -m loadtests.render_dashboard [--duration 90] [--rate 0.6] [--out PNG]

It is a rendering of the dashboard's queries, not a Grafana screenshot: same titles, layout, queries,
legends and units; Grafana's own styling differs."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "gram.json"
GRID_COLUMNS = 24
UNITS = {"reqps": "req/s", "ops": "/s", "s": "s", "percentunit": "%", "short": ""}
BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#ff9830",
           "#96d98d", "#fade2a", "#c0d8ff", "#ffb357"]
Series = list[tuple[str, list[tuple[float, float]]]]  # (legend, [(unix time, value)])


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # "row", "timeseries", "stat"
    x: int
    y: int
    w: int
    h: int
    unit: str
    targets: tuple[Target, ...]


def load_panels(path: Path = DASHBOARD, rate_interval: str = "30s") -> list[Panel]:
    """The dashboard's panels, Grafana's interval variables replaced so Prometheus can run the queries."""
    variables = {"$__rate_interval": rate_interval, "$__interval": rate_interval, "$__range": "5m"}
    panels = []
    for p in json.loads(path.read_text())["panels"]:
        targets = []
        for t in p.get("targets", []):
            expr = t["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            if "$" in expr:
                raise ValueError(f"panel {p['title']!r}: a variable this script does not set: {expr}")
            targets.append(Target(expr, t.get("legendFormat", "")))
        grid = p["gridPos"]
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        panels.append(Panel(p["title"], p["type"], grid["x"], grid["y"], grid["w"], grid["h"], unit,
                            tuple(targets)))
    return panels


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: ``{{label}}`` replaced by the series' label value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def query_range(prometheus: str, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
    reply = httpx.get(f"{prometheus}/api/v1/query_range", timeout=30,
                      params={"query": expr, "start": start, "end": end, "step": step_s}).json()
    if reply.get("status") != "success":
        raise RuntimeError(f"{expr}: {reply}")
    return list(reply["data"]["result"])


def fetch(prometheus: str, panels: list[Panel], start: float, end: float, step_s: float) -> dict[str, Series]:
    """Every panel's series over [start, end] on the query's time grid, keyed by panel title. Steps without
    a value (a series not there yet, 0/0, no observations in the window) are NaN: a gap, as in Grafana."""
    data: dict[str, Series] = {}
    for panel in panels:
        series: Series = []
        for target in panel.targets:
            for s in query_range(prometheus, target.expr, start, end, step_s):
                values = {round(float(t), 3): float(v) for t, v in s["values"]}
                grid = [round(start + i * step_s, 3) for i in range(int((end - start) / step_s) + 1)]
                points = [(t, values.get(t, math.nan)) for t in grid]
                series.append((legend(target.legend, s["metric"]), points))
        data[panel.title] = sorted(series, key=lambda item: item[0])
    return data


def has_data(series: Series) -> bool:
    return any(math.isfinite(v) for _, points in series for _, v in points)


def _value_label(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.0f} %"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:g}"


UNIT_IN, WIDTH_IN, HEADER_IN = 0.36, 16.0, 0.95  # inches per grid row, picture width, title band


def render(panels: list[Panel], data: dict[str, Series], out: Path, subtitle: str, dpi: int = 72) -> Figure:
    """Draw the panels at their grid positions (24 columns; rows of grid units top to bottom), each with
    its title above and its legend below the plot, as Grafana lays them out."""
    rows = max(p.y + p.h for p in panels)
    height_in = rows * UNIT_IN + HEADER_IN
    fig = plt.figure(figsize=(WIDTH_IN, height_in), facecolor=BG)
    fig.text(0.008, 1 - 0.25 / height_in, "GRAM Serve", color=TEXT, fontsize=15, weight="bold", va="center")
    fig.text(0.008, 1 - 0.6 / height_in, subtitle, color="#8e8e8e", fontsize=9, va="center", linespacing=1.4)

    def x(inches: float) -> float:
        return inches / WIDTH_IN

    def y(inches: float) -> float:
        return inches / height_in

    for panel in panels:
        left, width = panel.x / GRID_COLUMNS, panel.w / GRID_COLUMNS
        top_in = HEADER_IN + panel.y * UNIT_IN  # from the top of the picture
        bottom = 1 - y(top_in + panel.h * UNIT_IN)
        if panel.kind == "row":
            fig.text(left + x(0.06), bottom + y(panel.h * UNIT_IN / 2), panel.title, color=TEXT, fontsize=12,
                     weight="bold", va="center")
            continue
        box = plt.Rectangle((left + x(0.03), bottom + y(0.03)), width - x(0.06), y(panel.h * UNIT_IN - 0.06),
                            transform=fig.transFigure, facecolor=PANEL, edgecolor=GRID, lw=0.8, zorder=-10)
        fig.patches.append(box)
        fig.text(left + x(0.12), 1 - y(top_in + 0.2), panel.title, color=TEXT, fontsize=10.5, weight="bold",
                 va="center")
        series = data.get(panel.title, [])
        ncol = max(1, round(panel.w / 2.2))
        legend_rows = 0 if panel.kind == "stat" else math.ceil(len(series) / ncol)
        ax_bottom_in = 0.34 + 0.14 * legend_rows
        ax = fig.add_axes((left + x(0.5), bottom + y(ax_bottom_in), width - x(0.62),
                           y(panel.h * UNIT_IN - ax_bottom_in - 0.42)))
        ax.set_facecolor(PANEL)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors="#8e8e8e", labelsize=7.5, length=0)
        if panel.kind == "stat":
            _stat(ax, series, panel.unit)
        else:
            _timeseries(ax, series, panel.unit, ncol, y(0.24) / ax.get_position().height)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor=BG)
    return fig


def _stat(ax: Any, series: Series, unit: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    last = [finite[-1] for _, points in series if (finite := [v for _, v in points if math.isfinite(v)])]
    text = _value_label(sum(last), unit) if last else "No data"
    ax.text(0.5, 0.5, text, color=COLOURS[0] if last else "#8e8e8e", fontsize=44, weight="bold",
            ha="center", va="center", transform=ax.transAxes)


def _timeseries(ax: Any, series: Series, unit: str, ncol: int, legend_drop: float) -> None:
    scale = 100.0 if unit == "percentunit" else 1.0
    for i, (name, points) in enumerate(series):
        times = [dt.datetime.fromtimestamp(t) for t, _ in points]
        ax.plot(times, [v * scale for _, v in points], color=COLOURS[i % len(COLOURS)], lw=1.3, label=name)
    ax.grid(color=GRID, lw=0.6)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=6))
    ax.set_ylabel(UNITS.get(unit, unit), color="#8e8e8e", fontsize=8)
    ax.set_ylim(bottom=0)
    if not has_data(series):
        ax.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(-0.01, -legend_drop), fontsize=7, ncol=ncol,
                  frameon=False, labelcolor=TEXT, handlelength=1.2, columnspacing=1.0, borderaxespad=0,
                  labelspacing=0.25)


def main() -> None:
    from loadtests.dashboard_stack import Stack, run_load

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of load (default 90)")
    parser.add_argument("--rate", type=float, default=0.6, help="base requests per second (default 0.6)")
    parser.add_argument("--max-queue", type=int, default=6, help="GRAM_MAX_QUEUE (small: 429s)")
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "model" / "weights")
    parser.add_argument("--models", default="sudoku,nqueens,graph_coloring")
    parser.add_argument("--scrape-s", type=int, default=2, help="Prometheus scrape interval")
    parser.add_argument("--rate-interval", default="30s", help="what $__rate_interval stands for")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "grafana_dashboard.png")
    args = parser.parse_args()

    panels = load_panels(rate_interval=args.rate_interval)
    with tempfile.TemporaryDirectory(prefix="gram-dashboard-") as tmp, \
            Stack(Path(tmp), args.weights_dir, args.models, args.scrape_s, args.max_queue) as stack:
        print(f"stack up: API {stack.api_url}, Prometheus {stack.prometheus_url}")
        time.sleep(3 * args.scrape_s)  # an idle stretch before the load
        start = time.time() - 2 * args.scrape_s
        codes = asyncio.run(run_load(stack.api_url, args.duration, args.rate))
        time.sleep(max(3 * args.scrape_s, 8))  # let the last answers be scraped and the rates fall
        end = time.time()
        print("answers by HTTP status:", dict(sorted(codes.items())))
        data = fetch(stack.prometheus_url, panels, start, end, step_s=args.scrape_s)
    empty = [p.title for p in panels if p.kind != "row" and not has_data(data[p.title])]
    if empty:
        print("panels without data:", ", ".join(empty))
    subtitle = ("A rendering of the dashboard's PromQL queries through Prometheus, not a Grafana screenshot. "
                f"Load: {args.duration:.0f} s of mixed /solve requests at {args.rate:g} req/s, 2.5x in the "
                f"middle third, a burst past the queue limit ({args.max_queue}) near its end.\nOne worker "
                "(1 torch thread, 16 slots, bf16) on the shipped CPU checkpoints, on a 2-core machine shared "
                "with training runs: the times are the busy machine's.")
    render(panels, data, args.out, subtitle)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
