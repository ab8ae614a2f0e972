"""`gram solve` and `gram sample`: one-shot requests, in-process on a checkpoint or against a running server.

    gram solve --task nqueens --n 8 --queens '[[0, 0]]' --seed 0 --png board.png
    gram solve --file request.json --url http://127.0.0.1:8000
    gram solve --task sudoku --puzzle 53..7... --stream       # each solution shown as it is verified
    gram sample --n 16 --png digits.png

Help strings go through rich markup (typer's help formatter): square brackets in them are escaped.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape

from model.tasks.base import TaskInputError
from service.cli import app
from service.cli.show import print_answer, write_png
from service.jobs import Job, Result
from service.schemas import SOLVE_REQUESTS, SampleRequest, SolveRequest, task_body
from service.settings import Settings

console = Console()
err_console = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option(help="POST to this server instead of loading a checkpoint")]
WeightsOpt = Annotated[Path | None, typer.Option(help="checkpoint folder (default: GRAM_WEIGHTS_DIR)")]
TASK_NAMES = " | ".join(SOLVE_REQUESTS)
EXAMPLES = (
    "gram solve --task sudoku --puzzle "
    "'53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79'",
    "gram solve --task nqueens --n 8 --queens '[[0, 0]]' --seed 0 --png board.png",
    "gram solve --task graph_coloring --num-nodes 5 --num-colors 3 --edges '[[0,1],[1,2],[2,3],[3,4],[4,0]]'",
    "gram solve --file request.json --url http://127.0.0.1:8000",
)
EPILOG = "Examples:\n\n" + "\n\n".join(escape(e) for e in EXAMPLES)


def _json_arg(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"--{name} must be JSON: {err}") from None


def _fail(message: str, examples: list[str] | tuple[str, ...] = ()) -> None:
    err_console.print("[red]error:[/red] ", escape(message), sep="", soft_wrap=True)
    if examples:
        err_console.print("\nfor example:", *(f"  {e}" for e in examples), sep="\n", markup=False,
                          soft_wrap=True)
        err_console.print("\nevery option: gram solve --help")
    raise typer.Exit(2)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _explain(err: ValidationError, from_flags: bool) -> tuple[str, list[str]]:
    """A /solve body's validation errors as one message naming what is missing or wrong (as flags when the
    body came from flags), and the usage examples to show with it."""
    missing, wrong, task = [], [], ""
    for e in err.errors():
        loc = [str(part) for part in e["loc"]]
        if e["type"] == "union_tag_not_found":
            return f"say which puzzle to solve: --task {TASK_NAMES} (or a body with --file)", [*EXAMPLES]
        if e["type"] == "union_tag_invalid":
            given = e["input"].get("task") if isinstance(e["input"], dict) else None
            return f"unknown task {given!r}: use --task {TASK_NAMES}", [*EXAMPLES]
        task, field = loc[0], ".".join(loc[1:])
        name = _flag(field) if from_flags and len(loc) == 2 else field
        if e["type"] == "missing":
            about = SOLVE_REQUESTS[task].model_fields[loc[1]].description if len(loc) == 2 else None
            missing.append(name + (f" ({about})" if about else ""))
        else:
            wrong.append(f"{name}: {e['msg']}")
    problems = ([f"--task {task} needs " + " and ".join(missing)] if missing else []) + wrong
    return "; ".join(problems), [e for e in EXAMPLES if f"--task {task} " in e] if missing else []


def _post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    response = httpx.post(url.rstrip("/") + path, json=body, timeout=None)
    if response.status_code != 200:
        _fail(f"{response.status_code} {response.text}")
    return response.json()


def _run_local(settings: Settings, task: str, job_of: Any, live: bool = False) -> tuple[Job, Result]:
    """Route the job among the checkpoints serving ``task`` (as the API does), run it on an engine, stop.
    ``live``: show its solutions as they are verified (service/cli/live.py)."""
    from model.checkpoint import load_checkpoint, read_config
    from model.tasks.registry import get_task
    from service.engine import Engine
    from service.queues import ModelInfo
    from service.runtime import find_checkpoints

    paths = {n: p for n, p in find_checkpoints(settings).items() if read_config(p)[0].task == task}
    if not paths:
        _fail(f"no checkpoint for task {task!r} in {settings.weights_dir}")
    job = job_of([ModelInfo(name=name, task=task) for name in paths])
    # Say what the wait is for: the first in-process run on a machine times (and may compile) the CPU
    # step paths, which takes tens of seconds; later runs reuse the recorded choice (GRAM_CPU_PATH_CACHE).
    started = time.monotonic()
    err_console.print(f"loading {paths[job.model]} ...", style="dim")
    model = load_checkpoint(paths[job.model], settings.device)
    err_console.print("preparing the step path (the first run on this machine times them) ...", style="dim")
    engine = Engine(job.model, model, get_task(task), settings)
    err_console.print(f"running on {engine.step_path} after {time.monotonic() - started:.1f} s of set-up",
                      style="dim")
    engine.start()
    try:
        if live:
            from service.cli.live import follow_local

            return job, follow_local(engine, job, console)
        return job, engine.submit(job).result()
    finally:
        engine.stop()


def _meaning(settings: Settings, job: Job, result: Result) -> dict[str, Any]:
    """status / hint / outside_trained_range, as the API answers them (service/outcome.py)."""
    import asyncio

    from model.checkpoint import read_config
    from service.outcome import explain, range_note
    from service.runtime import find_checkpoints

    card = read_config(find_checkpoints(settings)[job.model])[1]
    note = range_note(job, card)
    meaning = asyncio.run(explain(job, result, max_trajectories=settings.max_trajectories, note=note))
    return {"status": meaning.status, "hint": meaning.hint, "outside_trained_range": note}


@app.command(epilog=EPILOG)
def solve(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="JSON request body")] = None,
    task: Annotated[str | None, typer.Option(help="sudoku | nqueens | graph_coloring")] = None,
    puzzle: Annotated[str | None, typer.Option(help="sudoku: 81 chars, '.' or '0' blank")] = None,
    n: Annotated[int | None, typer.Option(help="nqueens: board size")] = None,
    queens: Annotated[str | None, typer.Option(help=escape("nqueens: JSON [[row, col], ...]"))] = None,
    num_nodes: Annotated[int | None, typer.Option(help="graph_coloring: nodes")] = None,
    edges: Annotated[str | None, typer.Option(help=escape("graph_coloring: JSON [[u, v], ...]"))] = None,
    num_colors: Annotated[int | None, typer.Option(help="graph_coloring: colours")] = None,
    fixed: Annotated[str | None, typer.Option(help='graph_coloring: JSON {"node": colour}')] = None,
    num_trajectories: Annotated[int | None, typer.Option(help="width budget")] = None,
    max_solutions: Annotated[int | None, typer.Option(help="stop after this many distinct")] = None,
    max_steps: Annotated[int | None, typer.Option(help="supervision steps per trajectory")] = None,
    stall_patience: Annotated[
        int | None, typer.Option(help="retire a trajectory stuck this many steps on a wrong answer (0: off)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same answer")] = None,
    temperature: Annotated[
        float | None, typer.Option(help="prior temperature (above 1: explore further; default: the model's)")
    ] = None,
    timeout_ms: Annotated[float | None, typer.Option(help="deadline")] = None,
    url: UrlOpt = None,
    weights_dir: WeightsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the response JSON")] = False,
    png: Annotated[
        Path | None, typer.Option("--png", help="also write every solution's picture into this PNG file")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="show each distinct solution live, as it is verified")
    ] = False,
) -> None:
    """Solve one puzzle and show its distinct verified solutions as pictures (Sudoku grid, N-Queens board,
    colouring)."""
    body: dict[str, Any] = json.loads(file.read_text()) if file else {}
    flags = {
        "task": task, "puzzle": puzzle, "n": n, "queens": _json_arg(queens, "queens"), "num_nodes": num_nodes,
        "edges": _json_arg(edges, "edges"), "num_colors": num_colors, "fixed": _json_arg(fixed, "fixed"),
        "num_trajectories": num_trajectories, "max_solutions": max_solutions, "max_steps": max_steps,
        "stall_patience": stall_patience, "seed": seed, "temperature": temperature, "timeout_ms": timeout_ms,
    }
    body.update({k: v for k, v in flags.items() if v is not None})
    stream = stream or body.get("stream") is True
    try:
        request = TypeAdapter(SolveRequest).validate_python(body)
    except ValidationError as err:
        _fail(*_explain(err, from_flags=file is None))
        return
    if url and stream:
        from service.cli.live import follow_remote

        response = follow_remote(url, "/solve", body, console, _fail)
    elif url:
        response = _post(url, "/solve", body)
    else:
        from service.intake import solve_job

        settings = Settings(**({"weights_dir": weights_dir} if weights_dir else {}))
        try:
            job, result = _run_local(settings, request.task, lambda m: solve_job(settings, request, m),
                                     live=stream)
        except TaskInputError as err:
            _fail(f"{err.field_name or 'body'}: {err}")
            return
        response = {
            "task": result.task, "model": result.model, "solutions": [s.__dict__ for s in result.solutions],
            "complete": result.complete, "num_trajectories": result.num_trajectories, "steps": result.steps,
            "elapsed_ms": round(result.elapsed_ms, 3), "seed": job.seed, **_meaning(settings, job, result),
        }
    fields = task_body(request)
    if as_json:
        console.print_json(json.dumps(response))
    else:
        print_answer(console, fields, response)
    if png is not None:
        write_png(err_console if as_json else console, png, fields, response)


@app.command()
def sample(
    out: Annotated[
        Path, typer.Option("--png", "--out", help="PNG file for the grid of samples (folders made as needed)")
    ] = Path("grid.png"),
    n: Annotated[int, typer.Option(help="images, 1..64")] = 16,
    steps: Annotated[int | None, typer.Option(help="supervision steps")] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same images")] = None,
    temperature: Annotated[
        float | None, typer.Option(help="prior temperature (default: the model's)")
    ] = None,
    url: UrlOpt = None,
    weights_dir: WeightsOpt = None,
) -> None:
    """Sample binarized MNIST digits and write them as one PNG grid."""
    try:
        request = SampleRequest(n=n, steps=steps, seed=seed, temperature=temperature, format="bits")
    except ValidationError as err:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()))
        return
    if url:
        grid = base64.b64decode(_post(url, "/sample", request.model_dump(exclude_none=True))["grid_png"])
    else:
        from model.tasks.mnist import render_grid_png
        from service.images import bits_tensor
        from service.intake import sample_job

        settings = Settings(**({"weights_dir": weights_dir} if weights_dir else {}))
        _, result = _run_local(settings, "mnist", lambda m: sample_job(settings, request, m))
        grid = render_grid_png(bits_tensor([s.solution for s in result.solutions]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(grid)
    console.print(f"wrote {n} samples to {out}")
