"""Model FLOPs of one supervision step (counted, not estimated) and the device's measured GEMM peak.

FLOPs come from torch.utils.flop_counter on the torch reference path, which counts every matmul the
step executes; CPU attention (which the counter misses) is added with torch's own SDPA formula. Only
matmul-class work counts, as is usual for "model FLOP/s" (norms, noise and activations are free).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter

from kernels.backend import kernels_mode

aten = torch.ops.aten


def _sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_mapping() -> dict[Any, Any]:
    """The CPU attention kernels the counter has no formula for (it knows the CUDA ones)."""
    mapping: dict[Any, Any] = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math"):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matmul-class ops fn() runs (on the torch reference path)."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_sdpa_mapping())
    with kernels_mode("torch"), counter:
        fn()
    return int(counter.get_total_flops())


def gemm_peak(dtype: torch.dtype, device: torch.device | str = "cpu", n: int | None = None,
              min_seconds: float = 0.5) -> float:
    """Best observed FLOP/s of an n x n x n matmul (the roofline the model is measured against)."""
    device = torch.device(device)
    if n is None:
        n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    flops = 2.0 * n**3
    torch.matmul(a, b)  # warm-up: lazy init, thread pools, cuBLAS heuristics
    best = float("inf")
    reps = 0
    start = time.perf_counter()
    while reps < 3 or time.perf_counter() - start < min_seconds:
        t = timed(lambda: torch.matmul(a, b), device)
        best = min(best, t)
        reps += 1
        if reps >= 50:
            break
    return flops / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call, with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0
