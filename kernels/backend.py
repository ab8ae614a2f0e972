"""Which implementation an op runs: the Triton kernels or the torch references.

GRAM_KERNELS, read once when this module is imported (``set_mode`` / ``kernels_mode`` switch it later:
the tools and tests that compare implementations):
- "auto" (default): Triton for CUDA tensors when triton imports, torch references otherwise.
- "torch": always the references.
- "triton": always Triton; CPU tensors run under the Triton interpreter (TRITON_INTERPRET=1), which is how
  the kernels are tested on machines without a GPU.

Ops that must be differentiated (grad enabled and an input requires grad) always take the reference: the
kernels are inference-only and define no backward.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch

ENV_VAR = "GRAM_KERNELS"
# Widest model the one-kernel prior (triton_prior) takes; here, torch-only, so ops can route on it on
# machines without Triton.
PRIOR_MAX_WIDTH = 256
MODES = ("auto", "torch", "triton")


def _parse(value: str | None) -> str:
    value = (value or "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {', '.join(MODES)}")
    return value


# Every op asks which implementation to run; an environment lookup per op (~100 per step) was a cost and
# a hidden switch, so the variable is read here, once.
_mode = _parse(os.environ.get(ENV_VAR))


def mode() -> str:
    return _mode


def set_mode(value: str | None) -> str:
    """Run every later op call as ``value`` ("auto", "torch" or "triton"; None: GRAM_KERNELS as the
    environment says now) and return the mode it replaces, for a caller that restores it."""
    global _mode
    previous, _mode = _mode, _parse(os.environ.get(ENV_VAR) if value is None else value)
    return previous


@contextmanager
def kernels_mode(value: str) -> Iterator[None]:
    """Run the ops of a block as ``value`` (a comparison of implementations), then restore the mode."""
    previous = set_mode(value)
    try:
        yield
    finally:
        set_mode(previous)


def _needs_autograd(tensors: tuple[Any, ...]) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


@functools.cache
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken install must not take the torch path down with it
        return False
    return True


def interpreting() -> bool:
    """True when Triton kernels are (or will be) built for the interpreter rather than a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def enable_interpreter() -> None:
    """Run Triton kernels on the CPU through the interpreter (TRITON_INTERPRET=1).

    triton.jit picks interpreter or compiler when a function is decorated, so the variable must be set
    before our kernel modules are imported; any already imported for the compiler are dropped and
    imported again. triton itself is never re-imported (its C extension cannot be loaded twice): the
    kernels call only triton builtins and kernels.triton_util's helpers, which is what makes them run
    under the interpreter even when torch.compile imported triton first."""
    os.environ["TRITON_INTERPRET"] = "1"
    stale = _compiled_modules()
    for name in stale:
        del sys.modules[name]
    if stale:
        load_kernels.cache_clear()


def _compiled_modules() -> list[str]:
    """Our kernel modules that were imported with the compiler, not the interpreter."""
    util = sys.modules.get("kernels.triton_util")
    if util is None or getattr(util, "INTERPRET", True):
        return []
    return [n for n in sys.modules if n.startswith("kernels.triton_")]


def use_triton(*tensors: Any) -> bool:
    """Decide, for one call, whether the Triton kernel runs on these tensors."""
    chosen = mode()
    if chosen == "torch" or _needs_autograd(tensors):
        return False
    first = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if first is None:
        return False
    if chosen == "triton":
        if first.device.type == "cpu":
            enable_interpreter()
        if not triton_importable():
            raise RuntimeError(f"{ENV_VAR}=triton but triton does not import")
        return True
    return first.device.type == "cuda" and triton_importable() and not interpreting()


@functools.cache
def load_kernels(name: str) -> ModuleType:
    """Import kernels.<name> lazily, so CPU-only callers never import triton."""
    return importlib.import_module(f"kernels.{name}")
