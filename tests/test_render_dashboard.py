"""The dashboard rendering (loadtests/render_dashboard.py, the picture in README.md's Grafana section)
draws every panel of deploy/grafana/dashboards/gram.json, in its grid layout, with its legends; and the
committed picture is there and small. Runs on made-up series: no Prometheus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from loadtests.dashboard_stack import prometheus_config, rate_at, request_body
from loadtests.render_dashboard import DASHBOARD, ROOT, Series, legend, load_panels, render

T0 = 1_800_000_000.0


def test_every_dashboard_panel_is_loaded_with_its_queries() -> None:
    raw = json.loads(DASHBOARD.read_text())["panels"]
    panels = load_panels(rate_interval="10s")
    assert [p.title for p in panels] == [p["title"] for p in raw]
    assert sum(len(p.targets) for p in panels) == sum(len(p.get("targets", [])) for p in raw) >= 15
    rated = [t.expr for p in panels for t in p.targets if "rate(" in t.expr]
    assert rated and all("$" not in e and "[10s]" in e for e in rated)


def test_legend_fills_labels_like_grafana() -> None:
    assert legend("p99 {{task}}", {"task": "sudoku", "le": "1"}) == "p99 sudoku"
    assert legend("{{ task }} {{outcome}}", {"task": "nqueens", "outcome": "complete"}) == "nqueens complete"
    assert legend("", {}) == "value"


def test_render_places_every_panel_on_the_grid(tmp_path: Path) -> None:
    panels = load_panels()
    data: dict[str, Series] = {}
    for p in panels:
        if p.kind == "timeseries":
            data[p.title] = [(f"{p.title} a", [(T0 + i, float(i % 7)) for i in range(60)]),
                             (f"{p.title} b", [(T0 + i, 1.0) for i in range(60)])]
    data["Workers"] = [("workers", [(T0, 1.0), (T0 + 60, 2.0)])]
    del data["Cache hit rate"]  # a panel without data still gets its box
    out = tmp_path / "dash.png"
    fig = render(panels, data, out, "test")

    texts = {t.get_text() for t in fig.texts}
    assert {p.title for p in panels} <= texts
    axes = fig.axes
    drawn = [p for p in panels if p.kind != "row"]
    assert len(axes) == len(drawn)
    for ax, p in zip(axes, drawn, strict=True):
        box = ax.get_position()
        assert p.x / 24 < box.x0 < box.x1 < (p.x + p.w) / 24, p.title
        assert box.width > 0.85 * p.w / 24, p.title
    by_title = dict(zip([p.title for p in drawn], axes, strict=True))
    # panels further down the dashboard sit lower in the picture
    assert by_title["Request rate"].get_position().y0 > by_title["Queue depth"].get_position().y0 > \
        by_title["Workers"].get_position().y0
    assert [t.get_text() for t in by_title["Job latency by task"].get_legend().get_texts()] == \
        ["Job latency by task a", "Job latency by task b"]
    assert any(t.get_text() == "No data" for t in by_title["Cache hit rate"].texts)
    assert any(t.get_text() == "2" for t in by_title["Workers"].texts)  # a stat shows the last value
    with Image.open(out) as image:
        assert image.width >= 1000


def test_committed_picture_is_small_and_current_size() -> None:
    picture = ROOT / "docs" / "grafana_dashboard.png"
    assert picture.stat().st_size < 300_000
    with Image.open(picture) as image:
        assert image.width >= 1000 and image.height >= 800


def test_load_mixes_tasks_invalid_and_cached_requests_and_bursts() -> None:
    import random

    rng = random.Random(0)
    bodies = [request_body(rng, i) for i in range(200)]
    assert {b["task"] for b in bodies} == {"sudoku", "nqueens", "graph_coloring"}
    assert sum(b.get("seed") is not None for b in bodies) >= 20  # seeded repeats: cache hits
    assert sum("num_trajectories" not in b for b in bodies) == 8  # the invalid ones (422)
    assert rate_at(5, 90, 3) == 3 and rate_at(40, 90, 3) == 7.5 and rate_at(57, 90, 3) == 30


def test_prometheus_config_scrapes_the_loopback_stack() -> None:
    config = prometheus_config(1001, 1002, 1003, scrape_s=2)
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert targets == {"gram-api": ["127.0.0.1:1001"], "gram-worker": ["127.0.0.1:1002"],
                       "prometheus": ["127.0.0.1:1003"]}
    assert config["global"]["scrape_interval"] == "2s"
    assert all("dns_sd_configs" not in j for j in config["scrape_configs"])


def test_fetch_puts_series_on_the_query_grid_with_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    import loadtests.render_dashboard as rd

    def fake_query_range(prometheus: str, expr: str, start: float, end: float, step_s: float) -> list[Any]:
        return [{"metric": {"task": "sudoku"}, "values": [[T0, "1"], [T0 + 4, "NaN"], [T0 + 6, "3"]]}]

    monkeypatch.setattr(rd, "query_range", fake_query_range)
    panel = next(p for p in load_panels() if p.title == "Distinct solutions per job")
    (name, points), = rd.fetch("http://prometheus", [panel], T0, T0 + 8, 2)[panel.title]
    assert name == "sudoku"
    assert [t for t, _ in points] == [T0 + 2 * i for i in range(5)]
    values = [v for _, v in points]
    assert values[0] == 1 and values[3] == 3  # scraped points kept
    assert all(math.isnan(values[i]) for i in (1, 2, 4))  # missing and NaN steps: gaps, not joined lines
    assert rd.has_data([(name, points)]) and not rd.has_data([("x", [(T0, math.nan)])])
