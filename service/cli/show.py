"""How `gram solve` shows an answer: each solution as a picture in the terminal (service/render), a summary
line, and ``--png`` to write every solution's picture into one image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from service import render


def print_answer(console: Console, fields: dict[str, Any], response: dict[str, Any]) -> None:
    """Title, then per solution a header line (rank, trajectories, score, first step) and its picture."""
    task, solutions = response["task"], response["solutions"]
    plural = "solution" if len(solutions) == 1 else "solutions"
    console.print(Text(f"{task} ({response['model']}): {len(solutions)} distinct verified {plural}",
                       style="bold"))
    if not solutions:
        status, hint = response.get("status"), response.get("hint")
        if status == "infeasible":
            console.print(f"infeasible: {hint}", style="yellow")
        else:
            console.print(hint or "no verified solution in this budget: try more --num-trajectories, "
                                  "--max-steps or another --seed", style="yellow")
    if response.get("outside_trained_range"):
        console.print(f"outside the model's training range: {response['outside_trained_range']}",
                      style="yellow")
    for i, s in enumerate(solutions, 1):
        console.print(Text(
            f"\nsolution {i}/{len(solutions)}: reached by {s['count']} trajector"
            f"{'y' if s['count'] == 1 else 'ies'}, score {s['score']:.3f}, first at step {s['first_step']}",
            style="bold cyan",
        ))
        picture = render.terminal(task, fields, s["solution"])
        console.print(picture if picture is not None else Text(str(s["solution"])), soft_wrap=False)
    console.print(
        f"\ncomplete={response['complete']} trajectories={response['num_trajectories']} "
        f"steps={response['steps']} elapsed={response['elapsed_ms']:.0f} ms seed={response['seed']}"
    )


def write_png(console: Console, path: Path, fields: dict[str, Any], response: dict[str, Any]) -> None:
    """Every solution's picture side by side in one PNG at ``path`` (folders made as needed)."""
    solutions = [s["solution"] for s in response["solutions"]]
    if not solutions:
        console.print(f"no solutions: nothing written to {path}", style="yellow")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render.png_sheet(response["task"], fields, solutions))
    console.print(f"wrote {len(solutions)} solution picture{'s' if len(solutions) > 1 else ''} to {path}")
