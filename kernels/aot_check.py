"""python -m kernels.aot_check [--arch 90]: compile every Triton kernel, at the configurations the
dispatch and the autotuner use, all the way to a cubin for a CUDA target — on a machine without a GPU.

The interpreter (kernels.check on CPU) proves the kernels compute the right numbers; it does not run
Triton's compiler, which is where type errors, unsupported dtype combinations of tl.dot and
shared-memory overflows show up. This catches those before a GPU is available. Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("kernels.aot_check compiles real kernels: unset TRITON_INTERPRET")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels import triton_decode, triton_guidance, triton_norm, triton_prior, triton_swiglu  # noqa: E402

PTR = {"float32": "*fp32", "bfloat16": "*bf16"}


def _jit(kernel: Any) -> Any:
    """The JITFunction under an autotuner (or our fixed-config stand-in)."""
    return getattr(kernel, "fn", kernel)


def _case(group: str, label: str, fn: Any, sig: dict[str, str], const: dict[str, Any], warps: int) -> dict:
    return dict(group=group, name=f"{group} {label}".strip(), fn=fn, sig=sig, const=const, warps=warps)


def _cases(every_config: bool) -> list[dict]:
    """One entry per (kernel, dtype, shape, config); ``group`` ties the autotune alternatives together."""
    fused_cfgs = triton_swiglu._FUSED_CONFIGS if every_config else triton_swiglu._FUSED_CONFIGS[:2]
    gemm_cfgs = triton_swiglu._GEMM_CONFIGS if every_config else triton_swiglu._GEMM_CONFIGS[:2]
    i32 = "i32"
    cases = []
    for dt in ("float32", "bfloat16"):
        p = PTR[dt]
        for block_d in (64, 128, 512):
            sig = {"a_ptr": p, "b_ptr": p, "c_ptr": p, "d_ptr": p, "out_ptr": p, "n_rows": i32,
                   "n_cols": i32, "eps": "fp32"}
            const = {"N_INPUTS": 4, "NORMALIZE": True, "BLOCK_M": max(1, 4096 // block_d), "BLOCK_D": block_d}
            cases.append(_case(f"sum_norm {dt} D{block_d}", "", triton_norm._sum_norm_kernel, sig, const, 4))
        precision = "ieee" if dt == "float32" else "tf32"
        widest = triton_swiglu.FUSED_MAX_WIDTH[getattr(torch, dt)]
        for d_in, d_out in ((64, 64), (128, 128), (widest, widest)):
            sig = {"x_ptr": p, "x2_ptr": p, "x3_ptr": p, "wgu_ptr": p, "wd_ptr": p, "out_ptr": p,
                   **{k: i32 for k in ("M", "M_BUCKET", "R", "D_IN", "H", "D_OUT")}, "eps": "fp32",
                   **{k: "i64" for k in ("sxb", "sxr", "sxk", "sob", "sor", "son")},
                   **{k: "i64" for k in ("s_gu_n", "s_gu_k", "s_d_n", "s_d_h")}}
            for cfg in fused_cfgs:
                const = {"N_X": 3, "RESIDUAL_NORM": True, "UPCAST": False, "PRECISION": precision,
                         "BLOCK_K": d_in, "BLOCK_N": d_out, **cfg.kwargs}
                cases.append(_case(f"swiglu fused {dt} {d_in}->{d_out}", str(cfg.kwargs),
                                   _jit(triton_swiglu._swiglu_fused_kernel), sig, const, cfg.num_warps))
        dims = {k: i32 for k in ("M", "M_BUCKET", "R", "K", "N")}
        gate_sig = {"x_ptr": p, "wgu_ptr": p, "act_ptr": p, **dims,
                    **{k: "i64" for k in ("sxb", "sxr", "sxk", "s_gu_n", "s_gu_k")}}
        lin_sig = {"a_ptr": p, "w_ptr": p, "out_ptr": p, **dims,
                   **{k: "i64" for k in ("s_w_n", "s_w_k", "sob", "sor", "son")}}
        for cfg in gemm_cfgs:
            const = {"UPCAST": False, "PRECISION": precision, **cfg.kwargs}
            cases.append(_case(f"gate_up_act {dt}", str(cfg.kwargs), _jit(triton_swiglu._gate_up_act_kernel),
                               gate_sig, const, cfg.num_warps))
            cases.append(_case(f"linear {dt}", str(cfg.kwargs), _jit(triton_swiglu._linear_kernel), lin_sig,
                               const, cfg.num_warps))
        sig = {"u_ptr": p, "mu_ptr": p, "sigma_ptr": p, "out_ptr": p, "seed_ptr": "*i64", "traj_ptr": "*i64",
               "counter_ptr": "*i64", "numel": i32, "D": i32,
               **{k: "i64" for k in ("sub", "sul", "sud", "smb", "sml", "smd", "ssb", "ssl", "ssd")}}
        cases.append(_case(f"guidance {dt}", "", triton_guidance._guidance_kernel, sig,
                           {"HAS_U": True, "BLOCK": triton_guidance._BLOCK}, 4))
        for d in (64, 128, 256):
            sig = {"u_ptr": p, "w_ptr": p, "b_ptr": p, "out_ptr": p, "seed_ptr": "*i64", "traj_ptr": "*i64",
                   "counter_ptr": "*i64", "temp_ptr": "*fp32",
                   **{k: i32 for k in ("M", "M_BUCKET", "L", "D")},
                   "sigma_min": "fp32", "s_w_n": "i64", "s_w_k": "i64"}
            for cfg in (triton_prior._CONFIGS if every_config else triton_prior._CONFIGS[:1]):
                const = {"UPCAST": False, "HAS_TEMP": True, "PRECISION": precision, "BLOCK_D": d,
                         **cfg.kwargs}
                cases.append(_case(f"prior_guidance {dt} D{d}", str(cfg.kwargs),
                                   _jit(triton_prior._prior_guidance_kernel), sig, const, cfg.num_warps))
        sig = {k: p for k in ("mq_ptr", "sq_ptr", "mp_ptr", "sp_ptr", "out_ptr")} | {"n": i32}
        cases.append(_case(f"gaussian_kl {dt}", "", triton_guidance._gaussian_kl_kernel, sig,
                           {"BLOCK": 1024}, 4))
        sig = {"logits_ptr": p, "tok_ptr": "*i64", "lp_ptr": "*fp32", "n_rows": i32, "V": i32}
        cases.append(_case(f"decode {dt}", "", triton_decode._decode_kernel, sig,
                           {"BLOCK_M": 512, "BLOCK_V": 16}, 4))
    keys = {"seed_ptr": "*i64", "traj_ptr": "*i64", "counter_ptr": "*i64"}
    block = {"BLOCK": triton_guidance._BLOCK}
    cases.append(_case("counter_normal", "", triton_guidance._normal_kernel,
                       {"out_ptr": "*fp32", **keys, "numel": i32}, block, 4))
    cases.append(_case("philox_words", "", triton_guidance._philox_raw_kernel,
                       {"out_ptr": "*i64", **keys, "n_blocks": i32}, block, 4))
    return cases


# Shared memory one block may use (bytes), by compute capability.
SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 (H100/H200)")
    parser.add_argument("--filter", default="", help="only cases whose name contains one of these (a|b|c)")
    parser.add_argument("--all-configs", action="store_true", help="every autotune config (slow: minutes)")
    args = parser.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    limit = SMEM_LIMIT.get(args.arch, 101376)
    t0 = time.perf_counter()
    print(f"kernels.aot_check: triton {triton.__version__}, target sm_{args.arch} "
          f"(shared memory <= {limit} B)")
    fits: dict[str, bool] = {}
    errors = 0
    for case in _cases(args.all_configs):
        if args.filter and not any(f in case["name"] for f in args.filter.split("|")):
            continue
        sig = {**case["sig"], **{k: "constexpr" for k in case["const"]}}
        try:
            kernel = triton.compile(ASTSource(fn=case["fn"], signature=sig, constexprs=case["const"]),
                                    target=target, options={"num_warps": case["warps"]})
        except Exception as err:  # report every kernel, then fail
            errors += 1
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            print(f"  FAIL  {case['name']:76} {type(err).__name__}: {first[:200]}")
            continue
        shared = kernel.metadata.shared
        ok = shared <= limit
        fits[case["group"]] = fits.get(case["group"], False) or ok
        verdict = "ok   " if ok else "big  "  # an autotuner skips a config that does not fit
        print(f"  {verdict} {case['name']:76} shared {shared:6d} B")
    unfit = [g for g, ok in fits.items() if not ok]
    for group in unfit:
        print(f"  FAIL  {group}: no configuration fits in shared memory")
    failed = errors + len(unfit)
    print(f"{'all compiled' if not failed else f'{failed} failed'} in {time.perf_counter() - t0:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
