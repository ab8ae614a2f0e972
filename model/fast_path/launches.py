"""Count what one call launches: Triton kernels, and torch ops that would be device kernels on a GPU
(ATen ops that are not views or metadata-only). A step's launch count is what CUDA graphs and the fused
low-level update attack, and unlike time it can be measured on a CPU under the interpreter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

# ATen ops that only make views or read metadata: no kernel on a GPU.
_FREE = {
    "view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze", "slice",
    "select", "split", "split_with_sizes", "chunk", "unbind", "as_strided", "alias", "detach", "lift_fresh",
    "empty", "empty_strided", "empty_like", "unflatten", "flatten", "narrow", "promote_types", "result_type",
    "new_empty", "new_empty_strided", "set_",
}


class _AtenCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name not in _FREE:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count_launches(fn: Callable[[], Any]) -> tuple[int, int, Counter[str]]:
    """(triton launches, torch kernel launches, torch ops by name) of fn()."""
    triton_calls = 0
    patched: list[tuple[Any, Any]] = []
    try:
        from triton.runtime import interpreter, jit

        for cls in (jit.JITFunction, interpreter.InterpretedFunction):
            original = cls.run

            def counting_run(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
                nonlocal triton_calls
                if not kwargs.get("warmup", False):
                    triton_calls += 1
                # The interpreter's own host copies are not the kernel's work: do not count them.
                with _disable_current_modes():
                    return _original(self, *args, **kwargs)

            cls.run = counting_run
            patched.append((cls, original))
    except ImportError:
        pass
    try:
        with _AtenCounter() as counter:
            fn()
    finally:
        for cls, original in patched:
            cls.run = original
    return triton_calls, sum(counter.ops.values()), counter.ops


def main(argv: list[str] | None = None) -> int:
    """python -m model.fast_path.launches: launches per supervision step of the shipped sizes, per path."""
    import argparse
    import copy
    import os

    import torch

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--runs", default="sudoku,nqueens,graph_coloring", help="model.presets runs")
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    from kernels.backend import kernels_mode
    from model.fast_path.workload import step_inputs
    from model.gram import build_model
    from model.presets import preset
    from model.step_impl import StepImpl

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_grad_enabled(False)
    print(f"{'run':15} {'mixer':6} {'path':14} {'triton':>7} {'torch':>6} {'total':>6}")
    for run in args.runs.split(","):
        model = build_model(preset(run, args.preset).model).eval().to(device)
        fused = copy.deepcopy(model).use_impl(StepImpl(fused=True))
        h, l, e_x, noise = step_inputs(model, 2)
        for label, net, mode in (("torch", model, "torch"), ("triton", model, "triton"),
                                 ("triton+fused", fused, "triton")):
            with kernels_mode(mode):
                net.step(h, l, e_x, noise)  # first call compiles and autotunes: not the steady state
                tri, aten, _ = count_launches(lambda n=net, a=(h, l, e_x, noise): n.step(*a))
            print(f"{run:15} {model.config.mixer:6} {label:14} {tri:7d} {aten:6d} {tri + aten:6d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
