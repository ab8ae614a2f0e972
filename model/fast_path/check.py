"""python -m model.fast_path.check: whole supervision steps of a small model per mixer, the Triton
kernels composed (kernels.ops) and the fused low-level update (StepImpl(fused=True)) against the torch
references. The same table as ``python -m kernels.check`` (the kernels one by one); exits 1 on any
mismatch. Without CUDA the kernels run under the Triton interpreter (set here before triton is imported).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

from kernels.backend import kernels_mode, set_mode
from kernels.check import Row, compare, report

CUDA = torch.cuda.is_available()


def step_rows(device: torch.device, batch: int) -> list[Row]:
    """One supervision step of a small model per mixer: Triton composed and fused vs the torch path."""
    from model.config import config_for
    from model.fast_path.workload import randomize_zero_heads, step_inputs
    from model.gram import build_model
    from model.step_impl import StepImpl

    rows = []
    for task, mixer, d in (("sudoku", "mlp_t", 64), ("nqueens", "attn", 64)):
        cfg = config_for(task, d_model=d, n_heads=4, n_layers=2, n_puzzle=2, T=2, K=2, mixer=mixer)
        model = build_model(cfg, seed=0).eval().to(device)
        randomize_zero_heads(model)
        h, l, e_x, noise = step_inputs(model, batch)
        with kernels_mode("torch"):
            want = model.step(h, l, e_x, noise)
        fused = copy.deepcopy(model).use_impl(StepImpl(fused=True))
        shape = f"{task} {mixer} D{d} B{batch} T2K2x2"
        for label, net in (("step[triton]", model), ("step[triton+fused]", fused)):
            got = net.step(h, l, e_x, noise)
            for field in ("h", "l", "token_logprob", "q_halt", "value"):
                rows.append(compare(f"{label}.{field}", shape, getattr(got, field), getattr(want, field),
                                    1e-4, 1e-4))
            agree = (got.tokens == want.tokens).double().mean().item()
            rows.append(Row(f"{label}.tokens agree", shape, "int64", 1.0 - agree, 1.0 - agree, agree >= 0.99))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="slots per step")
    args = parser.parse_args(argv)
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (the kernels import it lazily)
    set_mode("triton")
    device = torch.device("cuda" if CUDA else "cpu")
    where = "CUDA" if CUDA else "CPU (Triton interpreter)"
    print(f"model.fast_path.check on {where}: torch {torch.__version__}")
    t0 = time.perf_counter()
    torch.set_grad_enabled(False)
    return report(step_rows(device, args.batch), t0)


if __name__ == "__main__":
    sys.exit(main())
