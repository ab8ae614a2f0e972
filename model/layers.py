"""Building blocks of the recursive core (docs/GRAM.md): post-norm blocks of [token mixer + SwiGLU].

Every fused op goes through ``kernels.ops`` so the Triton kernels replace them without touching this file.
The modules that compute differently on a fast path (the fused low-level update, the short-form
attention) read the model's StepImpl (model/step_impl.py), set with GRAM.use_impl.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels import ops, reference
from model.config import GRAMConfig
from model.step_impl import DEFAULT, StepImpl

# The fused path's sequence mixer takes the state plus at most two injections in its kernel's prologue.
MAX_FOLDED_INJECTIONS = 2


def _trunc_normal(shape: tuple[int, ...], std: float) -> nn.Parameter:
    w = torch.empty(shape)
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
    return nn.Parameter(w)


class SwiGLU(nn.Module):
    """SwiGLU MLP without biases over the last axis: w_gate_up [2H, D] (gate then up), w_down [D, H]."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.w_gate_up = _trunc_normal((2 * hidden, dim), 1.0 / math.sqrt(dim))
        self.w_down = _trunc_normal((out_dim or dim, hidden), 1.0 / math.sqrt(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.swiglu(x, self.w_gate_up, self.w_down)


class SelfAttention(nn.Module):
    """Bidirectional multi-head self-attention without biases.

    Positions enter once, additively, in the encoder (e_x is re-injected into every f_L call, so the
    states always carry them). RoPE would rotate q and k in every one of the T*(K+1)*layers attention
    calls per supervision step; on a 2-core CPU that is a measurable cost for no accuracy we could show in
    the training budget, so the shipped models use learned absolute positions.

    ``impl.short_attention``: compute the attention as ``reference.short_attention`` instead of SDPA.
    Only the compiled CPU path asks for it (model/fast_path/cpu_path.py), where the inductor fuses it and
    it is the faster form for the shipped models' short sequences.
    """

    impl: StepImpl = DEFAULT

    def __init__(self, cfg: GRAMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.w_qkv = _trunc_normal((3 * d, d), 1.0 / math.sqrt(d))
        self.w_out = _trunc_normal((d, d), 1.0 / math.sqrt(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        qkv = F.linear(x, self.w_qkv).view(b, s, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, S, d_head]
        if self.impl.short_attention:
            out = reference.short_attention(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return F.linear(out.transpose(1, 2).reshape(b, s, d), self.w_out)


class SequenceMLP(nn.Module):
    """TRM's ``mlp_t`` mixer: a SwiGLU applied across the sequence axis (fixed length P + L)."""

    def __init__(self, cfg: GRAMConfig) -> None:
        super().__init__()
        self.mlp = SwiGLU(cfg.total_len, cfg.seq_hidden)

    def forward(self, x: torch.Tensor, *injections: torch.Tensor) -> torch.Tensor:
        """Mix x + sum(injections) across the sequence axis. The injections (the fused path's) are
        summed in the SwiGLU kernel's prologue, so that sum is never materialised. Transposed views, no
        copies: the result's transpose back to [B, S, D] is contiguous."""
        xt = x.transpose(1, 2)
        if not injections:
            return self.mlp(xt).transpose(1, 2)
        extra = tuple(t.transpose(1, 2) for t in injections)
        return ops.swiglu(xt, self.mlp.w_gate_up, self.mlp.w_down, extra_inputs=extra).transpose(1, 2)


class Block(nn.Module):
    """Post-norm block (TRM): x = rms_norm(x + Mix(x)); x = rms_norm(x + SwiGLU(x))."""

    def __init__(self, cfg: GRAMConfig) -> None:
        super().__init__()
        self.mixer: nn.Module = SelfAttention(cfg) if cfg.mixer == "attn" else SequenceMLP(cfg)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ops.add_rmsnorm(x, self.mixer(x))
        return ops.add_rmsnorm(x, self.mlp(x))

    def forward_fused(self, x: torch.Tensor, injections: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        """forward(x + sum(injections)) in fewer ops (StepImpl.fused): the MLP sub-layer
        rms_norm(x + swiglu(x)) is one op, and a sequence mixer takes the injections in its kernel's
        prologue while the norm takes them again as summands (rms_norm(l + h + e_x + Mix)), so their sum
        is never materialised. Attention keeps its projections and SDPA, with the injection and norms as
        ops."""
        foldable = len(injections) <= MAX_FOLDED_INJECTIONS and all(t.shape == x.shape for t in injections)
        if injections and foldable and isinstance(self.mixer, SequenceMLP):
            x = ops.sum_rmsnorm(x, *injections, self.mixer(x, *injections))
        else:
            if injections:
                x = ops.inject(x, *injections)
            x = ops.add_rmsnorm(x, self.mixer(x))
        return ops.swiglu_add_rmsnorm(x, self.mlp.w_gate_up, self.mlp.w_down)


class ReasoningModule(nn.Module):
    """One network used for both updates (TRM): f_L(l, h + e_x) = Layers(l + h + e_x) (eq. 7) and
    f_H(h, l) = Layers(h + l) (eq. 8). Sharing halves the parameters at equal compute."""

    def __init__(self, cfg: GRAMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))

    impl: StepImpl = DEFAULT

    def forward(self, state: torch.Tensor, *injections: torch.Tensor) -> torch.Tensor:
        if self.impl.fused:  # same result, fewer kernel launches (Block.forward_fused)
            first, *rest = self.layers
            x = first.forward_fused(state, injections)
            for layer in rest:
                x = layer.forward_fused(x)
            return x
        x = ops.inject(state, *injections)
        for layer in self.layers:
            x = layer(x)
        return x


class GaussianHead(nn.Module):
    """Per-position (mu, sigma) of the guidance noise eps, from features [..., in_dim] (GRAM eq. 9).

    mu is zero-initialised and sigma starts at ``sigma_init`` so a fresh model is almost deterministic
    (TRM-like) and learns how much to explore; sigma = sigma_min + softplus(.) keeps it strictly positive.
    """

    def __init__(self, in_dim: int, d_model: int, sigma_min: float, sigma_init: float) -> None:
        super().__init__()
        self.sigma_min = sigma_min
        self.proj = nn.Linear(in_dim, 2 * d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        # softplus(b) = sigma_init - sigma_min  <=>  b = log(expm1(sigma_init - sigma_min))
        with torch.no_grad():
            self.proj.bias[d_model:] = math.log(math.expm1(max(sigma_init - sigma_min, 1e-4)))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.proj(feats).chunk(2, dim=-1)
        return mu, self.sigma_min + F.softplus(raw.float()).to(mu.dtype)

    def sample(
        self, u: torch.Tensor, seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor,
        temperature: torch.Tensor | None = None, fused: bool = False,
    ) -> torch.Tensor:
        """h = u + mu + sigma * eps with eps from each slot's counter stream (eq. 9 with this head as the
        prior), sigma scaled by each slot's ``temperature`` (float [B]) when given. ``fused``: the head
        GEMM, softplus, noise and update as one op (ops.prior_guidance), the same function."""
        if fused:
            w, b = self.proj.weight, self.proj.bias
            return ops.prior_guidance(u, w, b, self.sigma_min, seed, traj, counter, temperature)
        mu, sigma = self(u)
        if temperature is not None:
            sigma = sigma * reference.per_row(temperature, sigma)
        return ops.guidance(u, mu, sigma, seed, traj, counter)


class GridPositions(nn.Module):
    """Positions of a side x side board as a sum of learned row, column, diagonal, anti-diagonal (and, when
    side is a perfect square > 1 as in Sudoku, box) embeddings -> [side * side, D].

    Attention has to discover which cells constrain each other; with one free vector per cell it must
    learn that from data, with the factors "same row / column / diagonal / box" is a shared embedding,
    which a short CPU budget cannot afford to learn. Computed once per request (in encode), so it costs
    nothing per step, unlike RoPE.
    """

    def __init__(self, seq_len: int, d_model: int) -> None:
        super().__init__()
        side = math.isqrt(seq_len)
        r = torch.arange(seq_len) // side
        c = torch.arange(seq_len) % side
        box_side = math.isqrt(side)
        index = {"row": r, "col": c, "diag": r - c + side - 1, "anti": r + c}
        if box_side > 1 and box_side * box_side == side:
            index["box"] = (r // box_side) * box_side + c // box_side
        self.names = tuple(index)
        std = 1.0 / math.sqrt(d_model * len(index))  # the sum has the scale of one learned position
        for name, idx in index.items():
            self.register_buffer(f"{name}_idx", idx, persistent=False)
            table = nn.Parameter(torch.randn(int(idx.max()) + 1, d_model) * std)
            self.register_parameter(f"{name}_emb", table)

    def forward(self) -> torch.Tensor:
        out = 0
        for name in self.names:
            out = out + getattr(self, f"{name}_emb")[getattr(self, f"{name}_idx")]
        return out  # type: ignore[return-value]


class PosteriorHead(nn.Module):
    """q(eps | u, y) as a correction of the prior (GRAM eq. 9, training only):
    mu_q = mu_p + delta(u, y), sigma_q = sigma_min + sigma_p * exp(s(u, y)), delta and s linear in
    [u, emb(y)] and zero-initialised, so q = p at the start (KL = 0) and the KL measures only what the
    target adds, not how far prior and posterior heads happen to drift apart under Adam's first steps."""

    def __init__(self, d_model: int, sigma_min: float) -> None:
        super().__init__()
        self.sigma_min = sigma_min
        self.proj = nn.Linear(2 * d_model, 2 * d_model)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(
        self, u: torch.Tensor, y_feat: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        delta, s = self.proj(torch.cat((u, y_feat), dim=-1)).chunk(2, dim=-1)
        return mu_p + delta, self.sigma_min + sigma_p * torch.exp(s.clamp(-6.0, 3.0))


class AttentionPosteriorHead(nn.Module):
    """q(eps | u, y) like PosteriorHead, but [u, emb(y)] first goes through one attention block, so the
    noise at each position can depend on the whole target (which solution), not just its own token.
    The output projection is zero-initialised: q = p at the start."""

    def __init__(self, cfg: GRAMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.sigma_min = cfg.sigma_min
        self.inp = nn.Linear(2 * d, d)
        self.block = Block(cfg.with_(mixer="attn"))
        # Registered only when asked for, so checkpoints of the one-block head load unchanged.
        self.extra = (nn.ModuleList(Block(cfg.with_(mixer="attn")) for _ in range(cfg.posterior_layers - 1))
                      if cfg.posterior_layers > 1 else None)
        self.out = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, u: torch.Tensor, y_feat: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.block(self.inp(torch.cat((u, y_feat), dim=-1)))
        for block in self.extra or ():
            z = block(z)
        delta, s = self.out(z).chunk(2, dim=-1)
        return mu_p + delta, self.sigma_min + sigma_p * torch.exp(s.clamp(-6.0, 3.0))
