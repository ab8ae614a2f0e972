"""GRAM training (docs/GRAM.md section 7.5): deep supervision with a persistent carry, one optimizer step per
supervision step, halting-driven swap-in of fresh examples (TRM), AdamW + warmup, clipping, EMA weights,
exact resume, DDP when launched with torchrun on several devices.

Imports torch and the stdlib only (it runs on the GPU machine as ``python -m model.train``); the rich
progress bar lives in service/cli/train.py and gets metrics through the ``progress`` callback.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from model import safetensors_io
from model.checkpoint import save_checkpoint
from model.config import GRAMConfig
from model.data import HeldOut, TrainStream, heldout_set, input_key
from model.gram import GRAM, build_model
from model.objective import GRAMObjective
from model.presets import TrainConfig, preset, task_of
from model.tasks.registry import get_task
from model.trained_range import TRAINED_RANGE

Progress = Callable[[dict[str, Any]], None]
STATE_FILE = "state.safetensors"
MODEL_FILE = "model.safetensors"
HELDOUT_SEED = 12345
CARRY_FIELDS = ("x", "y", "h", "l", "steps", "min_steps", "cands", "counts")


@dataclass
class Carry:
    """The persistent training batch: one example per slot, mid-trajectory."""

    x: torch.Tensor
    y: torch.Tensor
    h: torch.Tensor
    l: torch.Tensor
    steps: torch.Tensor  # supervision steps done on the slot's example
    min_steps: torch.Tensor  # halting is ignored before this many steps (exploration)
    cands: torch.Tensor  # [B, C, L, G] valid solutions of each slot's input (C = 1: just y)
    counts: torch.Tensor  # [B] how many of cands are real


def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def setup_distributed() -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


class Trainer:
    def __init__(
        self, tc: TrainConfig, run_dir: str | Path, device: str | torch.device | None = None
    ) -> None:
        self.tc = tc
        self.run_dir = Path(run_dir)
        self.rank, self.world, local = _dist_info()
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.task = get_task(task_of(tc.name))
        self.model: GRAM = build_model(tc.model, seed=tc.seed).to(self.device)
        if tc.init_from:
            _warm_start(self.model, tc.init_from)
        self.ema: GRAM = copy.deepcopy(self.model).requires_grad_(False).eval()
        verify = None if self.task.name == "mnist" else self.task.verify
        self.objective = GRAMObjective(self.model, verify)
        self.step_module: torch.nn.Module = self.objective
        if self.world > 1:
            self.step_module = torch.nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,  # the baseline never touches the guidance heads
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
        )
        self.heldout: list[HeldOut] = (
            heldout_set(self.task, tc.heldout_per_setting, HELDOUT_SEED) if tc.heldout_per_setting else []
        )
        excluded = {input_key(self.task, h.instance.x) for h in self.heldout}
        mixture = tc.extra.get("mixture")  # e.g. a curriculum phase: [[weight, knobs], ...]
        self.stream = TrainStream(
            self.task, seed=tc.seed * 1000 + self.rank + 1, excluded=excluded,
            mixture=[(float(w), dict(k)) for w, k in mixture] if mixture else None,
        )
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(tc.seed * 1000 + self.rank + 7)
        self.step = 0
        self.train_time = 0.0
        self.examples = 0
        self.carry = self._fresh_carry()
        # bf16 autocast pays only where the CPU multiplies bf16 natively (AVX-512 BF16 / AMX): on an
        # AVX2-only CPU it is emulated and measured 18x slower than fp32 on the Sudoku run. Checked here,
        # not in the preset, because a resumed run may land on another machine.
        self.autocast = tc.autocast == "bf16" and bf16_pays(self.device)

    # ---- carry -------------------------------------------------------------------------------------
    def _draw(self, n: int) -> tuple[torch.Tensor, ...]:
        cap = max(self.tc.hindsight, 1)
        if cap > 1:
            x, y, cands, counts = self.stream.batch_with_candidates(n, cap)
        else:
            x, y = self.stream.batch(n)
            cands, counts = y.unsqueeze(1), torch.ones(n, dtype=torch.long)
        return tuple(t.to(self.device) for t in (x, y, cands, counts))

    def _fresh_carry(self) -> Carry:
        b = self.tc.batch
        x, y, cands, counts = self._draw(b)
        h, l = self.model.init_state(b)
        zeros = torch.zeros(b, dtype=torch.long, device=self.device)
        return Carry(x, y, h, l, zeros, self._draw_min_steps(b), cands, counts)

    def _draw_min_steps(self, n: int) -> torch.Tensor:
        n_sup = self.tc.model.n_sup
        explore = torch.rand(n, generator=self.gen, device=self.device) < self.tc.halt_explore
        span = max(n_sup - 1, 1)
        draw = torch.rand(n, generator=self.gen, device=self.device)
        random_min = 2 + (draw * span).long().clamp_max(span - 1)
        return torch.where(explore, random_min.clamp_max(n_sup), torch.ones_like(random_min))

    def _swap_in(self, done: torch.Tensor) -> None:
        idx = done.nonzero().flatten()
        if idx.numel() == 0:
            return
        x, y, cands, counts = self._draw(idx.numel())
        c = self.carry
        c.x[idx], c.y[idx], c.cands[idx], c.counts[idx] = x, y, cands, counts
        h0, l0 = self.model.init_state(idx.numel())
        c.h[idx], c.l[idx] = h0, l0
        c.steps[idx] = 0
        c.min_steps[idx] = self._draw_min_steps(idx.numel())
        self.examples += idx.numel()

    # ---- one optimizer step ------------------------------------------------------------------------
    def lr_at(self, step: int, train_time_s: float = 0.0) -> float:
        return learning_rate(self.tc, step, train_time_s)

    def train_step(self) -> dict[str, float]:
        tc, c = self.tc, self.carry
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step, self.train_time)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            out = self.step_module(c.x, c.y, c.h, c.l, self.gen, c.cands, c.counts)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        c.h, c.l = out.h, out.l  # detached: no gradient crosses supervision steps
        c.steps += 1
        halted = (out.q_halt > 0) & (c.steps >= c.min_steps)
        done = (c.steps >= tc.model.n_sup) | halted
        finished_valid = out.valid[done]
        self._swap_in(done)
        return {
            "loss": float(out.loss.detach()), "ce": float(out.ce), "kl": float(out.kl),
            "halt": float(out.halt), "value": float(out.value), "grad_norm": float(grad_norm),
            "acc_step": float(out.valid.float().mean()), "token_acc": float(out.token_acc.mean()),
            "finished": int(done.sum()), "finished_valid": int(finished_valid.sum()),
            "mean_steps_done": float(c.steps.float().mean()),
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up the decay so a short CPU run's EMA is not dominated by the random init.
        decay = min(self.tc.ema_decay, (1 + self.step) / (10 + self.step))
        for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
            pe.lerp_(p.detach(), 1.0 - decay)

    # ---- loop --------------------------------------------------------------------------------------
    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        tc = self.tc
        last_ckpt = time.monotonic()
        window: list[dict[str, float]] = []
        fin = fin_valid = 0
        t_window = time.monotonic()
        while self.step < tc.max_steps and not (tc.time_budget_s and self.train_time >= tc.time_budget_s):
            t0 = time.monotonic()
            metrics = self.train_step()
            self.train_time += time.monotonic() - t0
            # With a time budget, every rank must stop at the same step and anneal alike. Without one the
            # clock decides nothing, so no collective (and no device sync) is added to each step.
            if self.world > 1 and tc.time_budget_s:
                self.train_time = _slowest_rank(self.train_time, self.device)
            window.append(metrics)
            fin += metrics["finished"]
            fin_valid += metrics["finished_valid"]
            if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                now = time.monotonic()
                report = self._summarise(window, fin, fin_valid, now - t_window)
                window, fin, fin_valid, t_window = [], 0, 0, now
                if progress is not None and self.rank == 0:
                    progress(report)
            if time.monotonic() - last_ckpt >= tc.ckpt_every_s:
                self.save()
                last_ckpt = time.monotonic()
        self.save()
        return {"step": self.step, "train_time_s": self.train_time, "examples": self.examples}

    def _summarise(
        self, window: list[dict[str, float]], fin: int, fin_valid: int, secs: float
    ) -> dict[str, Any]:
        mean = {k: sum(m[k] for m in window) / len(window) for k in window[0]} if window else {}
        steps_left = self.tc.max_steps - self.step
        rate = len(window) / secs if secs > 0 else 0.0
        eta = steps_left / rate if rate > 0 else math.inf
        if self.tc.time_budget_s:
            eta = min(eta, max(self.tc.time_budget_s - self.train_time, 0.0))
        return {
            **mean, "step": self.step, "max_steps": self.tc.max_steps, "train_time_s": self.train_time,
            "budget_s": self.tc.time_budget_s, "samples_per_s": rate * self.tc.batch * self.world,
            "acc": fin_valid / fin if fin else float("nan"), "eta_s": eta,
            "lr": self.lr_at(self.step, self.train_time),
            "examples": self.examples,
        }

    # ---- checkpoints -------------------------------------------------------------------------------
    def card(self) -> dict[str, Any]:
        return {
            "name": self.tc.name, "preset": self.tc.preset, "train_steps": self.step,
            "train_time_s": round(self.train_time, 1), "train_examples": self.examples,
            "batch": self.tc.batch * self.world, "params": self.model.num_parameters(),
            "weights": "EMA", "ema_decay": self.tc.ema_decay, "heldout_seed": HELDOUT_SEED,
            "heldout_per_setting": self.tc.heldout_per_setting, "decay_s": self.tc.decay_s,
            "init_from": self.tc.init_from, "hindsight": self.tc.hindsight,
            "input_range": TRAINED_RANGE.get(self.task.name, ""),
        }

    def save(self) -> None:
        """Full state for --resume (every rank) and the EMA model (rank 0), both atomically."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for k, v in self.model.state_dict().items():
            tensors[f"model.{k}"] = v
        for k, v in self.ema.state_dict().items():
            tensors[f"ema.{k}"] = v
        opt = self.optimizer.state_dict()
        for idx, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        c = self.carry
        for k in CARRY_FIELDS:
            tensors[f"carry.{k}"] = getattr(c, k)
        tensors["rng.gen"] = self.gen.get_state()
        meta = {
            "train": json.dumps(self.tc.to_dict()),
            "progress": json.dumps(
                {"step": self.step, "train_time": self.train_time, "examples": self.examples}
            ),
            "param_groups": json.dumps(opt["param_groups"]),
            "stream": json.dumps(self.stream.state()),
        }
        safetensors_io.save(tensors, self.run_dir / _state_name(self.rank), meta)
        if self.rank == 0:
            save_checkpoint(self.ema, self.run_dir / MODEL_FILE, self.card())

    def load(self) -> None:
        tensors, meta = safetensors_io.load(self.run_dir / _state_name(self.rank), device=self.device)
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        groups = json.loads(meta["param_groups"])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v.cpu() if name == "step" else v
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        c = self.carry
        for k in CARRY_FIELDS:
            setattr(c, k, tensors[f"carry.{k}"].clone())
        self.gen.set_state(tensors["rng.gen"].cpu())
        prog = json.loads(meta["progress"])
        self.step, self.train_time, self.examples = prog["step"], prog["train_time"], prog["examples"]
        self.stream.load_state(json.loads(meta["stream"]))


def bf16_pays(device: torch.device, size: int = 256) -> bool:
    """Whether a bf16 matmul beats fp32 on ``device`` (always on a GPU; measured on a CPU)."""
    if device.type != "cpu":
        return True

    def best(dtype: torch.dtype) -> float:
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return min(times)

    fp32, bf16 = best(torch.float32), best(torch.bfloat16)
    pays = bf16 < fp32
    print(f"bf16 autocast {'on' if pays else 'off'}: a {size}^3 matmul takes {bf16 * 1e3:.2f} ms in bf16, "
          f"{fp32 * 1e3:.2f} ms in fp32", flush=True)
    return pays


def _warm_start(model: GRAM, path: str) -> None:
    """Copy every tensor of checkpoint ``path`` whose name and shape match (the backbone); the rest (e.g.
    a new posterior head) keeps its fresh init."""
    tensors, _ = safetensors_io.load(path)
    own = model.state_dict()
    loaded = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("core.") for k in loaded):
        raise ValueError(f"{path}: no backbone tensor matches this model's config")
    model.load_state_dict(loaded, strict=False)


def _state_name(rank: int) -> str:
    return STATE_FILE if rank == 0 else f"state.rank{rank}.safetensors"


def _slowest_rank(seconds: float, device: torch.device | str) -> float:
    """The largest ``seconds`` over all ranks. Each rank's own clock would end a time budget (and set a
    time-based decay) at a different step, and a rank that stopped first would leave the others waiting
    in their next all-reduce."""
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def learning_rate(tc: TrainConfig, step: int, train_time_s: float) -> float:
    """Linear warmup over ``tc.warmup`` steps, then constant (TRM), then, with ``tc.decay_s``, a linear
    decay to 0 over the time budget's last ``decay_s`` seconds."""
    lr = tc.lr * min(1.0, (step + 1) / max(tc.warmup, 1))
    if tc.decay_s > 0 and tc.time_budget_s > 0:
        lr *= min(1.0, max(0.0, (tc.time_budget_s - train_time_s) / tc.decay_s))
    return lr


def saved_train_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run was started with (from its state file), for --resume."""
    meta = safetensors_io.read_metadata(Path(run_dir) / STATE_FILE)
    raw = json.loads(meta["train"])
    raw["model"] = GRAMConfig(**raw["model"])
    raw["betas"] = tuple(raw["betas"])
    return TrainConfig(**raw)


def make_config(
    name: str, which: str = "cpu", *, time_budget_s: float | None = None, max_steps: int | None = None,
    batch: int | None = None, threads: int | None = None, seed: int | None = None,
    ckpt_every_s: float | None = None, decay_s: float | None = None,
) -> TrainConfig:
    tc = preset(name, which)
    changes = {
        k: v for k, v in dict(
            time_budget_s=time_budget_s, max_steps=max_steps, batch=batch, threads=threads, seed=seed,
            ckpt_every_s=ckpt_every_s, decay_s=decay_s,
        ).items() if v is not None
    }
    return tc.with_(**changes)


def train(
    tc: TrainConfig | None, run_dir: str | Path, *, resume: bool = False, progress: Progress | None = None,
    device: str | None = None, overrides: dict[str, Any] | None = None,
) -> Trainer:
    """Train (or continue) a run in ``run_dir``; with ``resume`` the saved config wins, except for the
    budget/step limits in ``overrides``."""
    setup_distributed()
    if resume:
        tc = saved_train_config(run_dir).with_(**(overrides or {}))
    if tc is None:
        raise ValueError("a TrainConfig is needed unless resuming")
    trainer = Trainer(tc, run_dir, device)
    if resume:
        trainer.load()
    trainer.run(progress)
    return trainer


def _print_progress(report: dict[str, Any]) -> None:
    print(
        f"step {report['step']:>6} loss {report.get('loss', float('nan')):.4f} ce {report.get('ce', 0):.4f} "
        f"kl {report.get('kl', 0):.3f} acc {report['acc']:.3f} tok {report.get('token_acc', 0):.3f} "
        f"{report['samples_per_s']:.1f} samples/s t {report['train_time_s']:.0f}s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a GRAM run (torch-only entry point; see `gram train`).")
    p.add_argument("name", help="run: nqueens, nqueens_baseline, graph_coloring, sudoku, mnist")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--run-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--budget", type=float, default=None, help="training seconds (summed over resumes)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--decay-s", type=float, default=None,
                   help="anneal the learning rate linearly to 0 over the budget's last N seconds")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--init", default=None, help="start from this checkpoint's matching weights")
    args = p.parse_args(argv)
    run_dir = args.run_dir or f"runs/{args.name}"
    given = dict(time_budget_s=args.budget, max_steps=args.max_steps, decay_s=args.decay_s)
    limits = {k: v for k, v in given.items() if v is not None}
    tc = None if args.resume else make_config(
        args.name, args.preset, batch=args.batch, threads=args.threads, **limits
    )
    if tc is not None and args.init:
        tc = tc.with_(init_from=args.init)
    train(tc, run_dir, resume=args.resume, progress=_print_progress, overrides=limits)


if __name__ == "__main__":
    main()
