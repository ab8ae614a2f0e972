"""The `gram` command. Each command group lives in its own module and registers itself on `app`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="GRAM Serve: recursive reasoning as a service."
)

# One module per concern; each defines its commands with @app.command(). Import order = help order.
_COMMAND_MODULES = ("serve", "solve", "worker", "train", "evaluate")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
