"""How the engine runs model.step on a CPU: eager fp32, eager bf16, or torch.compile — picked by
measurement, overridable with GRAM_CPU_PATH=auto|fp32|bf16|compile|bf16+compile.

    step_fn, path, figures = cpu_path.prepare(model, batch)   # what the engine uses
    path, figures = cpu_path.choose(model, batch)             # the decision alone

Every path takes and returns the engine's tensors unchanged in dtype (fp32 slot state): the bf16 path
casts h, l, e_x on the way in and the new h, l on the way out, so the engine never sees a mixed batch.
"compile" compiles the recursive core (the module run T*(K+1) times per step, where the FLOPs are), not
the whole unrolled step, which keeps compilation to seconds instead of minutes on 2 cores; the batch
dimension is dynamic, so one compilation serves every batch size. "bf16+compile" does both (the fastest
path measured for the N-Queens model, 1.23x bf16 eager at 256 slots, kernels/README.md); it is selectable
but not among auto's candidates, because compiling it at start-up costs ~11 s per model on this CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from kernels.flops import count_flops
from kernels.workload import step_inputs

ENV_VAR = "GRAM_CPU_PATH"
PATHS = ("fp32", "bf16", "compile")  # what "auto" measures
SELECTABLE = (*PATHS, "bf16+compile")

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], Any]


def setting() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in ("auto", *SELECTABLE):
        raise ValueError(f"{ENV_VAR}={value!r} is not one of auto, {', '.join(SELECTABLE)}")
    return value


def _cast_output(out: Any, dtype: torch.dtype) -> Any:
    return dataclasses.replace(out, h=out.h.to(dtype), l=out.l.to(dtype))


def raise_recompile_limit(limit: int = 64) -> None:
    """Let dynamo keep more than its default 8 compiled variants of one code object (the name of the
    setting changed across torch releases)."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
            return


def compile_core(net: Any) -> Any:
    """Compile ``net``'s recursive core in place (the module run T*(K+1) times per step) and return net.

    dynamic=True: the engine's active-slot count changes from step to step and must not recompile each
    time. Every model's core shares one forward code object (f_L with 3 inputs, f_H with 2, per model
    instance), so a process serving several families needs more than dynamo's default 8 variants."""
    raise_recompile_limit()
    net.core = torch.compile(net.core, dynamic=True)
    return net


def make_step(model: Any, path: str) -> StepFn:
    """A callable with model.step's signature running ``path``; the model itself is left untouched."""
    if path == "fp32":
        return model.step
    if path in ("bf16", "bf16+compile"):
        low = copy.deepcopy(model).to(torch.bfloat16)
        if path == "bf16+compile":
            compile_core(low)

        def step_bf16(h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: Any) -> Any:
            out = low.step(h.to(torch.bfloat16), l.to(torch.bfloat16), e_x.to(torch.bfloat16), noise)
            return _cast_output(out, h.dtype)

        return step_bf16
    if path == "compile":
        return compile_core(copy.deepcopy(model)).step
    raise ValueError(f"unknown CPU path {path!r}; known: {', '.join(SELECTABLE)}")


@dataclasses.dataclass
class PathFigures:
    path: str
    batch: int
    step_s: float  # best of the timed steps
    warmup_s: float  # first call (includes compilation for "compile")
    trajectories_per_s: float  # slots advanced by one supervision step per second
    model_gflops: float  # model GFLOP/s (matmul-class FLOPs of the step / step_s)

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure(model: Any, batch: int, paths: tuple[str, ...] = PATHS, repeats: int = 2,
            keep: dict[str, StepFn] | None = None) -> list[PathFigures]:
    """Time one supervision step at ``batch`` slots on each path (best of ``repeats`` after a warm-up);
    the step callables are stored in ``keep`` when given, so the winner need not be rebuilt."""
    h, l, e_x, noise = step_inputs(model, batch)
    flops = count_flops(lambda: model.step(h, l, e_x, noise))
    figures = []
    for path in paths:
        fn = make_step(model, path)
        if keep is not None:
            keep[path] = fn
        t0 = time.perf_counter()
        fn(h, l, e_x, noise)
        warm = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(h, l, e_x, noise)
            best = min(best, time.perf_counter() - t0)
        figures.append(PathFigures(path, batch, best, warm, batch / best, flops / best / 1e9))
    return figures


def choose(model: Any, batch: int, paths: tuple[str, ...] = PATHS, repeats: int = 2,
           keep: dict[str, StepFn] | None = None) -> tuple[str, list[PathFigures]]:
    """The path to run: GRAM_CPU_PATH when it names one (no measurement, empty figures), else the fastest
    by measurement at ``batch``."""
    chosen = setting()
    if chosen != "auto":
        return chosen, []
    figures = measure(model, batch, paths, repeats, keep)
    best = min(figures, key=lambda f: f.step_s)
    return best.path, figures


def prepare(model: Any, batch: int) -> tuple[StepFn, str, list[PathFigures]]:
    """choose() and the step callable of the chosen path."""
    built: dict[str, StepFn] = {}
    path, figures = choose(model, batch, keep=built)
    return built.get(path) or make_step(model, path), path, figures
