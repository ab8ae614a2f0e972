"""`gram serve`: the HTTP API on the checkpoints in the weights folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from service.cli import app
from service.settings import BatchingMode, Settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    models: Annotated[str | None, typer.Option(help="comma-separated checkpoint names (all: empty)")] = None,
    weights_dir: Annotated[Path | None, typer.Option(help="folder of *.safetensors checkpoints")] = None,
    batching: Annotated[BatchingMode | None, typer.Option(help="continuous | request | serial")] = None,
    slots: Annotated[int | None, typer.Option(help="trajectory slots per model (batch size)")] = None,
    device: Annotated[str | None, typer.Option(help="torch device, e.g. cpu or cuda:0")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Serve /solve and /sample on the bundled models (options override GRAM_* variables)."""
    from service.server import serve as run_server

    overrides = {
        "models": models, "weights_dir": weights_dir, "batching": batching, "slots": slots, "device": device,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    run_server(settings, host=host, port=port, log_level=log_level)
