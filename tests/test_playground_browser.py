"""The playground (``GET /``) and the offline API docs, driven in a real browser.

Playwright for Python drives Debian's Chromium (``make test`` installs it with ``apt-get install
chromium``; Playwright's own browser download cannot work without internet) against a real ``gram serve``
subprocess on a random loopback port with the shipped checkpoints. Each test reads its answer back from
the DOM and checks it with the task's own verifier; a screenshot of each lands in the test's tmp_path.
Every request the pages make must go to that server (no CDN): the context aborts any other request and
each test asserts none was made. The pages' Content-Security-Policy stops any other load in the browser
itself; ReDoc's bundle tries one (its vendor's logo, which it hides when it fails to load): the docs test
lets that one be refused by the CSP, never sent.

The page streams every request (``"stream": true``, Server-Sent Events): the tests check that it asked
for a stream and got one, and that the live panel shows the stream's progress (trajectories alive,
retired) next to the answer. ``GRAM_SCREENSHOTS=<folder>`` also saves one screenshot per task there (the
README's, in docs/playground/).

Without Chromium the tests skip, saying why (only where it cannot be installed: ``make test`` installs it
or fails).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.tasks.registry import get_task
from model.tasks.sudoku import grid_tokens
from tests.test_http import SHIPPED, SHIPPED_ALL, Server

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not SHIPPED_ALL, reason="the browser tests need the trained checkpoints"),
]

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Checked against the shipped checkpoints: solved in one step by 8 of 8 trajectories at seed 0 (README).
SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
# Two given queens the shipped N-Queens checkpoint completes at seed 0 with width 8 already (the test
# gives 16).
QUEENS = [(0, 0), (4, 1)]
TIMEOUT_MS = 120_000  # per browser action: a solve on a busy 2-core machine can take tens of seconds


def chromium_path() -> str | None:
    path = os.environ.get("GRAM_CHROMIUM")
    if path:
        return path
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    started = Server(SHIPPED, GRAM_MODELS="sudoku,nqueens,mnist,graph_coloring", GRAM_SLOTS="64")
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium: `apt-get install chromium` (make test's system-deps does, as root), "
                    "or point GRAM_CHROMIUM at one")
    with playwright_sync.sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to start as root (containers, CI).
        launched = p.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A page on a fresh context that lets only requests to the server through, recording the others."""

    def __init__(self, browser: Any, base: str, width: int, height: int) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.refused: list[str] = []  # stopped by the page's Content-Security-Policy: never sent
        self.page.on("requestfailed", self._failed)

    def _failed(self, request: Any) -> None:
        if request.failure == "csp":
            self.refused.append(request.url)

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.base + "/") or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def check_local(self, refused_ok: bool = False) -> None:
        assert not self.outside, f"requests outside the server: {self.outside}"
        assert refused_ok or not self.refused, f"loads refused by the page's CSP: {self.refused}"
        assert not self.errors, f"JavaScript errors: {self.errors}"


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    opened = Page(browser, server.url, 1280, 900)
    try:
        yield opened.page
        opened.check_local()
    finally:
        opened.context.close()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    """A full-page screenshot in the test's tmp dir, and in GRAM_SCREENSHOTS when set."""
    page.screenshot(path=tmp_path / name, full_page=True)
    folder = os.environ.get("GRAM_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=Path(folder) / name, full_page=True)


def run_streamed(page: Any, button: str, path: str) -> None:
    """Press the button; the page must POST ``path`` with "stream": true and get Server-Sent Events."""
    with page.expect_response(lambda r: r.url.endswith(path) and r.request.method == "POST") as info:
        page.get_by_role("button", name=button).click()
    response = info.value
    assert json.loads(response.request.post_data)["stream"] is True
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers


def live_fields(page: Any) -> dict[str, str]:
    """The status panel's fields once the answer is in (it keeps the stream's last progress)."""
    page.locator("#status [data-field='state'] dd", has_text="done").wait_for()
    names = page.locator("#status dt").all_inner_texts()
    return dict(zip(names, page.locator("#status dd").all_inner_texts(), strict=True))


def open_task(page: Any, url: str, task: str) -> None:
    page.goto(url + "/")
    page.get_by_role("tab", name={"sudoku": "Sudoku", "nqueens": "N-Queens", "mnist": "MNIST",
                                  "graph_coloring": "Graph colouring"}[task]).click()


def settings(page: Any, width: int | None = None, seed: int | None = 0,
             max_solutions: int | None = None) -> None:
    if width is not None:
        page.get_by_label("Width (num_trajectories)").fill(str(width))
    if max_solutions is not None:
        page.get_by_label("Max solutions").fill(str(max_solutions))
    page.get_by_label("Seed (empty: random)").fill("" if seed is None else str(seed))


def test_sudoku_typed_in_is_solved_and_verified(page: Any, server: Server, tmp_path: Path) -> None:
    open_task(page, server.url, "sudoku")
    page.get_by_role("button", name="Clear grid").click()
    page.get_by_role("textbox", name="row 1 column 1", exact=True).click()
    page.keyboard.type(SUDOKU)  # keyboard entry: a digit fills the cell, '.' blanks it, both move on
    assert page.locator("#sudoku-text").input_value() == SUDOKU
    settings(page, width=8, seed=0)
    run_streamed(page, "Solve", "/solve")
    fields = live_fields(page)  # the answer is in: the solution drawn now is the answer's
    assert fields["trajectories alive"] == "0" and "valid" in fields["retired"], fields
    board = page.locator(".solution .sudoku").first
    cells = board.locator(".cell")
    assert cells.count() == 81
    digits = [int(d) for d in cells.all_inner_texts()]
    given = [c == "given" for c in cells.evaluate_all("cells => cells.map(c => c.classList[1])")]
    puzzle = [int(c) if c != "." else 0 for c in SUDOKU]
    assert given == [d != 0 for d in puzzle], "givens and filled digits are styled apart"
    task = get_task("sudoku")
    assert bool(task.verify(grid_tokens(digits)[None], grid_tokens(puzzle)[None])[0]), digits
    status = page.locator("#status")
    assert status.locator('[data-field="state"] dd').inner_text() == "done"
    assert status.locator('[data-field="solutions found"] dd').inner_text() == "1"
    assert status.locator('[data-field="seed"] dd').inner_text() == "0"
    shot(page, tmp_path, "sudoku.png")


def test_nqueens_two_given_queens_are_completed(page: Any, server: Server, tmp_path: Path) -> None:
    open_task(page, server.url, "nqueens")
    page.get_by_label("Board size n").select_option("8")
    for r, c in QUEENS:
        page.get_by_role("button", name=f"row {r + 1} column {c + 1}", exact=True).click()
    assert page.locator("#nqueens-board .queen").count() == 2
    settings(page, width=16, seed=0, max_solutions=4)
    run_streamed(page, "Solve", "/solve")
    assert "valid" in live_fields(page)["retired"]
    boards = page.locator(".solution .chess")
    assert boards.count() >= 1, page.locator("#solutions").inner_text()
    task = get_task("nqueens")
    instance = task.parse({"n": 8, "queens": [list(q) for q in QUEENS]})
    for b in range(boards.count()):
        squares = boards.nth(b).locator(".queen")
        cols = {int(s.get_attribute("data-row")): int(s.get_attribute("data-col")) for s in squares.all()}
        assert sorted(cols) == list(range(8)), cols
        y = task.parse({"n": 8, "queens": [[r, c] for r, c in cols.items()]}).x  # a full board as tokens
        assert bool(task.verify(y[None], instance.x[None])[0]), cols
        given = {(int(s.get_attribute("data-row")), int(s.get_attribute("data-col")))
                 for s in boards.nth(b).locator(".queen.given").all()}
        assert given == set(QUEENS)
    shot(page, tmp_path, "nqueens.png")


def test_mnist_samples_sixteen_images(page: Any, server: Server, tmp_path: Path) -> None:
    open_task(page, server.url, "mnist")
    page.get_by_label("Digits").fill("16")
    settings(page, seed=0)
    run_streamed(page, "Sample", "/sample")
    assert live_fields(page)["trajectories alive"] == "0"
    images = page.locator(".digit img")
    assert images.count() == 16
    sizes = images.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert sizes == [[True, 28, 28]] * 16, "every image decoded as a 28 x 28 PNG"
    shot(page, tmp_path, "mnist.png")


def test_bad_sudoku_shows_the_api_message(page: Any, server: Server, tmp_path: Path) -> None:
    bad = "55" + SUDOKU[2:]  # digit 5 twice in row 0
    expected = httpx.post(server.url + "/solve", json={"task": "sudoku", "puzzle": bad}, timeout=30)
    assert expected.status_code == 422
    message = expected.json()["detail"][0]["msg"]
    open_task(page, server.url, "sudoku")
    page.get_by_label("81 characters").fill(bad)
    page.get_by_role("button", name="Load").click()
    page.get_by_role("button", name="Solve").click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    text = alert.inner_text()
    assert "422" in text and message in text, text
    assert "digit 5 repeats in row 0" in text
    page.screenshot(path=tmp_path / "sudoku_error.png", full_page=True)
    # A body over GRAM_MAX_BODY_BYTES (64 KiB): 413, its plain-string detail shown as it is.
    page.get_by_role("tab", name="Graph colouring").click()
    edges = page.get_by_label("Edges", exact=False)  # 15,000 edges (~90 KB): fill() is slow
    edges.evaluate(
        "(box, text) => { box.value = text; box.dispatchEvent(new Event('input', {bubbles: true})) }",
        "\n".join(["0-1 1-2 2-3 3-4 4-0"] * 3000))
    page.get_by_role("button", name="Solve").click()
    page.get_by_role("alert").filter(has_text="413").wait_for()
    assert "request body is larger than 65536 bytes" in page.get_by_role("alert").inner_text()


def test_graph_colouring_is_drawn_and_valid(page: Any, server: Server, tmp_path: Path) -> None:
    open_task(page, server.url, "graph_coloring")  # the first example: a 5-cycle, 3 colours, node 0 fixed
    settings(page, width=16, seed=0)
    run_streamed(page, "Solve", "/solve")
    assert "valid" in live_fields(page)["retired"]
    graphs = page.locator(".solution svg.graph")
    assert graphs.count() >= 1
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]
    for g in range(graphs.count()):
        colors = [int(c) for c in graphs.nth(g).locator(".node").evaluate_all(
            "nodes => nodes.map(n => n.dataset.color)")]
        assert colors[0] == 0 and all(colors[u] != colors[v] for u, v in edges), colors
    shot(page, tmp_path, "graph_coloring.png")


def test_phone_width_has_no_horizontal_scroll(browser: Any, server: Server, tmp_path: Path) -> None:
    opened = Page(browser, server.url, 390, 844)
    try:
        for task in ("sudoku", "nqueens", "graph_coloring", "mnist"):
            open_task(opened.page, server.url, task)
            overflow = opened.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{task}: the page is {overflow} px wider than a 390 px screen"
            assert opened.page.evaluate(STICKING_OUT) == [], f"{task}: elements wider than their panel"
        open_task(opened.page, server.url, "sudoku")  # the README's puzzle is the page's default
        settings(opened.page, width=8, seed=0)
        opened.page.get_by_role("button", name="Solve").click()
        opened.page.locator(".solution .sudoku").first.wait_for()
        assert opened.page.evaluate(STICKING_OUT) == [], "a solved Sudoku sticks out of its panel"
        opened.page.screenshot(path=tmp_path / "phone.png", full_page=True)
        opened.check_local()
    finally:
        opened.context.close()


# Visible elements whose right edge passes their panel's or the window's.
STICKING_OUT = """[...document.querySelectorAll('.tabs *, .controls *, .results *')].filter(e => {
  const r = e.getBoundingClientRect();
  if (!r.width) return false;
  const panel = e.closest('.controls, .results, .tabs').getBoundingClientRect();
  return r.right > Math.min(panel.right, window.innerWidth) + 0.5;
}).map(e => e.id || e.className || e.tagName)"""


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_render_offline(browser: Any, server: Server, tmp_path: Path, path: str) -> None:
    opened = Page(browser, server.url, 1280, 900)
    seen: list[str] = []
    opened.page.on("request", lambda request: seen.append(request.url))
    try:
        opened.page.goto(server.url + path)
        if path == "/docs":  # Swagger UI: one block per operation
            opened.page.locator(".opblock").first.wait_for()
            summaries = opened.page.locator(".opblock-summary-path").all_inner_texts()
            assert {"/solve", "/sample", "/models"} <= {s.strip() for s in summaries}, summaries
        else:  # ReDoc: the operations in its side menu
            opened.page.get_by_text("Sample trajectories for a puzzle", exact=False).first.wait_for()
        scripts = opened.page.evaluate("[...document.scripts].map(s => s.src).filter(Boolean)")
        styles = opened.page.evaluate(
            "[...document.querySelectorAll('link[rel=stylesheet]')].map(l => l.href)")
        assert scripts and all(u.startswith(server.url + "/") for u in scripts + styles), (scripts, styles)
        sent = [u for u in seen if u not in opened.refused]
        assert all(u.startswith(server.url + "/") or u.startswith("data:") for u in sent), sent
        assert set(opened.refused) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, opened.refused
        opened.page.screenshot(path=tmp_path / f"{path.strip('/')}.png")
        opened.check_local(refused_ok=True)
    finally:
        opened.context.close()

