"""python -m model.fast_path.bench: one supervision step (model.step) per path and batch size — time,
trajectories/s, and model FLOP/s as a fraction of this device's GEMM peak measured in the same run.

GPU paths: eager (torch), compile (torch.compile of the recursive core), compile+graphs, triton (the
kernels via kernels.ops), triton+fused (StepImpl(fused=True)), triton+fused+graphs (cuda_graphs.py).
CPU paths (--cpu, or automatically without CUDA): eager fp32, eager bf16, compile, bf16+compile (the
paths of cpu_path.py) over a smaller batch range. Writes a CSV (--csv) and prints a table plus the
issue's targets, met or not. A deadline (--budget-s) skips what would not fit, and says so.

    python -m model.fast_path.bench                          # GPU: batches 64..4096, < 8 minutes
    python -m model.fast_path.bench --cpu --batches 64,256 --tasks graph_coloring,nqueens
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kernels.backend import kernels_mode, set_mode
from kernels.flops import count_flops, gemm_peak, sync
from model.fast_path.workload import randomize_zero_heads, step_inputs

GPU_PATHS = ("eager", "compile", "compile+graphs", "triton", "triton+fused", "triton+fused+graphs")
CPU_PATHS = ("fp32", "bf16", "compile", "bf16+compile")


@dataclass
class Result:
    device: str
    task: str
    mixer: str
    d_model: int
    dtype: str
    batch: int
    path: str
    step_ms: float
    traj_per_s: float
    model_tflops: float
    frac_peak: float  # of the GEMM peak of the dtype this path computes in
    frac_peak_bf16: float
    flops_per_step: int
    warmup_s: float
    speedup_vs_eager: float = 0.0


def _model(task: str, preset_name: str, device: torch.device, dtype: torch.dtype) -> Any:
    from model.gram import build_model
    from model.presets import preset

    model = build_model(preset(task, preset_name).model, seed=0).eval()
    randomize_zero_heads(model)
    return model.to(device=device, dtype=dtype)


def _time_step(
    fn: Callable[[], Any], device: torch.device, min_s: float, max_reps: int, min_reps: int = 2
) -> tuple[float, float]:
    """(warm-up seconds, median seconds per step)."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    warm = time.perf_counter() - t0
    fn()  # second call: autotuning / recompiles done
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_s and len(times) < max_reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return warm, times[len(times) // 2]


def _gpu_step(model: Any, path: str, graphs: dict[str, Any], batch: int) -> Callable[..., Any]:
    from model.fast_path.cpu_path import compile_core
    from model.fast_path.cuda_graphs import GraphedStep
    from model.step_impl import StepImpl

    if path in ("eager", "triton"):
        return model.step
    if path.startswith("compile"):
        if "compiled" not in graphs:
            graphs["compiled"] = compile_core(copy.deepcopy(model))  # one compilation for every batch size
        net = graphs["compiled"]
    else:
        if "fused" not in graphs:
            graphs["fused"] = copy.deepcopy(model).use_impl(StepImpl(fused=True))
        net = graphs["fused"]
    if path.endswith("+graphs"):
        return GraphedStep(net, buckets=(batch,), enabled=True).__call__
    return net.step


def bench_gpu(args: argparse.Namespace, device: torch.device, peaks: dict[str, float], deadline: float,
              out: list[Result], skipped: list[str]) -> None:
    dtype = getattr(torch, args.dtype)
    for task in args.tasks:
        model = _model(task, args.preset, device, dtype)
        built: dict[str, Any] = {}
        for batch in args.batches:
            h, l, e_x, noise = step_inputs(model, batch)
            flops = count_flops(_bind(model.step, h, l, e_x, noise))
            eager_ms = 0.0
            for path in args.paths:
                if time.perf_counter() > deadline:
                    skipped.append(f"{task} B{batch} {path}")
                    continue
                mode = "torch" if path in ("eager", "compile", "compile+graphs") else "triton"
                with kernels_mode(mode):
                    fn = _gpu_step(model, path, built, batch)
                    call = _bind(fn, h, l, e_x, noise)
                    try:
                        warm, step_s = _time_step(call, device, args.min_s, 50)
                    except Exception as err:  # one failing path must not lose the others' figures
                        print(f"  {task} B{batch} {path}: FAILED {type(err).__name__}: {err}",
                              file=sys.stderr)
                        skipped.append(f"{task} B{batch} {path} (failed: {type(err).__name__})")
                        continue
                r = _result(device, task, model, args.dtype, batch, path, step_s, flops, warm, peaks)
                eager_ms = r.step_ms if path == "eager" else eager_ms
                r.speedup_vs_eager = eager_ms / r.step_ms if eager_ms else 0.0
                out.append(r)
                _print_row(r)


def bench_cpu(args: argparse.Namespace, peaks: dict[str, float], deadline: float, out: list[Result],
              skipped: list[str]) -> None:
    from model.fast_path.cpu_path import make_step

    device = torch.device("cpu")
    for task in args.tasks:
        model = _model(task, args.preset, device, torch.float32)
        for path in args.paths:
            fn_step = make_step(model, path)
            for batch in args.batches:
                if time.perf_counter() > deadline:
                    skipped.append(f"{task} B{batch} {path}")
                    continue
                h, l, e_x, noise = step_inputs(model, batch)
                flops = count_flops(_bind(model.step, h, l, e_x, noise))
                with kernels_mode("torch"):
                    warm, step_s = _time_step(_bind(fn_step, h, l, e_x, noise), device, args.min_s, 15,
                                                min_reps=5)  # a shared 2-core VM: single steps vary by 10 %
                dt = "bfloat16" if path.startswith("bf16") else "float32"
                r = _result(device, task, model, dt, batch, path, step_s, flops, warm, peaks)
                eager = next((x for x in out if (x.task, x.batch, x.path) == (task, batch, "fp32")), None)
                r.speedup_vs_eager = eager.step_ms / r.step_ms if eager else 1.0
                out.append(r)
                _print_row(r)


def _result(device: torch.device, task: str, model: Any, dtype: str, batch: int, path: str, step_s: float,
            flops: int, warm: float, peaks: dict[str, float]) -> Result:
    rate = flops / step_s
    own_peak = peaks["bfloat16"] if dtype == "bfloat16" else peaks["float32"]
    return Result(
        device=device.type, task=task, mixer=model.config.mixer, d_model=model.config.d_model, dtype=dtype,
        batch=batch, path=path, step_ms=step_s * 1e3, traj_per_s=batch / step_s, model_tflops=rate / 1e12,
        frac_peak=rate / own_peak, frac_peak_bf16=rate / peaks["bfloat16"], flops_per_step=flops,
        warmup_s=warm,
    )


def _print_row(r: Result) -> None:
    print(f"  {r.task:15} {r.mixer:5} D{r.d_model:<4} {r.dtype:9} B{r.batch:<5} {r.path:20} "
          f"{r.step_ms:10.2f} ms {r.traj_per_s:10.1f} traj/s {r.model_tflops * 1e3:9.1f} GFLOP/s "
          f"{100 * r.frac_peak:6.2f}% peak ({100 * r.frac_peak_bf16:6.2f}% of bf16) "
          f"x{r.speedup_vs_eager:.2f}", flush=True)


def _fastest(rows: Any) -> Result | None:
    return min(rows, key=lambda r: r.step_ms, default=None)


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def targets(results: list[Result], cpu: bool) -> list[str]:
    lines = []
    if cpu:
        big = [r for r in results if r.batch >= 256]
        if not big:
            return ["CPU target (>= 50% of bf16 GEMM peak at batch >= 256): not measured (no batch >= 256)"]
        best = max(big, key=lambda r: r.frac_peak_bf16)
        met = "MET" if best.frac_peak_bf16 >= 0.5 else "NOT MET"
        lines.append(f"CPU target >= 50% of bf16 GEMM peak at batch >= 256: {met} — best {best.path} "
                     f"{best.task} B{best.batch}: {100 * best.frac_peak_bf16:.1f}%")
        return lines
    for (task, batch) in sorted({(r.task, r.batch) for r in results}):
        by = {r.path: r for r in results if r.task == task and r.batch == batch}
        tri = _fastest(r for p, r in by.items() if p.startswith("triton"))
        comp = _fastest(r for p, r in by.items() if p.startswith("compile"))
        if tri and "eager" in by and comp:
            vs_e, vs_c = by["eager"].step_ms / tri.step_ms, comp.step_ms / tri.step_ms
            ok = "MET" if vs_e >= 2.0 and vs_c >= 1.2 else "NOT MET"
            lines.append(f"{task} B{batch}: best triton ({tri.path}) x{vs_e:.2f} vs eager, x{vs_c:.2f} vs "
                         f"best compile ({comp.path}) -> {ok} (target x2 / x1.2)")
    return lines


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", default=not cuda, help="CPU torch paths only")
    p.add_argument("--tasks", default=None, help="comma list of runs (model.presets.RUNS)")
    p.add_argument("--preset", default="cpu", help="model sizes: cpu (shipped) or paper")
    p.add_argument("--batches", default=None, help="comma list of slot counts")
    p.add_argument("--paths", default=None, help="comma list of paths to time")
    p.add_argument("--dtype", default="bfloat16", help="GPU compute dtype (float32 or bfloat16)")
    p.add_argument("--threads", type=int, default=0, help="CPU: torch intra-op threads (0 = default)")
    p.add_argument("--min-s", type=float, default=0.3, help="time each point for at least this long")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip what is left after this many seconds")
    p.add_argument("--csv", default=None, help="output CSV (default model/fast_path/results/bench_<dev>.csv)")
    args = p.parse_args(argv)
    args.tasks = (args.tasks or ("graph_coloring,nqueens" if args.cpu else "nqueens,sudoku")).split(",")
    default_batches = "16,64,256" if args.cpu else "64,256,1024,4096"
    args.batches = [int(b) for b in (args.batches or default_batches).split(",")]
    args.paths = (args.paths or ",".join(CPU_PATHS if args.cpu else GPU_PATHS)).split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu:
        set_mode("torch")
    device = torch.device("cpu" if args.cpu else "cuda")
    if args.csv is None:
        args.csv = os.path.join(os.path.dirname(__file__), "results", f"bench_{device.type}.csv")
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    cpu_name = f"CPU ({torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name
    print(f"model.fast_path.bench on {name}: torch {torch.__version__}")
    peaks = {dt: gemm_peak(getattr(torch, dt), device) for dt in ("float32", "bfloat16")}
    print(f"GEMM peak: fp32 {peaks['float32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    results: list[Result] = []
    skipped: list[str] = []
    deadline = start + args.budget_s
    if args.cpu:
        bench_cpu(args, peaks, deadline, results, skipped)
    else:
        bench_gpu(args, device, peaks, deadline, results, skipped)
    with open(args.csv, "w", newline="") as f:
        fields = list(asdict(results[0]).keys()) if results else list(Result.__dataclass_fields__)
        writer = csv.DictWriter(f, fieldnames=[*fields, "peak_fp32_gflops", "peak_bf16_gflops"])
        writer.writeheader()
        for r in results:
            writer.writerow({**asdict(r), "peak_fp32_gflops": peaks["float32"] / 1e9,
                             "peak_bf16_gflops": peaks["bfloat16"] / 1e9})
    for line in targets(results, args.cpu):
        print(line)
    if skipped:
        print(f"skipped (budget {args.budget_s:.0f}s or failure): {'; '.join(skipped)}")
    print(f"wrote {args.csv} ({len(results)} rows) in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
