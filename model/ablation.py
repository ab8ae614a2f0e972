"""Ablation of the multi-solution training recipe: the paper's ELBO as written, then each change this
project makes, each trained from scratch for the same number of optimizer steps and evaluated on the same
held-out instances.

    python -m model.ablation graph_coloring --steps 400 --out runs/ablation-graph_coloring

Steps, not seconds, fix the budget, so a busy machine changes the wall time but not the result. Each
variant is a set of overrides of the run's cpu preset (model.presets); the table is cumulative: each row
adds one change to the row above.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from model.evaluate import evaluate
from model.presets import TrainConfig, preset
from model.train import train

# (label, GRAMConfig overrides, TrainConfig overrides); each row adds to the previous ones.
STEPS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("paper ELBO (posterior carry, linear posterior, beta 0.5, balance 0.8, KL per position)",
     dict(carry="posterior", prior_ce=0.0, posterior="linear", kl_norm="position", beta=0.5,
          kl_balance=0.8), dict(hindsight=0)),
    ("+ prior carry and prior CE", dict(carry="prior", prior_ce=1.0), {}),
    ("+ hindsight target (32 candidates)", {}, dict(hindsight=32)),
    ("+ KL per answer position, beta 2.5, balance 0.5", dict(kl_norm="answer", beta=2.5, kl_balance=0.5), {}),
    ("+ attention posterior", dict(posterior="attn"), {}),
]


def variants(name: str, steps: int) -> list[tuple[str, TrainConfig]]:
    base = preset(name, "cpu")
    out, model_over, train_over = [], {}, {}
    for label, m, t in STEPS:
        model_over.update(m)
        train_over.update(t)
        tc = base.with_(model=base.model.with_(**model_over), max_steps=steps, time_budget_s=0.0,
                        threads=1, ckpt_every_s=1e9, log_every=steps, heldout_per_setting=100,
                        **train_over)
        out.append((label, tc))
    return out


def run(name: str, steps: int, per_setting: int, samples: int) -> list[dict[str, Any]]:
    rows = []
    for label, tc in variants(name, steps):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = train(tc, tmp)
        model = trainer.ema.eval()
        model.card = trainer.card()  # the held-out set this run excluded (seed and size)
        report = evaluate(model, per_setting=per_setting, n_max=samples)
        row: dict[str, Any] = {"variant": label, "steps": steps}
        for setting, figures in report["settings"].items():
            for metric in ("final_accuracy@1", "final_coverage@20", "final_conflicts_per_graph"):
                if metric in figures:
                    row[f"{setting} {metric}"] = figures[metric]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Cumulative ablation of the training recipe (CSV + markdown).")
    p.add_argument("name", help="a run of model.presets.RUNS with several solutions per input")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--per-setting", type=int, default=50)
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--out", required=True, help="output path without suffix")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = run(args.name, args.steps, args.per_setting, args.samples)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0])
    with out.with_suffix(".csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
