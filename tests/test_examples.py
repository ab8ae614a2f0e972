"""The Python client examples in examples/ (shown in README.md) work: both scripts run against a real
`gram serve` on a random loopback port (the shipped Sudoku checkpoint), and their 429 handling waits the
Retry-After seconds and tries again (a mock transport answers 429 first: a real queue fills only by
timing)."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from loadtests.server import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SOLVED = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {"GRAM_MODELS": "sudoku", "GRAM_CPU_PATH": "bf16", "GRAM_TORCH_THREADS": "1", "GRAM_SLOTS": "16"}
    with ServiceProcess("continuous", weights_dir=ROOT / "model" / "weights", env=env) as svc:
        yield svc.url


def run_example(name: str, url: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), url], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_sync_example_solves_and_reports_the_422(server: str) -> None:
    out = run_example("client_sync", server)
    assert "status: solved  seed: 0" in out, out
    assert SOLVED in out
    # the API's message, naming the field and the repeated digit
    assert "422 invalid request: body.puzzle: digit 5 repeats in row 0" in out, out


def test_async_example_solves_concurrently_and_reports_the_422(server: str) -> None:
    out = run_example("client_async", server)
    lines = out.splitlines()
    assert lines[0].startswith("puzzle 0: status solved, seed ") and lines[0].endswith(SOLVED), out
    assert lines[1].startswith("puzzle 1: status "), out
    assert lines[2].startswith("puzzle 2: 422 invalid request: ") and "digit 5 repeats" in lines[2], out


def _queue_full_once() -> tuple[httpx.MockTransport, list[float]]:
    """A transport that answers the first /solve with 429 (Retry-After: 1), then a solved answer; it
    records when each request came."""
    seen: list[float] = []
    answer = {"status": "solved", "seed": 5, "solutions": [], "complete": True, "elapsed_ms": 1.0}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"},
                                  json={"detail": [{"loc": [], "msg": "queue full", "type": "queue_full"}]})
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle), seen


def test_sync_client_waits_retry_after_on_429() -> None:
    transport, seen = _queue_full_once()
    with httpx.Client(transport=transport, base_url="http://gram") as client:
        answer = load("client_sync").solve(client, {"task": "sudoku", "puzzle": "." * 81})
    assert answer["seed"] == 5 and len(seen) == 2
    assert seen[1] - seen[0] >= 0.95


def test_async_client_waits_retry_after_on_429() -> None:
    transport, seen = _queue_full_once()
    module = load("client_async")

    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=transport, base_url="http://gram") as client:
            return dict(await module.solve(client, {"task": "sudoku", "puzzle": "." * 81}))

    assert asyncio.run(go())["seed"] == 5 and len(seen) == 2
    assert seen[1] - seen[0] >= 0.95


@pytest.mark.parametrize("name", ["client_sync", "client_async"])
def test_clients_give_up_after_the_last_429(name: str) -> None:
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "queue full"})

    module = load(name)
    transport = httpx.MockTransport(handle)
    with pytest.raises(httpx.HTTPStatusError):
        if name == "client_sync":
            with httpx.Client(transport=transport, base_url="http://gram") as client:
                module.solve(client, {}, attempts=3)
        else:
            async def go() -> None:
                async with httpx.AsyncClient(transport=transport, base_url="http://gram") as client:
                    await module.solve(client, {}, attempts=3)

            asyncio.run(go())
    assert len(calls) == 3
