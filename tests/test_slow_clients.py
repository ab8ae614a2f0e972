"""The single-process server's own limits on slow clients (service/slow_clients.py), over real sockets on
loopback: uvicorn with the guarded httptools protocol serving the app (no models loaded)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from service.slow_clients import guarded_protocol
from tests.test_redis_harness import free_port, wait_until

pytestmark = pytest.mark.timeout(60)
READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    settings = Settings(request_read_timeout_s=READ_TIMEOUT_S, max_connections=MAX_CONNECTIONS)
    runtime = Runtime.from_models(settings, {})
    port = free_port()
    config = uvicorn.Config(create_app(settings, runtime=runtime), host="127.0.0.1", port=port,
                            http=guarded_protocol(settings), loop="asyncio", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: _healthy(port), 20, "the server")
    yield port
    server.should_exit = True
    thread.join(10)
    runtime.stop()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _closed_after(
    sock: socket.socket, dribble: bytes = b"", every_s: float = 0.2, limit_s: float = 5.0
) -> float:
    """Seconds until the server closes ``sock``; meanwhile the client sends ``dribble``, a byte a time."""
    started = time.monotonic()
    sock.settimeout(every_s)
    for i in range(int(limit_s / every_s)):
        try:
            if i < len(dribble):
                sock.send(dribble[i:i + 1])
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset
            return time.monotonic() - started
    return float("inf")


@pytest.mark.parametrize(
    "dribble",
    [b"", b"POST /solve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X" * 100,
     b"POST /solve HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n" + b" " * 200],
    ids=["silent", "slow-headers", "slow-body"],
)
def test_a_request_that_does_not_arrive_in_time_loses_its_connection(port: int, dribble: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        took = _closed_after(sock, dribble)
    assert READ_TIMEOUT_S * 0.8 < took < READ_TIMEOUT_S + 1.5


def test_connections_beyond_the_cap_are_closed_and_the_server_recovers(port: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)
        closed_early = sum(_closed_after(s, limit_s=0.2, every_s=0.05) < 0.3 for s in socks)
        assert closed_early >= MAX_CONNECTIONS  # the extras were closed at once, not held
        wait_until(lambda: _healthy(port), READ_TIMEOUT_S + 3, "/healthz after the idle ones were cut")
    finally:
        for sock in socks:
            sock.close()


def test_a_normal_request_on_a_kept_alive_connection_is_unaffected(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(READ_TIMEOUT_S * 0.6)  # past the read timeout in total, inside keep-alive (5 s)
