"""The dispatch layer the model calls: one function per fused op.

Each op runs its Triton kernel when kernels.backend.use_triton() says so (CUDA tensors by default;
GRAM_KERNELS=auto|torch|triton, "triton" on CPU = the interpreter, for tests) and its torch reference
(kernels.reference) otherwise, including whenever autograd needs the result. Signatures here are the
contract; new arguments are keyword-only with defaults.
"""

from __future__ import annotations

import torch

from kernels import reference
from kernels.backend import PRIOR_MAX_WIDTH, load_kernels, use_triton
from kernels.reference import counter_normal as _counter_normal_ref

__all__ = [
    "add_rmsnorm", "counter_normal", "decode_epilogue", "gaussian_kl", "guidance", "inject", "prior_guidance",
    "rms_norm", "sum_rmsnorm", "swiglu", "swiglu_add_rmsnorm",
]


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    if use_triton(x):
        return load_kernels("triton_norm").sum_norm((x,), normalize=True, eps=eps)
    return reference.rms_norm(x, eps)


def add_rmsnorm(x: torch.Tensor, delta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    if use_triton(x, delta):
        return load_kernels("triton_norm").sum_norm((x, delta), normalize=True, eps=eps)
    return reference.add_rmsnorm(x, delta, eps)


def sum_rmsnorm(*tensors: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """rms_norm(sum(tensors)), up to four tensors: residual add + RMSNorm with the injection folded in."""
    if 1 <= len(tensors) <= 4 and use_triton(*tensors):
        return load_kernels("triton_norm").sum_norm(tensors, normalize=True, eps=eps)
    return reference.sum_rmsnorm(*tensors, eps=eps)


def inject(state: torch.Tensor, *injections: torch.Tensor) -> torch.Tensor:
    if injections and len(injections) < 4 and use_triton(state, *injections):
        return load_kernels("triton_norm").sum_norm((state, *injections), normalize=False)
    return reference.inject(state, *injections)


def swiglu(
    x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, *, impl: str = "auto",
    extra_inputs: tuple[torch.Tensor, ...] = (),
) -> torch.Tensor:
    """swiglu(x + sum(extra_inputs)); the Triton kernel sums at most two extra inputs of x's shape in its
    prologue, so x + sum is never materialised. impl (Triton only): "fused" one kernel (narrow widths),
    "composed" two GEMM kernels, "auto"."""
    if use_triton(x, w_gate_up, w_down):
        kernel = load_kernels("triton_swiglu").swiglu
        return kernel(x, w_gate_up, w_down, impl=impl, extra_inputs=extra_inputs)
    if extra_inputs:
        x = reference.inject(x, *extra_inputs)
    return reference.swiglu(x, w_gate_up, w_down)


def swiglu_add_rmsnorm(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, eps: float = 1e-5,
                       *, impl: str = "auto") -> torch.Tensor:
    """rms_norm(x + swiglu(x)): a whole MLP sub-layer in one kernel for the shipped widths."""
    if use_triton(x, w_gate_up, w_down):
        return load_kernels("triton_swiglu").swiglu(x, w_gate_up, w_down, residual_norm=True, eps=eps,
                                                    impl=impl)
    return reference.swiglu_add_rmsnorm(x, w_gate_up, w_down, eps)


def counter_normal(seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, numel: int) -> torch.Tensor:
    if use_triton(seed):
        return load_kernels("triton_guidance").counter_normal(seed, traj, counter, numel)
    return _counter_normal_ref(seed, traj, counter, numel)


def guidance(
    u: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor,
) -> torch.Tensor:
    if use_triton(u, mu, sigma):
        return load_kernels("triton_guidance").guidance(u, mu, sigma, seed, traj, counter)
    return reference.guidance(u, mu, sigma, seed, traj, counter)


def prior_guidance(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sigma_min: float,
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, temperature: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prior head + softplus + guidance in one kernel (u [B, L, D], D <= PRIOR_MAX_WIDTH); sigma is
    multiplied by each slot's ``temperature`` (float [B]) when given."""
    if u.dim() == 3 and u.shape[-1] <= PRIOR_MAX_WIDTH and use_triton(u, weight, bias):
        return load_kernels("triton_prior").prior_guidance(u, weight, bias, sigma_min, seed, traj, counter,
                                                           temperature)
    return reference.prior_guidance(u, weight, bias, sigma_min, seed, traj, counter, temperature)


def gaussian_kl(
    mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor
) -> torch.Tensor:
    if use_triton(mu_q, sigma_q, mu_p, sigma_p):
        return load_kernels("triton_guidance").gaussian_kl(mu_q, sigma_q, mu_p, sigma_p)
    return reference.gaussian_kl(mu_q, sigma_q, mu_p, sigma_p)


def decode_epilogue(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if use_triton(logits):
        return load_kernels("triton_decode").decode_epilogue(logits)
    return reference.decode_epilogue(logits)
