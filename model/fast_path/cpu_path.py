"""How the engine runs model.step on a CPU: eager fp32, eager bf16, or torch.compile — picked by
measurement, overridable with GRAM_CPU_PATH=auto|fp32|bf16|compile|bf16+compile.

    step_fn, path, figures = cpu_path.prepare(model, batch)   # what the engine uses
    path, figures = cpu_path.choose(model, batch)             # the decision alone

Every path takes and returns the engine's tensors unchanged in dtype (fp32 slot state): the bf16 path
casts h, l, e_x on the way in and the new h, l on the way out, so the engine never sees a mixed batch.
"bf16+compile" runs bf16 weights with torch.compile of the whole transition (K f_L updates, f_H, the
prior's guidance and its noise; short sequences take the fused short-form attention) and of the step's
decode: the fastest path measured for N-Queens, colouring and Sudoku (1.2-1.6x bf16 eager;
model/fast_path/README.md). "compile" compiles only the fp32 recursive core; it never won here, so auto
does not spend a compilation on it, but it stays selectable. The batch dimension is dynamic, so one graph
serves every batch size >= 2 (plus one for batch 1); both are built before make_step returns, so no
request pays for a compilation. Compiling costs 15-20 s per model on this CPU with a cold inductor
cache, 2-5 s with a warm one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kernels.flops import count_flops
from model.fast_path.workload import step_inputs, step_tokens
from model.step_impl import StepImpl

ENV_VAR = "GRAM_CPU_PATH"
# Where "auto" records its choice. The paths differ in rounding (bf16, fused kernels), so a seeded request
# answers the same on every start only if every start runs the same path: the first start on a machine
# measures and records, later starts of the same weights, torch and CPU reuse the record (and skip the
# measurement's compilations). Delete the file to measure again.
CACHE_ENV_VAR = "GRAM_CPU_PATH_CACHE"
DEFAULT_CACHE = Path.home() / ".cache" / "gram-serve" / "cpu_path.json"
# What "auto" measures. Not "compile" (fp32): it never beat bf16 eager here, and it costs a compilation.
PATHS = ("fp32", "bf16", "bf16+compile")
SELECTABLE = (*PATHS, "compile")

StepFn = Callable[..., Any]  # GRAM.step's signature: (h, l, e_x, noise, x=None) -> StepOutput


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


SHORT_SEQUENCE = 64  # longest P + L for which compile_transition uses reference.short_attention


def compile_transition(net: Any) -> Any:
    """Compile ``net``'s whole transition (K f_L updates, f_H and the prior's guidance with its
    counter-based noise) and its decode in place, and return net: the bf16+compile path.

    Against compile_core this also fuses the guidance (the Philox rounds and Box-Muller are dozens of
    eager integer ops per call) and, for sequences of at most SHORT_SEQUENCE positions, computes the
    attention in its short form, which the inductor fuses where the CPU's SDPA kernel pays a fixed cost
    per (batch, head) pair. N-Queens at 256 slots, bf16, 1 thread: 155 ms against 183-194 ms for
    compile_core (model/fast_path/README.md). It costs more compilation (~20 s per model here), one graph per
    transition index t."""
    raise_recompile_limit()
    if net.config.total_len <= SHORT_SEQUENCE:
        net.use_impl(StepImpl(short_attention=True))
    net.transition = torch.compile(net.transition, dynamic=True)
    # The step's end too (decoder, argmax and log-probability, PAD mask, heads): a dozen eager ops that
    # cost ~0.4 ms a step at any batch size (2.8 -> 2.4 ms at 1 slot, 21.7 -> 21.3 at 32), with the same
    # tokens and h bit for bit. Compiling the whole step as one graph saved more at 1 slot but took 60 s
    # to compile and changed h in bf16 rounding, so seeded answers would have changed.
    net.decode = torch.compile(net.decode, dynamic=True)
    return net


def _inference(fn: StepFn) -> StepFn:
    """Run ``fn`` under inference_mode on inference-tensor copies of its inputs, whoever calls it.

    Dynamo guards on the grad mode and on each input's dispatch keys, which differ between tensors made
    inside and outside inference_mode; the engine makes its tensors inside, a measurement outside. Either
    would compile the step again (17 s measured) on the other's first call. The copies cost microseconds.
    A missing temperature becomes 1 per slot (the same numbers: sigma * 1 is exact), so one graph serves
    steps with and without one."""

    def step(h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: Any, x: Any = None) -> Any:
        with torch.inference_mode():
            noise = noise.with_unit_temperature(h.shape[0], h.device)
            keys = dataclasses.replace(noise, **{f.name: getattr(noise, f.name).clone()
                                                 for f in dataclasses.fields(noise)})
            return fn(h.clone(), l.clone(), e_x.clone(), keys, None if x is None else x.clone())

    return step


def _warm(fn: StepFn, model: Any, tokens: bool) -> StepFn:
    """Compile now rather than on a request: dynamo gives batch 1 its own graph and batches >= 2 one
    dynamic graph, so both are built here (a lone width-1 request otherwise paid a 20 s compile). The
    decode's graph differs with and without the input tokens (PAD positions from x or from e_x): the one
    the caller will use is built."""
    for batch in (1, 2):
        fn(*step_inputs(model, batch), *_tokens(model, batch, tokens))
    return fn


def _tokens(model: Any, batch: int, tokens: bool) -> tuple[torch.Tensor, ...]:
    return (step_tokens(model, batch),) if tokens else ()


def make_step(model: Any, path: str, tokens: bool = False) -> StepFn:
    """A callable with model.step's signature running ``path``; the model itself is left untouched.
    Compiled paths are compiled before this returns (seconds; see compile_transition), for steps called
    with the input tokens (x) when ``tokens``, else without."""
    if path == "fp32":
        return model.step
    if path in ("bf16", "bf16+compile"):
        low = copy.deepcopy(model).to(torch.bfloat16)
        if path == "bf16+compile":
            compile_transition(low)

        def step_bf16(h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: Any, x: Any = None) -> Any:
            out = low.step(h.to(torch.bfloat16), l.to(torch.bfloat16), e_x.to(torch.bfloat16), noise, x)
            return _cast_output(out, h.dtype)

        return step_bf16 if path == "bf16" else _warm(_inference(step_bf16), model, tokens)
    if path == "compile":
        return _warm(_inference(compile_core(copy.deepcopy(model)).step), model, tokens)
    raise ValueError(f"unknown CPU path {path!r}; known: {', '.join(SELECTABLE)}")


@dataclasses.dataclass
class PathFigures:
    path: str
    batch: int
    step_s: float  # best of the timed steps
    warmup_s: float  # building the path and its first call (compilation, for the compiled paths)
    trajectories_per_s: float  # slots advanced by one supervision step per second
    model_gflops: float  # model GFLOP/s (matmul-class FLOPs of the step / step_s)

    def row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure(model: Any, batch: int, paths: tuple[str, ...] = PATHS, repeats: int = 2,
            keep: dict[str, StepFn] | None = None, tokens: bool = False) -> list[PathFigures]:
    """Time one supervision step at ``batch`` slots on each path (best of ``repeats`` after a warm-up),
    called as the caller will (with the input tokens when ``tokens``); the step callables are stored in
    ``keep`` when given, so the winner need not be rebuilt."""
    args = (*step_inputs(model, batch), *_tokens(model, batch, tokens))
    flops = count_flops(lambda: model.step(*args))
    figures = []
    for path in paths:
        t0 = time.perf_counter()
        fn = make_step(model, path, tokens)
        if keep is not None:
            keep[path] = fn
        fn(*args)
        warm = time.perf_counter() - t0  # building the path (compiling it) and its first step
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*args)
            best = min(best, time.perf_counter() - t0)
        figures.append(PathFigures(path, batch, best, warm, batch / best, flops / best / 1e9))
    return figures


def choose(model: Any, batch: int, paths: tuple[str, ...] = PATHS, repeats: int = 2,
           keep: dict[str, StepFn] | None = None, tokens: bool = False) -> tuple[str, list[PathFigures]]:
    """The path to run: GRAM_CPU_PATH when it names one (no measurement, empty figures), else the one
    recorded for this model, batch, torch and CPU (empty figures), else the fastest by measurement at
    ``batch``, which is then recorded."""
    chosen = setting()
    if chosen != "auto":
        return chosen, []
    key = choice_key(model, batch, paths, tokens)
    recorded = _read_cache().get(key)
    if recorded in paths:
        return recorded, []
    figures = measure(model, batch, paths, repeats, keep, tokens)
    best = min(figures, key=lambda f: f.step_s)
    _record(key, best.path)
    return best.path, figures


def cache_file() -> Path:
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE)


def choice_key(model: Any, batch: int, paths: tuple[str, ...], tokens: bool) -> str:
    """What the choice depends on: the weights and config, the batch, torch, the CPU and its threads."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(repr(getattr(model, "config", None)).encode())
    parts = [digest.hexdigest()[:16], str(batch), ",".join(paths), str(tokens), torch.__version__,
             _cpu_name(), str(torch.get_num_threads())]
    return "|".join(parts)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(key: str, path: str) -> None:
    """Best effort (a read-only home only costs the next start a measurement); written atomically."""
    file = cache_file()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data[key] = path
        tmp = file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, file)
    except OSError:
        pass


def prepare(model: Any, batch: int, tokens: bool = False) -> tuple[StepFn, str, list[PathFigures]]:
    """choose() and the step callable of the chosen path (built for calls with the tokens x when
    ``tokens``)."""
    built: dict[str, StepFn] = {}
    path, figures = choose(model, batch, keep=built, tokens=tokens)
    return built.get(path) or make_step(model, path, tokens), path, figures
