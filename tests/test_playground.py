"""The playground's files and the offline docs pages, without a browser (in-process, no checkpoints).

tests/test_playground_browser.py drives the same pages in Chromium against the real service."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.tasks.registry import get_task
from model.tasks.sudoku import count_solutions
from service.app import create_app
from service.playground import PLAYGROUND_DIR
from service.runtime import Runtime
from service.settings import Settings


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    settings = Settings()
    runtime = Runtime.from_models(settings, {})
    yield create_app(settings, runtime=runtime)
    runtime.stop()


def get(app: Any, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(go())


def test_root_serves_the_playground_and_its_files(app: Any) -> None:
    page = get(app, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "static/playground/app.js" in assets and "static/playground/style.css" in assets
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert not re.match(r"^(https?:)?//", asset), f"the page loads {asset} from outside the server"
        assert get(app, "/" + asset).status_code == 200, asset


def test_no_file_of_the_playground_names_another_host() -> None:
    for path in PLAYGROUND_DIR.iterdir():
        text = path.read_text()
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text)
        # the SVG namespace is an identifier, never fetched
        assert set(urls) <= {"http://www.w3.org"}, (path.name, urls)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_this_server(app: Any, path: str) -> None:
    page = get(app, path)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), f"{path} loads {asset} from outside the server"
        response = get(app, asset)
        assert response.status_code == 200 and len(response.content) > 0, asset
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_openapi_links_the_playground(app: Any) -> None:
    assert "[playground](/)" in get(app, "/openapi.json").json()["info"]["description"]
    assert "/" not in get(app, "/openapi.json").json()["paths"]


def _js_examples() -> list[tuple[str, str]]:
    text = (PLAYGROUND_DIR / "app.js").read_text()
    block = text[text.index("const SUDOKU_EXAMPLES"):text.index("];", text.index("const SUDOKU_EXAMPLES"))]
    return re.findall(r'name: "([^"]+)", puzzle: "([^"]+)"', block)


def test_sudoku_examples_are_proper_puzzles_of_their_stated_size() -> None:
    examples = _js_examples()
    assert len(examples) >= 4
    task = get_task("sudoku")
    for name, puzzle in examples:
        task.parse({"puzzle": puzzle})  # no repeated given
        cells = [int(c) if c != "." else 0 for c in puzzle]
        assert count_solutions(cells, 2) == 1, f"{name}: not exactly one solution"
        givens = int(re.search(r"(\d+) givens", name).group(1))  # type: ignore[union-attr]
        assert givens == 81 - cells.count(0), name


def test_static_files_are_package_data() -> None:
    """pyproject's package-data glob takes the folder's files, not subfolders: keep the files flat."""
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert 'service = ["static/playground/*"]' in text
    assert all(p.is_file() for p in PLAYGROUND_DIR.iterdir())
