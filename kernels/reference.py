"""Torch reference implementations of the fused ops: the test oracle for the Triton kernels and the
CPU path. Imports torch only.

Counter-based noise: every Gaussian the model draws at inference is a pure function of
(seed, trajectory index, counter, element index), so a seeded trajectory gets the same noise whatever
else shares its batch. The generator is Philox4x32-10 (Salmon et al., 2011) with
key = (seed_lo, traj_lo), counter = (element // 4, counter, seed_hi, traj_hi), followed by Box-Muller;
the Triton kernels implement the same function bit for bit on the integers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # a, b < 2**32, so a * b < 2**64: int64 multiplication wraps modulo 2**64 and the masks recover the
    # unsigned high and low words exactly.
    prod = b * a
    return (prod >> 32) & _MASK32, prod & _MASK32


def philox4x32(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
    k0: torch.Tensor, k1: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding uint32 values (broadcastable)."""
    for _ in range(PHILOX_ROUNDS):
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & _MASK32
        k1 = (k1 + PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


def _uint32_to_unit(x: torch.Tensor) -> torch.Tensor:
    # (x + 0.5) / 2**32 lies strictly inside (0, 1), so log() below is finite.
    return (x.to(torch.float64) + 0.5) * (1.0 / 4294967296.0)


def counter_normal(
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, numel: int
) -> torch.Tensor:
    """Standard normals [B, numel] (float32); row b is a function of (seed[b], traj[b], counter[b]) only.

    seed, traj: int64 [B] (any non-negative 64-bit value); counter: int64 [B] in [0, 2**32).
    """
    seed = seed.to(torch.int64).view(-1, 1)
    traj = traj.to(torch.int64).view(-1, 1)
    counter = counter.to(torch.int64).view(-1, 1)
    device = seed.device
    blocks = (numel + 3) // 4
    c0 = torch.arange(blocks, device=device, dtype=torch.int64).view(1, -1)
    k0, k1 = seed & _MASK32, traj & _MASK32
    c2, c3 = (seed >> 32) & _MASK32, (traj >> 32) & _MASK32
    r0, r1, r2, r3 = philox4x32(c0, counter & _MASK32, c2, c3, k0, k1)
    # Box-Muller on the pairs (r0, r1) and (r2, r3): 4 normals per Philox block.
    u0, u1, u2, u3 = (_uint32_to_unit(r) for r in (r0, r1, r2, r3))
    rad01 = torch.sqrt(-2.0 * torch.log(u0))
    rad23 = torch.sqrt(-2.0 * torch.log(u2))
    th01, th23 = 2.0 * math.pi * u1, 2.0 * math.pi * u3
    z = torch.stack(
        (rad01 * torch.cos(th01), rad01 * torch.sin(th01), rad23 * torch.cos(th23), rad23 * torch.sin(th23)),
        dim=-1,
    )  # [B, blocks, 4]
    return z.reshape(z.shape[0], blocks * 4)[:, :numel].to(torch.float32)


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free RMSNorm (TRM), computed in fp32 and cast back."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def add_rmsnorm(x: torch.Tensor, delta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Post-norm residual: rms_norm(x + delta)."""
    return rms_norm(x + delta, eps)


def inject(state: torch.Tensor, *injections: torch.Tensor) -> torch.Tensor:
    """Input injection before a reasoning module: l + h + e_x (f_L) or h + l (f_H)."""
    out = state
    for inj in injections:
        out = out + inj
    return out


def swiglu(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """SwiGLU MLP without biases: w_gate_up [2H, D] stacks gate then up; w_down [D, H]."""
    gate, up = F.linear(x, w_gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w_down)


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention without masks, [..., S, d] each, written as broadcast products and sums in fp32.

    Mathematically scaled_dot_product_attention(q, k, v), for short sequences under torch.compile: the
    inductor fuses the whole of it into one loop, where the CPU's SDPA kernel pays a fixed cost per
    (batch, head) pair that dominates at S ~ 14 (20 % of a bf16 N-Queens step at 256 slots, measured).
    Eager, it materialises [..., S, S, d]: use it compiled and for short S only."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q.unsqueeze(-2).float() * k.unsqueeze(-3).float()).sum(-1) * scale  # [..., S, S]
    weights = scores.softmax(-1)
    return (weights.unsqueeze(-1) * v.unsqueeze(-3).float()).sum(-2).to(v.dtype)


def guidance(
    u: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor,
) -> torch.Tensor:
    """Stochastic guidance (GRAM eq. 8-9 with the prior): h = u + mu + sigma * eps, eps ~ N(0, I) from the
    per-slot counter stream. u, mu, sigma: [B, L, D]."""
    eps = counter_normal(seed, traj, counter, u[0].numel()).view_as(u).to(u.dtype)
    return u + mu + sigma * eps


def gaussian_kl(
    mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)); the caller reduces."""
    var_q, var_p = sigma_q.pow(2), sigma_p.pow(2)
    return torch.log(sigma_p / sigma_q) + (var_q + (mu_q - mu_p).pow(2)) / (2.0 * var_p) - 0.5


def decode_epilogue(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position argmax and the log-probability of the chosen token: logits [..., V] ->
    (tokens int64 [...], logprob float32 [...]). The engine reads these, never the logits."""
    lf = logits.float()
    tokens = lf.argmax(-1)
    logprob = lf.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lf, dim=-1)
    return tokens, logprob


# --- references for the fused ops added with the Triton kernels (same semantics, composed) ---


def sum_rmsnorm(*tensors: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """rms_norm of a sum: the post-norm residual with the input injection folded in, e.g.
    rms_norm(l + h + e_x + mix) for the first sub-layer of f_L."""
    return rms_norm(inject(*tensors), eps)


def swiglu_add_rmsnorm(
    x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """The MLP sub-layer of a post-norm block: rms_norm(x + swiglu(x))."""
    return add_rmsnorm(x, swiglu(x, w_gate_up, w_down), eps)


def per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values [B] as a [B, 1, ...] factor broadcasting over ``like`` [B, ...], in like's dtype and device."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def prior_guidance(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sigma_min: float,
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, temperature: torch.Tensor | None = None,
) -> torch.Tensor:
    """The prior's whole guidance step (GRAM eq. 9 at inference): a linear head u -> (mu, raw) with
    weight [2D, D] (mu rows first) and bias [2D], sigma = sigma_min + softplus(raw) (in fp32, cast
    back), times each slot's ``temperature`` when given (float [B]; NoiseKeys.temperature), then
    h = u + mu + sigma * eps from the per-slot counter stream."""
    mu, raw = F.linear(u, weight, bias).chunk(2, dim=-1)
    sigma = sigma_min + F.softplus(raw.float()).to(mu.dtype)
    if temperature is not None:
        sigma = sigma * per_row(temperature, sigma)
    return guidance(u, mu, sigma, seed, traj, counter)
