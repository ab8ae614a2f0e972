"""The `gram worker` process: load the checkpoints, run a Worker (worker.py) until SIGTERM, and serve its
/metrics and /healthz for Prometheus and the container healthcheck."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from service.redis.worker import Worker
from service.runtime import Runtime, find_checkpoints
from service.settings import Settings

log = logging.getLogger(__name__)


def checkpoint_versions(settings: Settings) -> dict[str, str]:
    """name -> short digest of its checkpoint file: part of the result-cache key, so new weights never
    serve answers cached from old ones."""
    versions = {}
    for name, path in find_checkpoints(settings).items():
        digest = hashlib.sha256()
        with Path(path).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        versions[name] = digest.hexdigest()[:16]
    return versions


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's signature)
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_metrics(worker: Worker, host: str, port: int) -> WSGIServer:
    """Serve GET /metrics (Prometheus) and GET /healthz on a daemon thread; returns the server."""
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            ok = worker.healthy()
            body = json.dumps({"status": "ok" if ok else "stalled", "consumer": worker.consumer,
                               "redis": "ok" if worker.redis_ok else "unreachable",
                               "models": sorted(worker.engines)}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


def run_worker(
    settings: Settings,
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 9100,
    grace_s: float = 30.0,
) -> int:
    """Load the checkpoints, serve them from Redis until SIGTERM/SIGINT; the process exit code."""
    import signal

    runtime = Runtime(settings)
    runtime.load()
    if runtime.error:
        log.error("gram worker: loading the models failed: %s", runtime.error)
        return 1
    worker = Worker(runtime, settings, versions=checkpoint_versions(settings))
    server = serve_metrics(worker, metrics_host, metrics_port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run(grace_s)

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
        runtime.stop()
    return 0
