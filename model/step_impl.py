"""StepImpl: how a GRAM's modules compute a supervision step, chosen explicitly per model copy.

The fast-step paths (model/fast_path: the CUDA runner's fused low-level update, the compiled CPU path's
short-form attention) pick one with ``GRAM.use_impl``; the modules read it where the computation differs.
Nothing is monkeypatched and nothing is re-implemented outside the modules, so the default and the fast
paths are one code base (docs/ARCHITECTURE.md). Every op still goes through kernels.ops, which decides
Triton or torch per call.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepImpl:
    # The recursive core folds the input injection, the mixer and the residual norms into fewer ops
    # (ReasoningModule.forward: the MLP sub-layer is one ops.swiglu_add_rmsnorm, the sequence mixer sums
    # l + h + e_x in its kernel's prologue), and the prior guidance of each transition is one
    # ops.prior_guidance (head GEMM, softplus, noise and update). The CUDA path: fewer launches.
    fused: bool = False
    # Attention as reference.short_attention (broadcast products and sums the inductor fuses into one
    # loop) instead of SDPA, whose CPU kernel pays a fixed cost per (batch, head) pair. Only for the
    # compiled CPU path and short sequences (eager, it materialises [B, heads, S, S, d]).
    short_attention: bool = False


DEFAULT = StepImpl()
