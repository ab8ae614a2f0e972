"""Triton: stochastic guidance h = u + mu + sigma * eps with eps drawn in the kernel, and the Gaussian KL.

eps is kernels.reference.counter_normal: Philox4x32-10 keyed by each slot's (seed, trajectory, counter),
bit-identical on the integers; Box-Muller runs in fp32 here (float64 in the reference), so the normals
agree to float tolerance. Element e of row b uses Philox block e // 4 and output lane e % 4, so a program
computes each block once and writes its four lanes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.reference import PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1


@triton.jit
def _philox4x32(c0, c1, c2, c3, k0, k1, ROUNDS: tl.constexpr,
                M0: tl.constexpr, M1: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr):
    for _ in tl.static_range(ROUNDS):
        hi0 = tl.umulhi(c0, M0)
        lo0 = c0 * M0
        hi1 = tl.umulhi(c2, M1)
        lo1 = c2 * M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + W0
        k1 = k1 + W1
    return c0, c1, c2, c3


@triton.jit
def _unit(x):
    # (x + 0.5) / 2**32, strictly inside (0, 1] in fp32 so log() is finite.
    return (x.to(tl.float32) + 0.5) * 2.3283064365386963e-10


@triton.jit
def _normals(seed_ptr, traj_ptr, counter_ptr, row, blocks):
    """Four fp32 normal blocks (one per lane) for the Philox blocks ``blocks`` of slot ``row``."""
    seed = tl.load(seed_ptr + row).to(tl.uint64)
    traj = tl.load(traj_ptr + row).to(tl.uint64)
    counter = tl.load(counter_ptr + row).to(tl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = (traj & 0xFFFFFFFF).to(tl.uint32)
    c1 = (counter & 0xFFFFFFFF).to(tl.uint32)
    c2 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c3 = ((traj >> 32) & 0xFFFFFFFF).to(tl.uint32)
    zero = (blocks * 0).to(tl.uint32)
    r0, r1, r2, r3 = _philox4x32(
        blocks.to(tl.uint32), zero + c1, zero + c2, zero + c3, zero + k0, zero + k1,
        ROUNDS=10, M0=0xD2511F53, M1=0xCD9E8D57, W0=0x9E3779B9, W1=0xBB67AE85,
    )
    rad01 = tl.sqrt(-2.0 * tl.log(_unit(r0)))
    rad23 = tl.sqrt(-2.0 * tl.log(_unit(r2)))
    th01 = 6.283185307179586 * _unit(r1)
    th23 = 6.283185307179586 * _unit(r3)
    return rad01 * tl.cos(th01), rad01 * tl.sin(th01), rad23 * tl.cos(th23), rad23 * tl.sin(th23)


@triton.jit
def _guidance_lane(u_ptr, mu_ptr, sigma_ptr, out_ptr, row, elems, numel, D, eps,
                   sub, sul, sud, smb, sml, smd, ssb, ssl, ssd, HAS_U: tl.constexpr):
    mask = elems < numel
    pos = (elems // D).to(tl.int64)
    col = (elems % D).to(tl.int64)
    mu = tl.load(mu_ptr + row * smb + pos * sml + col * smd, mask=mask, other=0.0)
    sigma = tl.load(sigma_ptr + row * ssb + pos * ssl + col * ssd, mask=mask, other=0.0)
    # Round eps to the state dtype first, as the reference does (eps.to(u.dtype)).
    eps_r = eps.to(mu.dtype).to(tl.float32)
    val = mu.to(tl.float32) + sigma.to(tl.float32) * eps_r
    if HAS_U:
        val += tl.load(u_ptr + row * sub + pos * sul + col * sud, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * numel + elems, val.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _guidance_kernel(
    u_ptr, mu_ptr, sigma_ptr, out_ptr, seed_ptr, traj_ptr, counter_ptr,
    numel, D, sub, sul, sud, smb, sml, smd, ssb, ssl, ssd,
    HAS_U: tl.constexpr, BLOCK: tl.constexpr,
):
    """Grid (row, chunk): BLOCK Philox blocks = 4 * BLOCK elements of one slot. Inputs are [B, L, D]
    through their strides (mu and sigma are usually column halves of one projection), out contiguous."""
    row = tl.program_id(0)
    blocks = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    z0, z1, z2, z3 = _normals(seed_ptr, traj_ptr, counter_ptr, row, blocks)
    r = row.to(tl.int64)
    e0 = blocks * 4
    _guidance_lane(u_ptr, mu_ptr, sigma_ptr, out_ptr, r, e0, numel, D, z0,
                   sub, sul, sud, smb, sml, smd, ssb, ssl, ssd, HAS_U)
    _guidance_lane(u_ptr, mu_ptr, sigma_ptr, out_ptr, r, e0 + 1, numel, D, z1,
                   sub, sul, sud, smb, sml, smd, ssb, ssl, ssd, HAS_U)
    _guidance_lane(u_ptr, mu_ptr, sigma_ptr, out_ptr, r, e0 + 2, numel, D, z2,
                   sub, sul, sud, smb, sml, smd, ssb, ssl, ssd, HAS_U)
    _guidance_lane(u_ptr, mu_ptr, sigma_ptr, out_ptr, r, e0 + 3, numel, D, z3,
                   sub, sul, sud, smb, sml, smd, ssb, ssl, ssd, HAS_U)


@triton.jit
def _normal_kernel(out_ptr, seed_ptr, traj_ptr, counter_ptr, numel, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    blocks = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    z0, z1, z2, z3 = _normals(seed_ptr, traj_ptr, counter_ptr, row, blocks)
    base = row.to(tl.int64) * numel
    e0 = blocks * 4
    tl.store(out_ptr + base + e0, z0, mask=e0 < numel)
    tl.store(out_ptr + base + e0 + 1, z1, mask=e0 + 1 < numel)
    tl.store(out_ptr + base + e0 + 2, z2, mask=e0 + 2 < numel)
    tl.store(out_ptr + base + e0 + 3, z3, mask=e0 + 3 < numel)


@triton.jit
def _philox_raw_kernel(out_ptr, seed_ptr, traj_ptr, counter_ptr, n_blocks, BLOCK: tl.constexpr):
    """The raw Philox words (the integers counter_normal is built from), for bit-exact tests."""
    row = tl.program_id(0)
    blocks = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    seed = tl.load(seed_ptr + row).to(tl.uint64)
    traj = tl.load(traj_ptr + row).to(tl.uint64)
    counter = tl.load(counter_ptr + row).to(tl.uint64)
    zero = (blocks * 0).to(tl.uint32)
    r0, r1, r2, r3 = _philox4x32(
        blocks.to(tl.uint32), zero + (counter & 0xFFFFFFFF).to(tl.uint32),
        zero + ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32), zero + ((traj >> 32) & 0xFFFFFFFF).to(tl.uint32),
        zero + (seed & 0xFFFFFFFF).to(tl.uint32), zero + (traj & 0xFFFFFFFF).to(tl.uint32),
        ROUNDS=10, M0=0xD2511F53, M1=0xCD9E8D57, W0=0x9E3779B9, W1=0xBB67AE85,
    )
    mask = blocks < n_blocks
    base = (row.to(tl.int64) * n_blocks + blocks) * 4
    # int64 holding the uint32 value, as the reference's tensors do.
    tl.store(out_ptr + base, r0.to(tl.int64), mask=mask)
    tl.store(out_ptr + base + 1, r1.to(tl.int64), mask=mask)
    tl.store(out_ptr + base + 2, r2.to(tl.int64), mask=mask)
    tl.store(out_ptr + base + 3, r3.to(tl.int64), mask=mask)


@triton.jit
def _gaussian_kl_kernel(mq_ptr, sq_ptr, mp_ptr, sp_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    mq = tl.load(mq_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sq = tl.load(sq_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    mp = tl.load(mp_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sp = tl.load(sp_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    diff = mq - mp
    kl = tl.log(sp / sq) + (sq * sq + diff * diff) / (2.0 * sp * sp) - 0.5
    tl.store(out_ptr + offs, kl.to(out_ptr.dtype.element_ty), mask=mask)


# The constants above are hard-wired in the kernel (constexpr literals); make a drift from the reference
# impossible to miss.
assert (PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, PHILOX_ROUNDS) == (
    0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 10)

_BLOCK = 256  # Philox blocks per program: 1024 elements


def _keys(seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, rows: int, device: torch.device):
    keys = []
    for name, t in (("seed", seed), ("traj", traj), ("counter", counter)):
        t = t.to(device=device, dtype=torch.int64).reshape(-1).contiguous()
        if t.numel() != rows:
            raise ValueError(f"guidance: {name} has {t.numel()} entries for {rows} slots")
        keys.append(t)
    return keys


def philox_words(
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, n_blocks: int
) -> torch.Tensor:
    """int64 [B, n_blocks, 4]: the Philox4x32-10 output words of blocks 0..n_blocks-1 of each slot."""
    rows = seed.numel()
    out = torch.empty(rows, n_blocks, 4, dtype=torch.int64, device=seed.device)
    if out.numel():
        keys = _keys(seed, traj, counter, rows, seed.device)
        _philox_raw_kernel[(rows, triton.cdiv(n_blocks, _BLOCK))](out, *keys, n_blocks, BLOCK=_BLOCK)
    return out


def counter_normal(seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, numel: int) -> torch.Tensor:
    rows = seed.numel()
    out = torch.empty(rows, numel, dtype=torch.float32, device=seed.device)
    if out.numel() == 0:
        return out
    keys = _keys(seed, traj, counter, rows, seed.device)
    grid = (rows, triton.cdiv(triton.cdiv(numel, 4), _BLOCK))
    _normal_kernel[grid](out, *keys, numel, BLOCK=_BLOCK)
    return out


def guidance(u: torch.Tensor | None, mu: torch.Tensor, sigma: torch.Tensor,
             seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """u + mu + sigma * eps (u may be None: mu + sigma * eps); all [B, ...] of one shape."""
    shape = mu.shape
    if sigma.shape != shape or (u is not None and u.shape != shape):
        raise ValueError(f"guidance: shapes differ (u {None if u is None else tuple(u.shape)}, "
                         f"mu {tuple(shape)}, sigma {tuple(sigma.shape)})")
    rows = shape[0]
    numel = mu[0].numel() if rows else 0
    dtype = mu.dtype if u is None else u.dtype
    out = torch.empty(shape, dtype=dtype, device=mu.device)
    if out.numel() == 0:
        return out
    keys = _keys(seed, traj, counter, rows, mu.device)
    mu3, sigma3 = _as_3d(mu), _as_3d(sigma)
    u3 = mu3 if u is None else _as_3d(u)
    grid = (rows, triton.cdiv(triton.cdiv(numel, 4), _BLOCK))
    _guidance_kernel[grid](u3, mu3, sigma3, out, *keys, numel, mu3.shape[-1],
                           *u3.stride(), *mu3.stride(), *sigma3.stride(), HAS_U=u is not None, BLOCK=_BLOCK)
    return out


def _as_3d(t: torch.Tensor) -> torch.Tensor:
    """A [B, L, D] strided view ([B, N] -> [B, 1, N]); other ranks are flattened contiguously."""
    if t.dim() == 3:
        return t
    if t.dim() == 2:
        return t.unsqueeze(1)
    return t.reshape(t.shape[0], 1, -1)


def gaussian_kl(mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor,
                sigma_p: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(mu_q.shape, sigma_q.shape, mu_p.shape, sigma_p.shape)
    dtype = mu_q.dtype
    for t in (sigma_q, mu_p, sigma_p):
        dtype = torch.promote_types(dtype, t.dtype)
    flat = [t.expand(shape).contiguous() for t in (mu_q, sigma_q, mu_p, sigma_p)]
    out = torch.empty(shape, dtype=dtype, device=mu_q.device)
    n = out.numel()
    if n:
        block = 1024
        _gaussian_kl_kernel[(triton.cdiv(n, block),)](*flat, out, n, BLOCK=block)
    return out
