"""Small helpers shared by the Triton kernel modules (imports triton; load only through kernels.backend).

Autotuning runs only on a real GPU: under the interpreter triton.autotune cannot benchmark, so there the
first config of the list is used as a fixed launch configuration with the same call syntax.

Reductions use the tl.reduce builtin (row_sum/row_max/row_min below), never tl.sum/tl.max/tl.min/
tl.zeros: those are @triton.jit functions of triton.language, built for the compiler or the interpreter
once, when triton is first imported. torch._dynamo imports triton, so in a process that touched
torch.compile first they would be compiler-only and the interpreter (CPU tests) could not call them.
Builtins (tl.reduce, tl.full, tl.where, tl.exp, ...) work either way; tests/test_kernels_ops.py checks
both the rule and a fresh process that imported torch._dynamo first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from kernels.backend import interpreting

INTERPRET = interpreting()


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision that matches what torch does for the same matmul: fp32 GEMMs in torch use
    full precision unless TF32 is allowed, so the kernels do too (the oracle must be comparable)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def tl_dtype(dtype: torch.dtype) -> Any:
    return {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype]


class _FixedLaunch:
    """Stand-in for an autotuned kernel: same ``kernel[grid](...)`` syntax, one fixed config."""

    def __init__(self, fn: Any, config: triton.Config) -> None:
        self.fn = fn
        self.config = config

    def __getitem__(self, grid: Callable[[dict[str, Any]], tuple[int, ...]] | tuple[int, ...]):
        meta = dict(self.config.kwargs)
        launch_grid = grid(meta) if callable(grid) else grid

        def launch(*args: Any, **kwargs: Any) -> Any:
            return self.fn[launch_grid](*args, **kwargs, **meta, num_warps=self.config.num_warps,
                                        num_stages=self.config.num_stages)

        return launch


def tuned(configs: Sequence[triton.Config], key: list[str]) -> Callable[[Any], Any]:
    """triton.autotune on a GPU; the first config, fixed, under the interpreter."""

    def decorate(fn: Any) -> Any:
        if INTERPRET:
            return _FixedLaunch(fn, configs[0])
        return triton.autotune(configs=list(configs), key=key)(fn)

    return decorate


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def _minimum(a, b):
    return tl.minimum(a, b)


# triton.language's own combine functions compute the same thing, and the interpreter recognises them and
# reduces with numpy instead of calling the combine function element by element (minutes -> seconds on
# the CPU tests). The compiler simply inlines them. Private names, so fall back to ours if they move.
_SUM = getattr(tl.standard, "_sum_combine", _add)
_MAX = getattr(tl.standard, "_elementwise_max", _maximum)
_MIN = getattr(tl.standard, "_elementwise_min", _minimum)


@triton.jit
def row_sum(x):
    return tl.reduce(x, 1, _SUM)


@triton.jit
def row_max(x):
    return tl.reduce(x, 1, _MAX)


@triton.jit
def row_min(x):
    return tl.reduce(x, 1, _MIN)
