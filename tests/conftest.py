"""Test-session settings shared by every test file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.test_redis_harness import Server, start_redis

# GRAM_CPU_PATH=auto records its timed choice (model/fast_path/cpu_path.py). The tests must neither read
# a record left in the home folder by an earlier run (a test of the timing would then see none) nor
# leave one there: each session records into its own folder, inherited by the servers it starts.
_RECORDS = Path(tempfile.mkdtemp(prefix="gram-test-cpu-path-"))
os.environ["GRAM_CPU_PATH_CACHE"] = str(_RECORDS / "cpu_path.json")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real redis-server per test module (files that need another kind define their own)."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def url(redis_server: Server) -> Iterator[str]:
    """That server's URL, its database emptied before and after each test."""
    client = redis.Redis(port=redis_server.port)
    client.flushdb()
    yield f"redis://127.0.0.1:{redis_server.port}/0"
    client.flushdb()
