"""Run the API with uvicorn: ``serve(settings, host, port)`` (what `gram serve` and `make serve` call)."""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from service.settings import Settings
from service.slow_clients import guarded_protocol, raise_open_file_limit


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One process, one event loop: the engines run in their own threads (torch releases the GIL), so more
    # uvicorn workers would only load the models twice.
    # httptools + uvloop (pinned): the pure-Python h11 parser and asyncio's loop cost ~0.4 ms more per
    # request arriving after an idle gap, which is 10 % of a narrow request's engine time (BENCHMARKS.md).
    # Slow or idle clients are cut off (service/slow_clients.py); the file limit is raised so that the
    # connection cap, not the descriptors, is what bounds them.
    raise_open_file_limit()
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=5, loop="uvloop", http=guarded_protocol(settings))
