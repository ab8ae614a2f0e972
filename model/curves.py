"""Learning curves: held-out metrics of a run's saved snapshots against training core-hours, as a CSV and
a PNG for the model card.

    python -m model.curves runs/curves/nqueens --out model/weights/nqueens.curve \
        --metric final_accuracy@1 --metric final_coverage@20 --per-setting 25 --samples 20

Each snapshot is an EMA checkpoint written by the trainer (its card carries ``train_time_s``); a run
warm-started from another checkpoint adds that checkpoint's training time (``--offset-s``), so the x axis
is the total compute behind the weights. One training process uses one core, so core-hours are training
seconds / 3600.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_checkpoint
from model.evaluate import evaluate


def curve_points(
    snapshots: list[Path], metrics: list[str], per_setting: int, samples: int, offset_s: float = 0.0
) -> list[dict[str, Any]]:
    """One row per snapshot (sorted by training time): core_hours and ``setting/metric`` columns."""
    rows = []
    for path in snapshots:
        model = load_checkpoint(path)
        report = evaluate(model, per_setting=per_setting, n_max=samples)
        row: dict[str, Any] = {
            "snapshot": path.name, "train_steps": model.card.get("train_steps"),
            "core_hours": round((float(model.card.get("train_time_s", 0.0)) + offset_s) / 3600.0, 3),
        }
        for setting, figures in report["settings"].items():
            for metric in metrics:
                if metric in figures:
                    row[f"{setting}/{metric}"] = figures[metric]
        rows.append(row)
    return sorted(rows, key=lambda r: r["core_hours"])


def write_curve(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """``out``.csv and ``out``.png (one line per setting/metric column; ``out`` has no suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [k for k in rows[0] if "/" in k]
    with Path(f"{out}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["snapshot", "train_steps", "core_hours", *columns])
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    hours = [r["core_hours"] for r in rows]
    for col in columns:
        ax.plot(hours, [r.get(col, float("nan")) for r in rows], marker="o", label=col)
    ax.set_xlabel("training core-hours (one CPU thread)")
    ax.set_ylabel("held-out %")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}.png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Held-out learning curve of a run's snapshots (CSV + PNG).")
    p.add_argument("snapshots", help="a folder of *.safetensors snapshots")
    p.add_argument("--out", required=True, help="output path without suffix")
    p.add_argument("--metric", action="append", default=None)
    p.add_argument("--per-setting", type=int, default=25)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--offset-s", type=float, default=0.0, help="training seconds behind a warm start")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    snaps = sorted(Path(args.snapshots).glob("*.safetensors"))
    metrics = args.metric or ["final_accuracy@1", "final_coverage@20"]
    rows = curve_points(snaps, metrics, args.per_setting, args.samples, args.offset_s)
    out = Path(args.out)
    write_curve(rows, out, f"{Path(args.snapshots).name}: held-out learning curve")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
