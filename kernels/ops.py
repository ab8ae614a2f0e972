"""The dispatch layer the model calls: one function per fused op.

Today every op resolves to its torch reference (kernels.reference). The Triton kernels plug in here,
chosen on CUDA tensors and selectable by the GRAM_KERNELS environment variable for tests
("torch" | "triton" | "auto"). Signatures here are the contract; keep them stable.
"""

from __future__ import annotations

from kernels.reference import (  # noqa: F401  (re-exported as the op set)
    add_rmsnorm,
    counter_normal,
    decode_epilogue,
    gaussian_kl,
    guidance,
    inject,
    rms_norm,
    swiglu,
)
