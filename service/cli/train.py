"""`gram train`: train a GRAM run with a live progress bar (the loop itself is model/train.py).

    gram train nqueens --budget 1200            # cpu preset, 20 min of training time, runs/nqueens
    gram train nqueens --resume --budget 1800   # continue exactly where the run stopped
    gram train sudoku --preset paper            # the paper's sizes (GPU; torchrun for several GPUs)
    gram train nqueens --export model/weights/nqueens.safetensors   # ship the run's EMA weights
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from service.cli import app

console = Console()


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="a run of model.presets.RUNS, e.g. nqueens, graph_coloring")],
    preset: Annotated[str, typer.Option(help="cpu (shipped checkpoints) | paper (GPU sizes)")] = "cpu",
    run_dir: Annotated[Path | None, typer.Option(help="where state and model are written")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in run-dir exactly")] = False,
    budget: Annotated[float | None, typer.Option(help="training seconds, summed over resumes")] = None,
    max_steps: Annotated[int | None, typer.Option(help="optimizer steps")] = None,
    decay_s: Annotated[
        float | None,
        typer.Option(help="anneal the learning rate linearly to 0 over the budget's last N seconds"),
    ] = None,
    batch: Annotated[int | None, typer.Option(help="batch per process (overrides the preset)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    export: Annotated[Path | None, typer.Option(help="only copy the run's EMA model to this path")] = None,
    init: Annotated[
        Path | None, typer.Option(help="start from this checkpoint's matching weights (fine-tune)")
    ] = None,
) -> None:
    """Train (deep supervision, ELBO in noise space, EMA) with presets cpu and paper."""
    from model.presets import RUNS
    from model.train import MODEL_FILE, make_config
    from model.train import train as run_training

    if name not in RUNS:
        raise typer.BadParameter(f"unknown run {name!r}; choose one of {', '.join(RUNS)}", param_hint="name")
    if preset not in ("cpu", "paper"):
        raise typer.BadParameter("preset must be cpu or paper", param_hint="--preset")
    run_dir = run_dir or Path("runs") / name
    if export is not None:
        from model.checkpoint import load_checkpoint, save_checkpoint

        model = load_checkpoint(run_dir / MODEL_FILE)
        save_checkpoint(model, export)
        console.print(f"exported {run_dir / MODEL_FILE} -> {export}")
        return
    if resume and not (run_dir / "state.safetensors").exists():
        raise typer.BadParameter(f"nothing to resume in {run_dir}", param_hint="--resume")
    given = dict(time_budget_s=budget, max_steps=max_steps, decay_s=decay_s)
    limits = {k: v for k, v in given.items() if v is not None}
    tc = None if resume else make_config(name, preset, batch=batch, threads=threads, **limits)
    if tc is not None and init is not None:
        tc = tc.with_(init_from=str(init))

    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task_id = bar.add_task(name, total=1.0, stats="starting", eta="?")

        def on_progress(r: dict[str, Any]) -> None:
            if r.get("budget_s"):
                done = r["train_time_s"] / r["budget_s"]
            else:
                done = r["step"] / max(r["max_steps"], 1)
            stats = (
                f"step {r['step']} loss {r.get('loss', float('nan')):.3f} rec {r.get('ce', 0):.3f} "
                f"kl {r.get('kl', 0):.2f} acc {r['acc']:.2f} {r['samples_per_s']:.0f} samples/s"
            )
            bar.update(task_id, completed=min(done, 1.0), stats=stats, eta=_fmt_eta(r["eta_s"]))

        trainer = run_training(tc, run_dir, resume=resume, progress=on_progress, overrides=limits)
    console.print(
        f"{name}: {trainer.step} steps, {trainer.train_time:.0f}s of training, "
        f"model in {run_dir / MODEL_FILE}"
    )
