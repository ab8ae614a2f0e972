"""Training presets: ``cpu`` (what the shipped checkpoints were trained with on a 2-core machine) and
``paper`` (the paper's sizes and schedule, for GPUs; docs/GRAM.md section 7.6).

A run is named by what it ships: ``nqueens``, ``nqueens_baseline`` (same backbone, stochastic=False, same
budget), ``graph_coloring``, ``sudoku``, ``mnist``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from model.config import GRAMConfig, config_for

RUNS = ("nqueens", "nqueens_baseline", "graph_coloring", "graph_coloring_baseline", "sudoku", "mnist")


@dataclass(frozen=True)
class TrainConfig:
    name: str
    model: GRAMConfig
    preset: str = "cpu"
    batch: int = 64  # per process
    lr: float = 1e-3
    warmup: int = 100  # optimizer steps of linear warmup, constant after (TRM)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    ema_decay: float = 0.999
    halt_explore: float = 0.1  # TRM: with this probability a slot gets a random minimum of 2..n_sup steps
    max_steps: int = 1_000_000  # optimizer steps
    time_budget_s: float = 0.0  # stop after this much training time (summed over resumes); 0 = no limit
    # Warmup-stable-decay: the learning rate falls linearly to 0 over the last decay_s seconds of
    # time_budget_s (0: constant to the end). A constant-LR run resumed with a larger budget and decay_s
    # ends annealed, which a constant-LR snapshot (even with EMA weights) is not.
    decay_s: float = 0.0
    seed: int = 0
    threads: int = 0  # torch.set_num_threads; 0 = leave torch's default
    ckpt_every_s: float = 120.0
    log_every: int = 10
    # Hindsight target (model.hindsight): score the CE against the nearest of up to this many valid
    # solutions of each input; 0 or 1 = the generator's one target (the paper).
    hindsight: int = 0
    # "bf16": run the training step under CPU/GPU autocast to bfloat16 (1.9x on Sudoku's 81-token
    # model on a CPU with native bf16; nothing on the small-token ones), used only where the trainer
    # measures that a bf16 matmul beats fp32 (an AVX2-only CPU emulates bf16); "" = fp32.
    autocast: str = ""
    # Start from these weights (a checkpoint with the same backbone; new heads keep their init).
    init_from: str = ""
    heldout_per_setting: int = 100  # size of the held-out set excluded from training (per eval setting)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = asdict(self.model)
        return d

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def task_of(name: str) -> str:
    return name.removesuffix("_baseline")


def _cpu(name: str) -> TrainConfig:
    task = task_of(name)
    stochastic = not name.endswith("_baseline")
    small = dict(
        d_model=64, n_heads=4, n_layers=2, n_puzzle=2, T=2, K=2, n_sup=8, stochastic=stochastic,
        carry="prior", prior_ce=1.0,
    )
    # beta: our loss is CE per answer token + beta * KL per position (summed over D), so the true ELBO
    # (beta = 1 per board) is beta = positions / answer tokens: N-Queens 8x8 14/8 = 1.75, colouring 8
    # nodes 18/8 = 2.3, Sudoku 83/81 = 1.0, MNIST 51/784 = 0.065 (the paper's 0.07). The paper's 0.07 for
    # N-Queens is 30x below that here and let the posterior pass whole answers (measured: KL 3-5 nats
    # per position, CE ~ 0, the prior learning nothing a 35-minute budget could use); at beta = 1 it
    # still did (KL 0.3 nats per position, CE 0.02, prior token accuracy below the baseline's after 35
    # minutes). So the CPU preset prices information at the ELBO's own rate.
    if task == "nqueens":
        # 12 row tokens (model/tasks/nqueens.py): a wider core costs what the 144-cell layout's D = 64 did.
        # Multi-solution recipe (docs/TRAINING.md): hindsight targets over up to 32 completions, the KL
        # priced per answer row (0.6 per row ~ 1.0 per position of the 14-position 8x8 layout, the rate
        # that measured best with hindsight) at balance 0.5, and an attention posterior that can name a
        # whole board. The deterministic baseline keeps the single target, as TRM trains.
        gram = dict(beta=0.6, kl_balance=0.5, kl_norm="answer", posterior="attn")
        model = config_for(task, **{**small, "d_model": 128, **(gram if stochastic else {})})
        return TrainConfig(name, model, batch=128, lr=1e-3, hindsight=32 if stochastic else 0)
    if task == "graph_coloring":
        # 18 positions only: a wider core costs little here. Same multi-solution recipe as N-Queens; the
        # KL at 2.5 per answer node (the colouring's noise must pick one of a few colourings, and a
        # cheaper KL let the posterior spell out every node's colour: 0.78 nats per position at beta 1).
        gram = dict(beta=2.5, kl_balance=0.5, kl_norm="answer", posterior="attn")
        plain = {"beta": 1.0}
        model = config_for(task, **{**small, "d_model": 128, "K": 3, **(gram if stochastic else plain)})
        return TrainConfig(name, model, batch=128, lr=1e-3, hindsight=32 if stochastic else 0)
    if task == "sudoku":
        # The paper's Sudoku core is the sequence-MLP mixer (no attention). Beta 3 and KL balance 0.5, as
        # for N-Queens: a Sudoku has one solution, so the noise has nothing to name and every nat the
        # posterior passes is a shortcut. At beta 0.3 / balance 0.8 (0.06 per nat to the posterior) the
        # first checkpoint filled 16 % of an easy puzzle's blanks after 900 s (265 steps, shared CPU);
        # at 3 / 0.5, with the curriculum moved to easy puzzles (model/data.py), 96 % after 845 s (772
        # steps), 67 % of its trajectories solving the whole grid. Which change did how much is not
        # separated.
        model = config_for(task, **{**small, "d_model": 96, "mixer": "mlp_t", "K": 3, "positions": "grid",
                                    "beta": 3.0, "kl_balance": 0.5})
        return TrainConfig(name, model, batch=64, lr=1e-3, autocast="bf16")
    if task == "mnist":
        # No prior CE: MNIST is unconditional, so the prior's best guess of the target without the noise
        # is the mean image, whose argmax is nearly blank (measured: ink 2.4 % at 1425 steps, 0.4 % at
        # 3500, against the data's 13 %). The image must come through the noise: the ELBO alone.
        # A global-latent recipe (noise at the puzzle tokens, a decoder that mixes positions; docs/GRAM.md
        # 7.3) drew cleaner digits but did not beat this one on every figure; its resumable state is in
        # training/state/mnist.
        model = config_for(task, **{**small, "positions": "grid", "beta": 0.07, "prior_ce": 0.0})
        return TrainConfig(name, model, batch=64, lr=1e-3, heldout_per_setting=0)
    raise KeyError(f"unknown run {name!r}; known: {', '.join(RUNS)}")


def _paper(name: str) -> TrainConfig:
    task = task_of(name)
    stochastic = not name.endswith("_baseline")
    model = config_for(
        task, d_model=512, n_heads=8, n_layers=2, n_puzzle=16, T=3, K=6 if task == "sudoku" else 4,
        n_sup=16, mixer="mlp_t" if task == "sudoku" else "attn", expansion=4.0, stochastic=stochastic,
    )
    return TrainConfig(
        name, model, preset="paper", batch=768, lr=1e-4, warmup=2000, weight_decay=1.0,
        ema_decay=0.9999, ckpt_every_s=600.0, log_every=50, heldout_per_setting=200,
    )


def preset(name: str, which: str = "cpu") -> TrainConfig:
    """The TrainConfig of run ``name`` under preset ``which`` ("cpu" or "paper")."""
    if name not in RUNS:
        raise KeyError(f"unknown run {name!r}; known: {', '.join(RUNS)}")
    if which == "cpu":
        return _cpu(name)
    if which == "paper":
        return _paper(name)
    raise KeyError(f"unknown preset {which!r}; known: cpu, paper")
