"""Triton: fused input injection + residual add + parameter-free RMSNorm.

One kernel covers ``inject`` (sum only), ``rms_norm`` (one input), ``add_rmsnorm`` (x + delta) and
``sum_rmsnorm`` (up to four summands, e.g. a residual plus the injection l + h + e_x): each row of D
features is loaded once per input, summed in fp32, optionally normalised, and written once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_util import next_pow2, row_sum

MAX_INPUTS = 4


@triton.jit
def _sum_norm_kernel(
    a_ptr, b_ptr, c_ptr, d_ptr, out_ptr,
    n_rows, n_cols, eps,
    N_INPUTS: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    offs = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    acc = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_INPUTS > 1:
        acc += tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_INPUTS > 2:
        acc += tl.load(c_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if N_INPUTS > 3:
        acc += tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NORMALIZE:
        mean_sq = row_sum(acc * acc) / n_cols
        acc = acc * tl.rsqrt(mean_sq + eps)[:, None]
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def sum_norm(tensors: tuple[torch.Tensor, ...], normalize: bool, eps: float = 1e-5) -> torch.Tensor:
    """sum(tensors), RMS-normalised over the last dim when ``normalize``; broadcasting like torch."""
    if not 1 <= len(tensors) <= MAX_INPUTS:
        raise ValueError(f"sum_norm takes 1..{MAX_INPUTS} tensors, got {len(tensors)}")
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    # expand() of a same-shaped contiguous tensor is a no-op view; only broadcast inputs get copied.
    flat = [t.expand(shape).contiguous() for t in tensors]
    n_cols = shape[-1] if len(shape) else 1
    n_rows = flat[0].numel() // max(n_cols, 1)
    out = torch.empty(shape, dtype=dtype, device=flat[0].device)
    if out.numel() == 0:
        return out
    padded = flat + [flat[0]] * (MAX_INPUTS - len(flat))
    block_d = next_pow2(n_cols)
    # Keep about 4K elements per program: enough rows to amortise the launch for small D.
    block_m = max(1, min(64, 4096 // block_d))
    grid = (triton.cdiv(n_rows, block_m),)
    _sum_norm_kernel[grid](
        *padded, out, n_rows, n_cols, eps,
        N_INPUTS=len(flat), NORMALIZE=normalize, BLOCK_M=block_m, BLOCK_D=block_d,
        num_warps=4 if block_d * block_m >= 2048 else 2,
    )
    return out
