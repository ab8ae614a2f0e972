"""Triton: the whole prior guidance of one transition in one kernel (kernels.reference.prior_guidance):

    mu, raw = (u @ W^T + b).chunk(2);  sigma = sigma_min + softplus(raw);  h = u + mu + sigma * eps

The head's GEMM (tl.dot, both halves sharing the u tiles), the softplus, the in-kernel Philox noise and
the update run in one pass over u; mu and sigma never reach memory. In the model these are a linear, a
softplus, an add and the guidance kernel: five launches and two [B, L, 2D] round trips per transition.
Widths up to 256 (the shipped D is 64-128); wider heads take the composed path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.backend import PRIOR_MAX_WIDTH
from kernels.triton_guidance import _keys, _philox4x32, _unit
from kernels.triton_util import INTERPRET, dot_precision, next_pow2, tuned

MAX_WIDTH = PRIOR_MAX_WIDTH

_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_K": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 64}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 64}, num_warps=8, num_stages=2),
]


@triton.jit
def _normal_at(seed, traj, counter, elems):
    """Standard normal of element ``elems`` of each row's stream; seed/traj/counter are [BM, 1] uint64."""
    blocks = (elems // 4).to(tl.uint32)
    lane = elems % 4
    zero = blocks * 0
    r0, r1, r2, r3 = _philox4x32(
        blocks, zero + (counter & 0xFFFFFFFF).to(tl.uint32), zero + ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32),
        zero + ((traj >> 32) & 0xFFFFFFFF).to(tl.uint32), zero + (seed & 0xFFFFFFFF).to(tl.uint32),
        zero + (traj & 0xFFFFFFFF).to(tl.uint32),
        ROUNDS=10, M0=0xD2511F53, M1=0xCD9E8D57, W0=0x9E3779B9, W1=0xBB67AE85,
    )
    # Only the pair holding this lane matters; pick its radius and angle, then cos or sin.
    low = lane < 2
    rad = tl.sqrt(-2.0 * tl.log(_unit(tl.where(low, r0, r2))))
    theta = 6.283185307179586 * _unit(tl.where(low, r1, r3))
    return tl.where(lane % 2 == 0, rad * tl.cos(theta), rad * tl.sin(theta))


@tuned(_CONFIGS, key=["M_BUCKET", "D"])
@triton.jit
def _prior_guidance_kernel(
    u_ptr, w_ptr, b_ptr, out_ptr, seed_ptr, traj_ptr, counter_ptr, temp_ptr,
    M, M_BUCKET, L, D, sigma_min, s_w_n, s_w_k,
    UPCAST: tl.constexpr, HAS_TEMP: tl.constexpr, PRECISION: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    col_ok = cols < D
    ks = tl.arange(0, BLOCK_K)
    r64 = rows.to(tl.int64)
    acc_mu = tl.full((BLOCK_M, BLOCK_D), 0.0, dtype=tl.float32)
    acc_raw = tl.full((BLOCK_M, BLOCK_D), 0.0, dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        kk = k0 + ks
        a_mask = row_ok[:, None] & (kk[None, :] < D)
        a = tl.load(u_ptr + r64[:, None] * D + kk[None, :], mask=a_mask, other=0.0)
        w_mask = (kk[:, None] < D) & col_ok[None, :]
        w_mu = tl.load(w_ptr + cols[None, :] * s_w_n + kk[:, None] * s_w_k, mask=w_mask, other=0.0)
        w_raw = tl.load(w_ptr + (cols[None, :] + D) * s_w_n + kk[:, None] * s_w_k, mask=w_mask, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w_mu = w_mu.to(tl.float32)
            w_raw = w_raw.to(tl.float32)
        acc_mu = tl.dot(a, w_mu, acc_mu, input_precision=PRECISION)
        acc_raw = tl.dot(a, w_raw, acc_raw, input_precision=PRECISION)
    dtype = out_ptr.dtype.element_ty
    # Round where the composed model rounds: the head's output, softplus, sigma, eps (to u's dtype).
    mu = (acc_mu + tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]).to(dtype)
    raw = (acc_raw + tl.load(b_ptr + D + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]).to(dtype)
    raw = raw.to(tl.float32)
    # softplus with torch's threshold (x > 20 -> x); the clamp keeps exp() finite in unused lanes.
    soft = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0))))
    sigma = (soft.to(dtype).to(tl.float32) + sigma_min).to(dtype).to(tl.float32)
    slot = rows // L
    if HAS_TEMP:  # the model multiplies sigma by the slot's temperature, both in u's dtype
        temp = tl.load(temp_ptr + slot, mask=row_ok, other=1.0).to(dtype).to(tl.float32)[:, None]
        sigma = (sigma * temp).to(dtype).to(tl.float32)
    pos = rows % L
    seed = tl.load(seed_ptr + slot, mask=row_ok, other=0).to(tl.uint64)[:, None]
    traj = tl.load(traj_ptr + slot, mask=row_ok, other=0).to(tl.uint64)[:, None]
    counter = tl.load(counter_ptr + slot, mask=row_ok, other=0).to(tl.uint64)[:, None]
    elems = pos[:, None] * D + cols[None, :]
    eps = _normal_at(seed, traj, counter, elems).to(dtype).to(tl.float32)
    mask = row_ok[:, None] & col_ok[None, :]
    u = tl.load(u_ptr + r64[:, None] * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    h = u + mu.to(tl.float32) + sigma * eps
    tl.store(out_ptr + r64[:, None] * D + cols[None, :], h.to(dtype), mask=mask)


def fits(d: int) -> bool:
    return d <= MAX_WIDTH


def prior_guidance(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sigma_min: float,
                   seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor,
                   temperature: torch.Tensor | None = None) -> torch.Tensor:
    """u [B, L, D]; weight [2D, D] (mu rows, then sigma rows); bias [2D]."""
    if u.dim() != 3:
        raise ValueError(f"prior_guidance: u must be [B, L, D], got {list(u.shape)}")
    b, length, d = u.shape
    if weight.shape != (2 * d, d) or bias.shape != (2 * d,):
        raise ValueError(f"prior_guidance: head {tuple(weight.shape)} / {tuple(bias.shape)} "
                         f"does not fit D={d}")
    if not fits(d):
        raise ValueError(f"prior_guidance: D={d} exceeds the fused kernel's {MAX_WIDTH}")
    u_c = u.contiguous()
    out = torch.empty_like(u_c)
    m = b * length
    if m == 0:
        return out
    keys = _keys(seed, traj, counter, b, u.device)
    if temperature is not None and temperature.shape != (b,):
        raise ValueError(f"prior_guidance: temperature must be [{b}], got {list(temperature.shape)}")
    # float32 either way, so the kernel has one pointer signature (unread when HAS_TEMP is off)
    temp = (torch.ones(1, device=u.device) if temperature is None
            else temperature.to(u.device, torch.float32).contiguous())
    _prior_guidance_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),)](
        u_c, weight, bias.contiguous(), out, *keys, temp, m, next_pow2(m), length, d, float(sigma_min),
        *weight.stride(), UPCAST=INTERPRET, HAS_TEMP=temperature is not None,
        PRECISION=dot_precision(u.dtype), BLOCK_D=max(16, next_pow2(d)),
    )
    return out
