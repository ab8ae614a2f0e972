"""The inputs people try first, as a report: empty N-Queens boards, well-known graphs, famous Sudokus and
the empty Sudoku grid. Unlike the held-out sets these are not excluded from training (there is one empty
board per size); they measure what a new user sees, at the service's semantics (a trajectory's first
verified candidate) and the checkpoint's served temperature and halting choice.

    python -m model.probes model/weights/nqueens.safetensors
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

import torch

from model.checkpoint import load_checkpoint
from model.evaluate import rollout
from model.gram import GRAM, served_halting, served_temperature
from model.tasks.base import Instance
from model.tasks.registry import get_task


@dataclass(frozen=True)
class Probe:
    name: str
    body: dict[str, Any]  # a /solve body without "task"
    width: int  # trajectories
    max_steps: int | None = None  # default: the model's n_sup


def _petersen() -> list[list[int]]:
    outer = [[i, (i + 1) % 5] for i in range(5)]
    spokes = [[i, i + 5] for i in range(5)]
    inner = [[5 + i, 5 + (i + 2) % 5] for i in range(5)]
    return outer + spokes + inner


def _grotzsch() -> list[list[int]]:
    """The smallest triangle-free 4-chromatic graph (11 nodes, 20 edges)."""
    cycle = [[i, (i + 1) % 5] for i in range(5)]
    shadows = [[5 + i, (i + 1) % 5] for i in range(5)] + [[5 + i, (i - 1) % 5] for i in range(5)]
    hub = [[10, 5 + i] for i in range(5)]
    return cycle + shadows + hub


def _wheel(rim: int) -> list[list[int]]:
    return [[i, (i + 1) % rim] for i in range(rim)] + [[rim, i] for i in range(rim)]


PROBES: dict[str, list[Probe]] = {
    "nqueens": [Probe(f"empty {n}x{n}", {"n": n, "queens": []}, 64) for n in range(4, 13)]
    + [Probe("empty 8x8, width 256", {"n": 8, "queens": []}, 256)],
    "graph_coloring": [
        Probe("Petersen graph, 3 colours", {"num_nodes": 10, "num_colors": 3, "edges": _petersen()}, 20),
        Probe("5-cycle, 3 colours", {"num_nodes": 5, "num_colors": 3,
                                     "edges": [[i, (i + 1) % 5] for i in range(5)]}, 20),
        Probe("octahedron, 3 colours", {"num_nodes": 6, "num_colors": 3,
                                        "edges": [[a, b] for a in range(6) for b in range(a + 1, 6)
                                                  if b != a + 3]}, 20),
        Probe("wheel W7, 3 colours", {"num_nodes": 7, "num_colors": 3, "edges": _wheel(6)}, 20),
        Probe("Groetzsch graph, 4 colours", {"num_nodes": 11, "num_colors": 4, "edges": _grotzsch()}, 20),
        Probe("K3,3, 2 colours", {"num_nodes": 6, "num_colors": 2,
                                  "edges": [[a, b] for a in range(3) for b in range(3, 6)]}, 20),
    ],
    "sudoku": [
        Probe("empty grid", {"puzzle": "." * 81}, 20),
        Probe("Inkala 2012 ('world's hardest')", {"puzzle": (
            "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..")}, 64, 16),
        Probe("AI Escargot", {"puzzle": (
            "1....7.9..3..2...8..96..5....53..9...1..8...26....4...3......1..4......7..7...3..")}, 64, 16),
    ],
}


@torch.no_grad()
def run_probe(model: GRAM, probe: Probe, seed: int = 0) -> dict[str, Any]:
    task = get_task(model.config.task)
    instance: Instance = task.parse({"task": task.name, **probe.body})
    steps = probe.max_steps or model.config.n_sup
    run = rollout(model, task, instance.x, probe.width, steps, seed=seed,
                  temperature=served_temperature(model))
    answers, valid, _ = run.served(served_halting(model))
    final, final_ok = run.final()
    distinct = {task.canonical_key(instance.x, answers[j]) for j in range(probe.width) if valid[j]}
    final_distinct = {task.canonical_key(instance.x, final[j]) for j in range(probe.width) if final_ok[j]}
    return {
        "probe": probe.name, "width": probe.width, "max_steps": steps,
        "solved": bool(distinct), "distinct_solutions": len(distinct),
        "valid_trajectories": int(valid.sum()), "final_distinct_solutions": len(final_distinct),
    }


def probe_report(model: GRAM, seed: int = 0) -> dict[str, Any]:
    results = [run_probe(model, p, seed) for p in PROBES.get(model.config.task, [])]
    return {
        "checkpoint": model.card.get("name", model.config.task), "task": model.config.task,
        "temperature": served_temperature(model), "use_halting": served_halting(model), "seed": seed,
        "probes": results, "solved": sum(r["solved"] for r in results), "of": len(results),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run a checkpoint on the inputs people try first (JSON).")
    p.add_argument("checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = probe_report(load_checkpoint(args.checkpoint), args.seed)
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
