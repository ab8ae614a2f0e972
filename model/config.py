"""GRAMConfig: every size and switch of one GRAM network, serialisable to JSON (safetensors metadata).

Imports the stdlib only, so the service can read a checkpoint's config without building the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

# The token layout of each family (README "Tokens"): (seq_len, in_group, in_vocab, out_group, out_vocab).
# The task modules are the source; they import pydantic (their /solve request models), which a torch-only
# machine (a GPU box running model/fast_path's scripts) may not have, so model/ keeps this copy to build a
# network there. tests/test_model_gram.py keeps it equal to the task modules' specs.
KNOWN_SPECS: dict[str, tuple[int, int, int, int, int]] = {
    "sudoku": (81, 1, 11, 1, 11),
    "nqueens": (12, 1, 14, 1, 14),
    "graph_coloring": (16, 18, 6, 1, 5),
    "mnist": (49, 1, 2, 16, 3),
}

# Per-task KL weight beta (docs/GRAM.md, paper B.2). Our KL is summed over D and averaged over positions,
# the CE is averaged over answer sub-tokens, so beta keeps the paper's meaning "nats of KL per nat of CE".
PAPER_BETA: dict[str, float] = {
    "sudoku": 0.1,
    "nqueens": 0.07,
    "graph_coloring": 0.5,
    "mnist": 0.07,
}


@dataclass(frozen=True)
class GRAMConfig:
    task: str
    seq_len: int
    in_group: int
    in_vocab: int
    out_group: int
    out_vocab: int
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    expansion: float = 4.0  # SwiGLU inner width = round_up(expansion * D * 2/3, 32), TRM's rule
    mixer: str = "attn"  # "attn" (self-attention) or "mlp_t" (SwiGLU across the sequence axis)
    n_puzzle: int = 16  # P puzzle tokens prepended to the content (16 in the paper)
    # Positions of content tokens: "learned" (one vector per position) or "grid" (square boards: sums of
    # learned row, column, diagonal, anti-diagonal and, for 9x9, box embeddings; see layers.GridPositions).
    positions: str = "learned"
    T: int = 3  # transitions per supervision step
    K: int = 4  # low-level updates per transition
    n_sup: int = 16  # supervision steps (training depth; default max steps at inference)
    stochastic: bool = True  # False = TRM-style deterministic baseline (same backbone, no guidance)
    sigma_min: float = 1e-3  # floor on sigma: a zero-variance guide overfits (paper 4.4, "guide only")
    sigma_init: float = 0.1  # initial prior/posterior sigma, so training starts near-deterministic
    beta: float = 0.1  # KL weight (per task)
    kl_balance: float = 0.8  # DreamerV2 KL balancing: weight of the prior-side term
    # Which rollout the training carry follows between supervision steps: "posterior" (the paper: the
    # whole chain samples q) or "prior" (q only at the last transition of each step; the carried state is
    # what inference would have, so the posterior cannot park the answer in h for later steps).
    carry: str = "posterior"
    # Weight of an auxiliary reconstruction loss on the PRIOR sample of the last transition (0 = the
    # paper). See objective.py: on a CPU budget the posterior otherwise keeps a shortcut the prior
    # never catches up with.
    prior_ce: float = 0.0
    # How the KL is normalised before beta prices it: "position" (mean over all P + L positions, the
    # first shipped checkpoints) or "answer" (the board's total KL divided by its answer positions, so a
    # nat of KL costs the same against a nat of CE per answer token whatever the board size or padding).
    kl_norm: str = "position"
    # The posterior q(eps | u, y): "linear" (per position, from [u, emb(y)]) or "attn" (one attention
    # block over [u, emb(y)] first, so each position's noise can depend on the whole target: which of
    # several solutions the core should complete).
    posterior: str = "linear"
    # Extra attention blocks of the "attn" posterior after its first (1 = the single block it always had).
    # A posterior that must summarise the whole target into a few positions (noise_at="puzzle") needs a
    # per-position MLP before it pools: one block pools a linear function of each position's content.
    posterior_layers: int = 1
    # Blocks (self-attention + SwiGLU, weights of their own) the decoder runs over h before its
    # per-position linear head: 0 = the linear head on h alone (the first checkpoints). With blocks the
    # decoder mixes space: a content position's tokens can depend on its neighbours and the puzzle tokens.
    decoder_layers: int = 0
    # The decoder first adds a linear map of the P puzzle tokens (all P x D numbers) to every content
    # position: a VAE decoder's "latent -> feature map" layer, the direct path from a global latent
    # (noise_at="puzzle") to every patch. Without it the code reaches the patches only through attention,
    # and the posterior collapsed (KL 0 after 100 steps, measured).
    decoder_from_puzzle: bool = False
    # Where the guidance noise enters h (eq. 9): "all" positions (the paper) or only the P "puzzle"
    # tokens. With "puzzle" the noise is one global latent of P x D numbers (a VAE's code) that the core
    # and the decoder spread over the content; per-position noise is a grid of independent codes, and
    # independent prior draws per patch give incoherent images (unconditional MNIST, docs/GRAM.md 7.3).
    # Needs the "attn" posterior (the puzzle tokens must see the whole target).
    noise_at: str = "all"
    halt_weight: float = 0.5
    value_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.positions not in ("learned", "grid"):
            raise ValueError(f"positions must be 'learned' or 'grid', got {self.positions!r}")
        if self.positions == "grid" and math.isqrt(self.seq_len) ** 2 != self.seq_len:
            raise ValueError(f"grid positions need a square seq_len, got {self.seq_len}")
        if self.carry not in ("posterior", "prior"):
            raise ValueError(f"carry must be 'posterior' or 'prior', got {self.carry!r}")
        if self.kl_norm not in ("position", "answer"):
            raise ValueError(f"kl_norm must be 'position' or 'answer', got {self.kl_norm!r}")
        if self.posterior not in ("linear", "attn"):
            raise ValueError(f"posterior must be 'linear' or 'attn', got {self.posterior!r}")
        if self.noise_at not in ("all", "puzzle"):
            raise ValueError(f"noise_at must be 'all' or 'puzzle', got {self.noise_at!r}")
        if self.noise_at == "puzzle" and self.posterior != "attn":
            raise ValueError("noise_at='puzzle' needs posterior='attn': a linear one sees no target there")
        if self.posterior_layers < 1 or self.decoder_layers < 0:
            raise ValueError("posterior_layers must be >= 1 and decoder_layers >= 0")
        if self.mixer not in ("attn", "mlp_t"):
            raise ValueError(f"mixer must be 'attn' or 'mlp_t', got {self.mixer!r}")
        if self.mixer == "attn" and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        for name in ("T", "K", "n_sup", "n_layers", "d_model"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.n_puzzle < 1:
            raise ValueError("n_puzzle must be >= 1: the halting and value heads read the first puzzle token")

    @property
    def total_len(self) -> int:
        """Positions of every latent: P puzzle tokens + the content."""
        return self.n_puzzle + self.seq_len

    @property
    def ffn_hidden(self) -> int:
        return _round_up(int(self.expansion * self.d_model * 2 / 3), 32)

    @property
    def seq_hidden(self) -> int:
        """Inner width of the sequence-axis SwiGLU of the mlp_t mixer."""
        return _round_up(int(self.expansion * self.total_len * 2 / 3), 32)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GRAMConfig:
        raw: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def with_(self, **changes: Any) -> GRAMConfig:
        return replace(self, **changes)


def _round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def spec_for(task: str) -> tuple[int, int, int, int, int]:
    """The family's token layout (seq_len, in_group, in_vocab, out_group, out_vocab; README "Tokens"),
    from its task module, or from KNOWN_SPECS where the task modules do not import (no pydantic); a
    KeyError naming the known families otherwise. Imported here rather than at the top so that reading
    a checkpoint's config stays stdlib-only."""
    try:
        from model.tasks.registry import TASKS
    except ImportError:
        specs = KNOWN_SPECS
    else:
        specs = {name: (t.spec.seq_len, t.spec.in_group, t.spec.in_vocab, t.spec.out_group, t.spec.out_vocab)
                 for name, t in TASKS.items()}
    if task not in specs:
        raise KeyError(f"unknown task {task!r}; known: {sorted(specs)}")
    return specs[task]


def config_for(task: str, **overrides: Any) -> GRAMConfig:
    seq_len, in_group, in_vocab, out_group, out_vocab = spec_for(task)
    base: dict[str, Any] = dict(
        task=task, seq_len=seq_len, in_group=in_group, in_vocab=in_vocab,
        out_group=out_group, out_vocab=out_vocab, beta=PAPER_BETA.get(task, 0.1),
    )
    base.update(overrides)
    return GRAMConfig(**base)
