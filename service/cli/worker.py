"""`gram worker`: run the engines for jobs queued on Redis by `gram serve` replicas (GRAM_QUEUE_URL)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from service.cli import app
from service.settings import BatchingMode


@app.command()
def worker(
    queue_url: Annotated[str | None, typer.Option(help="redis://host:port/db (or GRAM_QUEUE_URL)")] = None,
    models: Annotated[str | None, typer.Option(help="comma-separated checkpoint names (all: empty)")] = None,
    weights_dir: Annotated[Path | None, typer.Option(help="folder of *.safetensors checkpoints")] = None,
    batching: Annotated[BatchingMode | None, typer.Option(help="continuous | request | serial")] = None,
    slots: Annotated[int | None, typer.Option(help="trajectory slots per model (batch size)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device, e.g. cpu or cuda:0")] = None,
    max_jobs: Annotated[int | None, typer.Option(help="jobs held per model (GRAM_WORKER_MAX_JOBS)")] = None,
    metrics_host: Annotated[str, typer.Option(help="interface for /metrics and /healthz")] = "127.0.0.1",
    metrics_port: Annotated[int, typer.Option(help="port for /metrics and /healthz")] = 9100,
    grace_s: Annotated[float, typer.Option(help="on SIGTERM, seconds to finish running jobs")] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Load the models and serve jobs from the Redis Streams queue (options override GRAM_* variables)."""
    from service.redis.process import run_worker
    from service.settings import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "queue_url": queue_url, "models": models, "weights_dir": weights_dir, "batching": batching,
        "slots": slots, "device": device, "worker_max_jobs": max_jobs,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if not settings.queue_url:
        typer.echo("gram worker needs a Redis URL: set GRAM_QUEUE_URL or pass --queue-url", err=True)
        raise typer.Exit(2)
    code = run_worker(settings, metrics_host=metrics_host, metrics_port=metrics_port, grace_s=grace_s)
    raise typer.Exit(code)
