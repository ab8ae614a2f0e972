"""Supervision-step time against batch size (slots) for one checkpoint: how much batching buys on this
device. This is the ceiling of what continuous batching can gain from packing trajectories together;
early exit multiplies on top of it.

    python -m loadtests.step_scaling --checkpoint model/weights/nqueens.safetensors --batches 1,4,16,64
    python -m loadtests.step_scaling --device cuda --batches 1,16,64,256,1024   # GPU plan, BENCHMARKS.md

Imports only torch, the stdlib and model/ (argparse, not typer), so it runs on the GPU machine, which has
torch and no service dependencies. Writes CSV with --csv; plot it with --png where matplotlib exists.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.fast_path.cpu_path import StepFn
from model.fast_path.runner import make_runner
from model.gram import GRAM, NoiseKeys, tiny_model


def time_step(
    model: GRAM, batch: int, repeats: int, device: torch.device, step: StepFn | None = None
) -> float:
    """Median seconds of one supervision step for ``batch`` slots (after one warm-up step), through
    ``step`` (the engine's runner) or model.step."""
    step = step or model.step
    c = model.config
    x = torch.ones(batch, c.seq_len, c.in_group, dtype=torch.int64, device=device)
    e_x = model.encode(x)
    h, l = model.init_state(batch)
    keys = NoiseKeys(
        seed=torch.zeros(batch, dtype=torch.int64, device=device),
        traj=torch.arange(batch, dtype=torch.int64, device=device),
        step=torch.zeros(batch, dtype=torch.int64, device=device),
    )
    step(h, l, e_x, keys)
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(h, l, e_x, keys)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="checkpoint (default: a tiny random N-Queens model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--path", choices=("engine", "model"), default="engine",
                   help="engine: the step the service runs (model.fast_path.runner: on a CPU the "
                        "GRAM_CPU_PATH choice, timed at --hint slots when auto); model: plain model.step")
    p.add_argument("--hint", type=int, default=32, help="slots the engine's CPU path is chosen at")
    p.add_argument("--csv", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_checkpoint(args.checkpoint, device) if args.checkpoint else tiny_model("nqueens").to(device)
    step, how = (None, "model.step")
    if args.path == "engine":
        step, how = make_runner(model.eval(), batch_hint=args.hint)
    print(f"step: {how}")
    rows = []
    base = None
    print(f"{'batch':>6} {'ms/step':>10} {'traj-steps/s':>13} {'speed-up vs batch 1':>20}")
    for b in (int(v) for v in args.batches.split(",")):
        sec = time_step(model, b, args.repeats, device, step)
        rate = b / sec
        base = base or rate
        rows.append({"batch": b, "step_s": sec, "traj_steps_per_s": rate, "speedup": rate / base,
                     "path": how})
        print(f"{b:>6} {1000 * sec:>10.1f} {rate:>13.1f} {rate / base:>20.2f}", flush=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["batch"] for r in rows], [r["traj_steps_per_s"] for r in rows], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("slots (trajectories per step)")
        ax.set_ylabel("trajectory-steps per second")
        ax.set_title(f"{model.config.task} d={model.config.d_model} on {args.device}")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
