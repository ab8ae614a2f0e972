"""Limits on slow and idle clients for the single-process server (uvicorn with httptools).

uvicorn bounds only the idle time between requests (``timeout_keep_alive``): a client that sends its
headers or body a byte at a time, or connects and sends nothing, holds its connection (and a file
descriptor) forever, and enough of them take the server down. ``guarded_protocol(settings)`` is uvicorn's
httptools protocol with two more limits:

- a request must arrive whole (headers and body) within ``GRAM_REQUEST_READ_TIMEOUT_S`` of its first byte,
  and a new connection must start a request within that time, else the connection is closed;
- beyond ``GRAM_MAX_CONNECTIONS`` open connections, a new one is closed at once (its descriptor freed)
  rather than left to starve the others.

Behind the production front (nginx in docker-compose, deploy/nginx/nginx.conf) the same limits are the
proxy's ``client_header_timeout``, ``client_body_timeout`` and ``limit_conn``; these keep a server
reached directly just as safe.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

log = logging.getLogger(__name__)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    read_timeout_s: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("over %d open connections: closing a new one", self.max_connections)
            transport.close()
            return
        self._arm()  # it must start a request in time

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the whole request must arrive in time

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the request is in; uvicorn's keep-alive timeout covers what follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            log.info("closing a connection whose request did not arrive within %.0f s", self.read_timeout_s)
            self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with the limits of ``settings``."""
    return type("GuardedHttpTools", (GuardedHttpToolsProtocol,), {
        "read_timeout_s": settings.request_read_timeout_s, "max_connections": settings.max_connections,
    })


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (the usual soft 1,024 is what slow
    clients exhausted); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft
