"""The one call an engine makes to get its step function: the fastest measured way to run model.step on
the model's device, same signature and StepOutput.

    step, how = make_runner(model, batch_hint=max_slots)
    out = step(h, l, e_x, noise)

- CUDA: the Triton kernels (GRAM_KERNELS=auto picks them for CUDA tensors), the fused low-level update
  (StepImpl(fused=True)) and one CUDA graph per batch bucket (cuda_graphs.py), each switchable.
- CPU: cpu_path.py — eager fp32, eager bf16 or torch.compile, by measurement at ``batch_hint`` unless
  GRAM_CPU_PATH names one.
The caller's model is not modified (both paths work on copies).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from model.fast_path import cpu_path
from model.fast_path.cuda_graphs import GraphedStep, default_buckets
from model.step_impl import StepImpl


def make_runner(model: Any, batch_hint: int = 256, *, fused: bool = True, graphs: bool = True,
                buckets: Sequence[int] | None = None, tokens: bool = False) -> tuple[cpu_path.StepFn, str]:
    """(step function, a one-line description of the path for logs and metrics labels). ``tokens``: the
    caller passes the slots' input tokens as x (PAD positions from them, exactly), so a compiled CPU
    path builds that graph ahead; either way the step accepts both."""
    if model.device.type == "cuda":
        net = copy.deepcopy(model)
        parts = ["cuda", "triton"]
        if fused:
            net.use_impl(StepImpl(fused=True))
            parts.append("fused")
        if graphs:
            parts.append("graphs")
            return GraphedStep(net, buckets or default_buckets(max(batch_hint, 8))), "+".join(parts)
        return net.step, "+".join(parts)
    step, path, _ = cpu_path.prepare(model, batch_hint, tokens)
    return step, f"cpu+{path}"
