"""The fused low-level update: one application of the recursive core (f_L or f_H) in as few kernels as
the shipped sizes allow, installed on a model with ``fuse(model)``.

The model's own forward (model/layers.py) composes the ops one by one:
    x = inject(l, h, e_x); per layer: x = add_rmsnorm(x, Mix(x)); x = add_rmsnorm(x, swiglu(x))
This path folds them:
- the MLP sub-layer rms_norm(x + swiglu(x)) is one kernel (kernels.triton_swiglu "fused": the hidden
  activation never leaves the chip);
- the sequence-axis mixer (mlp_t) of the first layer sums the injection l + h + e_x in its prologue and
  the residual norm takes it again as summands (rms_norm(l + h + e_x + Mix)), so x is never materialised;
- the attention mixer keeps torch's projections and scaled_dot_product_attention (cuBLAS/flash), with
  the injection and residual norms as Triton kernels;
- the prior guidance of each transition (head GEMM, softplus, noise, update) is one kernel
  (kernels.triton_prior), instead of a linear, a softplus, an add and the guidance kernel.
So one layer of f_L is 3 launches (mlp_t) instead of 5-7. Every op goes through kernels.ops, so on CPU
(GRAM_KERNELS=torch) the same code runs the references, which is how the check compares paths.

It reads the core's structure by duck typing (``layers`` of blocks with ``mixer`` and ``mlp``; an
attention mixer has ``w_qkv``/``w_out``/``n_heads``, a sequence mixer has ``mlp``) and refuses anything
else, so a renamed model fails loudly in ``python -m kernels.check`` instead of computing something else.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kernels import ops
from kernels.backend import load_kernels, use_triton

MAX_FOLDED_INJECTIONS = 2  # the mixer prologue and the norm kernel take the state plus two injections


def _is_core(module: nn.Module) -> bool:
    layers = getattr(module, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    return all(hasattr(b, "mixer") and hasattr(b, "mlp") for b in layers)


def _mixer_kind(mixer: nn.Module) -> str:
    if all(hasattr(mixer, a) for a in ("w_qkv", "w_out", "n_heads")):
        return "attn"
    inner = getattr(mixer, "mlp", None)
    if inner is not None and hasattr(inner, "w_gate_up") and hasattr(inner, "w_down"):
        return "mlp_t"
    raise TypeError(f"fused core: unknown mixer {type(mixer).__name__}")


def _attention(mixer: Any, x: torch.Tensor) -> torch.Tensor:
    b, s, d = x.shape
    heads = mixer.n_heads
    qkv = F.linear(x, mixer.w_qkv).view(b, s, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v)
    return F.linear(out.transpose(1, 2).reshape(b, s, d), mixer.w_out)


def _seq_mix(mixer: Any, x: torch.Tensor, extra: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """Mix over the sequence axis on transposed views (no copies); the result is laid out so that its
    transpose back to [B, L, D] is contiguous."""
    w = mixer.mlp
    xt = x.transpose(1, 2)
    if extra and use_triton(x):
        extra_t = tuple(t.transpose(1, 2) for t in extra)
        out = load_kernels("triton_swiglu").swiglu(xt, w.w_gate_up, w.w_down, extra_inputs=extra_t)
    else:
        if extra:
            xt = ops.inject(x, *extra).transpose(1, 2)
        out = ops.swiglu(xt, w.w_gate_up, w.w_down)
    return out.transpose(1, 2)


def fused_core_forward(core: nn.Module, state: torch.Tensor, *injections: torch.Tensor) -> torch.Tensor:
    """Same result as the core's forward(state, *injections) (TRM post-norm blocks), fewer launches."""
    if len(injections) > MAX_FOLDED_INJECTIONS or any(t.shape != state.shape for t in injections):
        x = ops.inject(state, *injections)
        injections = ()
    else:
        x = None
    for i, block in enumerate(core.layers):
        kind = _mixer_kind(block.mixer)
        if i == 0 and x is None:
            if kind == "mlp_t":
                mix = _seq_mix(block.mixer, state, injections)
                x = ops.sum_rmsnorm(state, *injections, mix)
            else:
                x = ops.inject(state, *injections) if injections else state
                x = ops.add_rmsnorm(x, _attention(block.mixer, x))
        else:
            mix = _seq_mix(block.mixer, x) if kind == "mlp_t" else _attention(block.mixer, x)
            x = ops.add_rmsnorm(x, mix)
        x = ops.swiglu_add_rmsnorm(x, block.mlp.w_gate_up, block.mlp.w_down)
    return x


def _fused_prior_guide(model: Any, noise: Any, t: int) -> Any:
    """The model's prior guide (README contract: transition t of supervision step n draws counter n*T + t)
    with head, softplus and guidance in one kernel (kernels.ops.prior_guidance)."""
    head, steps = model.prior, model.config.T

    def guide(u: torch.Tensor) -> torch.Tensor:
        counter = noise.step.to(u.device) * steps + t
        return ops.prior_guidance(u, head.proj.weight, head.proj.bias, head.sigma_min,
                                  noise.seed.to(u.device), noise.traj.to(u.device), counter,
                                  getattr(noise, "temperature", None))

    return guide


def _has_linear_prior(model: nn.Module) -> bool:
    head = getattr(model, "prior", None)
    proj = getattr(head, "proj", None)
    return (callable(getattr(model, "_prior_guide", None)) and isinstance(proj, nn.Linear)
            and proj.bias is not None and proj.out_features == 2 * proj.in_features
            and hasattr(head, "sigma_min") and hasattr(getattr(model, "config", None), "T"))


def fuse(model: nn.Module) -> int:
    """Route every recursive core inside ``model`` through fused_core_forward, and the model's prior guide
    (when it has the linear Gaussian head it is written for) through the one-kernel prior guidance;
    returns how many modules were rerouted."""
    count = 0
    for module in model.modules():
        if _is_core(module):
            for block in module.layers:
                _mixer_kind(block.mixer)  # fail now, not mid-step
            module.forward = functools.partial(fused_core_forward, module)
            count += 1
    if count == 0:
        raise TypeError("fuse: no recursive core (a module with .layers of [mixer + mlp] blocks) found")
    if _has_linear_prior(model):
        model._prior_guide = functools.partial(_fused_prior_guide, model)
        count += 1
    return count


_REROUTED = ("forward", "_prior_guide")


def unfuse(model: nn.Module) -> int:
    count = 0
    for module in model.modules():
        for name in _REROUTED:
            if isinstance(module.__dict__.get(name), functools.partial):
                delattr(module, name)
                count += 1
    return count


def is_fused(model: nn.Module) -> bool:
    return any(isinstance(m.__dict__.get(n), functools.partial) for m in model.modules() for n in _REROUTED)
