"""`gram serve`: the HTTP API on the checkpoints in the weights folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli import app
from service.settings import BatchingMode, Settings

# A server runs torch in its engine threads while the event loop thread keeps working; OpenMP workers that
# spin-wait between parallel regions then starve both (measured: one supervision step 0.48 s instead of
# 0.03 s on 2 cores). libgomp reads the policy once, when torch loads, so decide before anything imports it
# (this module is the first command module the `gram` CLI imports).
if sys.argv[1:2] in (["serve"], ["worker"]):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
