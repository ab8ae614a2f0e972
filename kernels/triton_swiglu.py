"""Triton: SwiGLU MLP, w_down @ (silu(x @ Wg^T) * (x @ Wu^T)), optionally followed by the post-norm
residual rms_norm(x + .) of a TRM block.

Two implementations, same contract (kernels.reference.swiglu):
- ``fused`` (one kernel, for the shipped widths: D_in, D_out <= 256 in bf16, <= 128 in fp32): a program
  owns BLOCK_M rows, keeps its x tile on chip, walks the hidden width in chunks (gate/up tl.dot, SiLU,
  product, down tl.dot into an fp32 accumulator) and finishes with the residual + RMSNorm epilogue, so the
  hidden activation never reaches memory.
- ``composed`` (any width): a gate/up GEMM with the activation fused into its epilogue writes the hidden
  activation once, then a down-projection GEMM.

x is any [..., D_in] tensor addressed through its strides as [B, R, D_in], so the sequence-axis mixer
(TRM's mlp_t, ``swiglu(x.transpose(1, 2))``) reads the [B, L, D] state in place, with no transpose copy,
and its output is laid out so that the caller's transpose back is contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.triton_util import INTERPRET, dot_precision, next_pow2, row_sum, tuned

# Widest D_in/D_out the one-kernel SwiGLU keeps on chip. Compiled for sm_90 (python -m kernels.aot_check)
# its smallest config needs 65 KB of shared memory at 256 in bf16 but 233 KB at 256 in fp32, over the
# 227 KB an H100/H200 block may use; fp32 fits up to 128.
FUSED_MAX_WIDTH = {torch.bfloat16: 256, torch.float16: 256, torch.float32: 128}

_FUSED_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_H": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_H": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_H": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_H": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 16, "BLOCK_H": 64}, num_warps=4, num_stages=2),
]

# Autotuning is keyed on the row count rounded up to a power of two (M_BUCKET, unused by the kernels),
# not on M itself: the engine's active-slot count changes every step and must not re-tune every time.
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4, num_stages=3),
]


@tuned(_FUSED_CONFIGS, key=["M_BUCKET", "D_IN", "H", "D_OUT"])
@triton.jit
def _swiglu_fused_kernel(
    x_ptr, x2_ptr, x3_ptr, wgu_ptr, wd_ptr, out_ptr,
    M, M_BUCKET, R, D_IN, H, D_OUT, eps,
    sxb, sxr, sxk, sob, sor, son,
    s_gu_n, s_gu_k, s_d_n, s_d_h,
    N_X: tl.constexpr, RESIDUAL_NORM: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    rb = (rows // R).to(tl.int64)
    rr = (rows % R).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    ns = tl.arange(0, BLOCK_N)
    hs = tl.arange(0, BLOCK_H)
    x_mask = row_ok[:, None] & (ks[None, :] < D_IN)
    x_offs = rb[:, None] * sxb + rr[:, None] * sxr + ks[None, :] * sxk
    x = tl.load(x_ptr + x_offs, mask=x_mask, other=0.0)
    if N_X > 1:
        # Input injection folded into the prologue (x = l + h + e_x), rounded once like the reference's sum.
        xs = x.to(tl.float32) + tl.load(x2_ptr + x_offs, mask=x_mask, other=0.0).to(tl.float32)
        if N_X > 2:
            xs += tl.load(x3_ptr + x_offs, mask=x_mask, other=0.0).to(tl.float32)
        x = xs.to(x_ptr.dtype.element_ty)
    xd = x
    if UPCAST:
        xd = x.to(tl.float32)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        hh = h0 + hs
        w_mask = (ks[:, None] < D_IN) & (hh[None, :] < H)
        # Wg^T and Wu^T tiles [BLOCK_K, BLOCK_H]: rows hh (gate) and H + hh (up) of w_gate_up.
        wg = tl.load(wgu_ptr + hh[None, :] * s_gu_n + ks[:, None] * s_gu_k, mask=w_mask, other=0.0)
        wu = tl.load(wgu_ptr + (hh[None, :] + H) * s_gu_n + ks[:, None] * s_gu_k, mask=w_mask, other=0.0)
        wd = tl.load(wd_ptr + ns[None, :] * s_d_n + hh[:, None] * s_d_h,
                     mask=(hh[:, None] < H) & (ns[None, :] < D_OUT), other=0.0)
        if UPCAST:
            wg = wg.to(tl.float32)
            wu = wu.to(tl.float32)
            wd = wd.to(tl.float32)
        gate = tl.dot(xd, wg, input_precision=PRECISION)
        up = tl.dot(xd, wu, input_precision=PRECISION)
        # The activation is rounded to the input dtype, as the torch reference materialises it.
        act = (gate / (1.0 + tl.exp(-gate)) * up).to(x.dtype)
        if UPCAST:
            act = act.to(tl.float32)
        acc = tl.dot(act, wd, acc, input_precision=PRECISION)
    if RESIDUAL_NORM:
        # D_IN == D_OUT here, so the x tile is the residual and BLOCK_K == BLOCK_N.
        acc += x.to(tl.float32)
        mean_sq = row_sum(acc * acc) / D_OUT
        acc = acc * tl.rsqrt(mean_sq + eps)[:, None]
    o_mask = row_ok[:, None] & (ns[None, :] < D_OUT)
    tl.store(out_ptr + rb[:, None] * sob + rr[:, None] * sor + ns[None, :] * son,
             acc.to(out_ptr.dtype.element_ty), mask=o_mask)


@tuned(_GEMM_CONFIGS, key=["M_BUCKET", "N", "K"])
@triton.jit
def _gate_up_act_kernel(
    x_ptr, wgu_ptr, act_ptr,
    M, M_BUCKET, R, K, N,
    sxb, sxr, sxk, s_gu_n, s_gu_k,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """act[M, N=H] = silu(x @ Wg^T) * (x @ Wu^T), both GEMMs sharing the x tiles."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = (rows // R).to(tl.int64)
    rr = (rows % R).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    gate = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    up = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        x = tl.load(x_ptr + rb[:, None] * sxb + rr[:, None] * sxr + kk[None, :] * sxk,
                    mask=(rows[:, None] < M) & (kk[None, :] < K), other=0.0)
        w_mask = (kk[:, None] < K) & (cols[None, :] < N)
        wg = tl.load(wgu_ptr + cols[None, :] * s_gu_n + kk[:, None] * s_gu_k, mask=w_mask, other=0.0)
        wu = tl.load(wgu_ptr + (cols[None, :] + N) * s_gu_n + kk[:, None] * s_gu_k, mask=w_mask, other=0.0)
        if UPCAST:
            x = x.to(tl.float32)
            wg = wg.to(tl.float32)
            wu = wu.to(tl.float32)
        gate = tl.dot(x, wg, gate, input_precision=PRECISION)
        up = tl.dot(x, wu, up, input_precision=PRECISION)
    act = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(act_ptr + rows[:, None].to(tl.int64) * N + cols[None, :], act.to(act_ptr.dtype.element_ty),
             mask=(rows[:, None] < M) & (cols[None, :] < N))


@tuned(_GEMM_CONFIGS, key=["M_BUCKET", "N", "K"])
@triton.jit
def _linear_kernel(
    a_ptr, w_ptr, out_ptr,
    M, M_BUCKET, R, K, N,
    s_w_n, s_w_k, sob, sor, son,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[M, N] = a[M, K] @ w[N, K]^T, a contiguous, out addressed as [B, R, N] through strides."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + ks
        a = tl.load(a_ptr + rows[:, None].to(tl.int64) * K + kk[None, :],
                    mask=(rows[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(w_ptr + cols[None, :] * s_w_n + kk[:, None] * s_w_k,
                    mask=(kk[:, None] < K) & (cols[None, :] < N), other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    rb = (rows // R).to(tl.int64)
    rr = (rows % R).to(tl.int64)
    tl.store(out_ptr + rb[:, None] * sob + rr[:, None] * sor + cols[None, :] * son,
             acc.to(out_ptr.dtype.element_ty), mask=(rows[:, None] < M) & (cols[None, :] < N))


def _as_3d(x: torch.Tensor) -> torch.Tensor:
    """A strided [B, R, D] view of x when its leading dims allow one, else a contiguous copy."""
    if x.dim() == 3:
        return x
    if x.dim() == 2:
        return x.unsqueeze(0)
    try:
        return x.view(-1, x.shape[-2], x.shape[-1])
    except RuntimeError:
        return x.reshape(-1, x.shape[-2], x.shape[-1])


def _out_like(x3: torch.Tensor, d_out: int) -> torch.Tensor:
    """Output [B, R, d_out] whose memory order follows x3's: if x3 is a transposed view (R the fastest
    axis, as in the sequence mixer), the output is too, so transposing it back gives a contiguous tensor."""
    b, r, _ = x3.shape
    if x3.stride(1) == 1 and x3.stride(2) != 1 and r > 1:
        return torch.empty(b, d_out, r, dtype=x3.dtype, device=x3.device).transpose(1, 2)
    return torch.empty(b, r, d_out, dtype=x3.dtype, device=x3.device)


def _check(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> tuple[int, int, int]:
    d_in = x.shape[-1]
    two_h, wd_in = w_gate_up.shape
    d_out, h = w_down.shape
    if wd_in != d_in or two_h != 2 * h:
        raise ValueError(f"swiglu: x [..., {d_in}] does not fit w_gate_up {tuple(w_gate_up.shape)} "
                         f"and w_down {tuple(w_down.shape)}")
    if w_gate_up.dtype != x.dtype or w_down.dtype != x.dtype:
        raise ValueError(f"swiglu: dtypes differ (x {x.dtype}, weights {w_gate_up.dtype}, {w_down.dtype})")
    return d_in, h, d_out


def fits_fused(d_in: int, d_out: int, dtype: torch.dtype) -> bool:
    return max(d_in, d_out) <= FUSED_MAX_WIDTH.get(dtype, 0)


def swiglu(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, *,
           residual_norm: bool = False, eps: float = 1e-5, impl: str = "auto",
           extra_inputs: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """swiglu(x) (reference contract), or rms_norm(x + swiglu(x)) with ``residual_norm``; with
    ``extra_inputs`` (at most two, same shape as x) the input is x + sum(extra_inputs).

    impl: "fused" (one kernel), "composed" (two GEMM kernels, + the norm kernel), "auto" (fused when the
    widths fit on chip)."""
    d_in, h, d_out = _check(x, w_gate_up, w_down)
    if len(extra_inputs) > 2 or any(t.shape != x.shape or t.dtype != x.dtype for t in extra_inputs):
        raise ValueError("swiglu extra_inputs: at most two tensors of x's shape and dtype")
    if residual_norm and d_out != d_in:
        raise ValueError("swiglu residual_norm needs D_out == D_in")
    if impl == "auto":
        impl = "fused" if fits_fused(d_in, d_out, x.dtype) else "composed"
    if extra_inputs and impl != "fused":
        x = x + sum(extra_inputs)
        extra_inputs = ()
    lead = x.shape[:-1]
    x3 = _as_3d(x)
    b, r, _ = x3.shape
    m = b * r
    out3 = _out_like(x3, d_out)
    if m == 0:
        return out3.reshape(*lead, d_out)
    precision = dot_precision(x.dtype)
    upcast = INTERPRET  # the interpreter's tl.dot is wrong on bf16; fp32 there is exact enough
    if impl == "fused":
        if not fits_fused(d_in, d_out, x.dtype):
            widest = FUSED_MAX_WIDTH.get(x.dtype, 0)
            raise ValueError(f"fused swiglu supports widths <= {widest} in {x.dtype}, got {d_in}->{d_out}")
        block_k = max(16, next_pow2(d_in))
        block_n = max(16, next_pow2(d_out))
        extras = [_as_3d(t) for t in extra_inputs]
        extras = [t if t.stride() == x3.stride() else t.contiguous() for t in extras]
        if any(t.stride() != x3.stride() for t in extras):
            x3 = x3.contiguous()
            extras = [t.contiguous() for t in extras]
        x_ptrs = [x3, *extras] + [x3] * (2 - len(extras))
        _swiglu_fused_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),)](
            *x_ptrs, w_gate_up, w_down, out3,
            m, next_pow2(m), r, d_in, h, d_out, eps,
            *x3.stride(), *out3.stride(), *w_gate_up.stride(), *w_down.stride(),
            N_X=1 + len(extras), RESIDUAL_NORM=residual_norm, UPCAST=upcast, PRECISION=precision,
            BLOCK_K=block_k, BLOCK_N=block_n,
        )
        return out3.reshape(*lead, d_out)
    if impl != "composed":
        raise ValueError(f"swiglu impl must be auto|fused|composed, got {impl!r}")
    act = torch.empty(m, h, dtype=x.dtype, device=x.device)
    _gate_up_act_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(h, meta["BLOCK_N"]))](
        x3, w_gate_up, act, m, next_pow2(m), r, d_in, h, *x3.stride(), *w_gate_up.stride(),
        UPCAST=upcast, PRECISION=precision,
    )
    _linear_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(d_out, meta["BLOCK_N"]))](
        act, w_down, out3, m, next_pow2(m), r, h, d_out, *w_down.stride(), *out3.stride(),
        UPCAST=upcast, PRECISION=precision,
    )
    out = out3.reshape(*lead, d_out)
    if residual_norm:
        from kernels.triton_norm import sum_norm

        out = sum_norm((x, out), normalize=True, eps=eps)
    return out
