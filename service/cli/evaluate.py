"""`gram eval`: the JSON report of checkpoints on their held-out sets (the work is model/evaluate.py).

    gram eval model/weights/nqueens.safetensors --out model/weights/nqueens.eval.json
    gram eval model/weights/mnist.safetensors --png model/weights/mnist_samples.png
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from service.cli import app

console = Console()


@app.command("eval")
def evaluate(
    checkpoints: Annotated[list[Path], typer.Argument(help="checkpoint files (.safetensors)")],
    per_setting: Annotated[int, typer.Option(help="held-out instances per setting (e.g. NQ 8x8)")] = 100,
    samples: Annotated[int, typer.Option(help="trajectories per instance (coverage@1,5,20,50)")] = 50,
    max_steps: Annotated[int | None, typer.Option(help="supervision steps (default: n_sup)")] = None,
    out: Annotated[Path | None, typer.Option(help="report path (one checkpoint) or folder (several)")] = None,
    png: Annotated[Path | None, typer.Option(help="MNIST: write the sample grid here")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    setting: Annotated[
        list[str] | None, typer.Option(help="evaluate only this held-out setting (repeatable), e.g. hard")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="prior temperature (default: each checkpoint's recommended one)")
    ] = None,
    halting: Annotated[
        bool | None, typer.Option(help="retire a trajectory when the halting head says stop (default: each "
                                       "checkpoint's card, else on)")
    ] = None,
) -> None:
    """Accuracy and coverage @1/5/20/50 against the exact solver, colouring conflicts, Sudoku by tier."""
    import torch

    from model.checkpoint import load_checkpoint
    from model.evaluate import evaluate as run_eval
    from model.evaluate import mnist_report

    if threads:
        torch.set_num_threads(threads)
    for path in checkpoints:
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="checkpoints")
        try:
            model = load_checkpoint(path)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="checkpoints") from err
        if model.config.task == "mnist":
            report = mnist_report(model, png=png)
        else:
            with progress_reporter(f"eval {path.name}") as on_progress:
                report = run_eval(model, per_setting, samples, max_steps, progress=on_progress,
                                  temperature=temperature, use_halting=halting, settings=setting)
        text = json.dumps(report, indent=2)
        target = out / f"{path.stem}.eval.json" if out is not None and len(checkpoints) > 1 else out
        if target is not None:
            target.write_text(text + "\n")
        console.print_json(text)


LINE_EVERY_S = 10.0  # progress lines when not on a terminal (a log, CI, a pipe)


@contextmanager
def progress_reporter(label: str, out: Console | None = None) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback: a live bar on a terminal, else a plain line at most every
    ``LINE_EVERY_S`` seconds (and at the end) on stderr, so a long run in a log is never silent."""
    target = out or console
    if target.is_terminal:
        with Progress(console=target, transient=True) as bar:
            task_id = bar.add_task(label, total=None)

            def on_bar(done: int, total: int, tid: TaskID = task_id) -> None:
                bar.update(tid, completed=done, total=total)

            yield on_bar
        return
    started = time.monotonic()
    last = -LINE_EVERY_S

    def on_line(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic() - started
        if now - last >= LINE_EVERY_S or done == total:
            last = now
            print(f"{label}: {done}/{total} instances, {now:.0f} s", file=sys.stderr, flush=True)

    yield on_line
