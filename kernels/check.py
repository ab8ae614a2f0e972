"""python -m kernels.check: every Triton kernel against its torch reference at several shapes (odd sizes
included, so masking is exercised). Prints a table of max errors; exits 1 on any mismatch. Whole
supervision steps of a model, Triton (and the fused low-level update) against torch, are checked by
``python -m model.fast_path.check``, which reuses this table.

On CUDA the kernels run natively (the references run on the same GPU); without CUDA they run under the
Triton interpreter (TRITON_INTERPRET=1, set here before triton is imported), slowly but exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels import ops, reference
from kernels.backend import kernels_mode, set_mode

CUDA = torch.cuda.is_available()

TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (3e-2, 3e-2)}


@dataclass
class Row:
    name: str
    shape: str
    dtype: str
    max_abs: float
    scaled: float  # max_abs / max |reference|: the error relative to the tensor's scale
    ok: bool


def compare(name: str, shape: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> Row:
    if got.shape != want.shape or got.dtype != want.dtype:
        return Row(name, shape, str(want.dtype), float("inf"), float("inf"), False)
    g, w = got.double(), want.double()
    dtype = str(want.dtype).removeprefix("torch.")
    if got.numel() == 0:
        return Row(name, shape, dtype, 0.0, 0.0, True)
    if not got.is_floating_point():
        wrong = (g != w).double()
        return Row(name, shape, dtype, wrong.max().item(), wrong.mean().item(), bool((wrong == 0).all()))
    err = (g - w).abs()
    ok = bool((err <= atol + rtol * w.abs()).all())
    max_abs = err.max().item()
    return Row(name, shape, dtype, max_abs, max_abs / max(w.abs().max().item(), 1e-30), ok)


def _run(name: str, shape: str, dtype: torch.dtype, fn: Callable[[], tuple[torch.Tensor, ...]],
         ref: Callable[[], tuple[torch.Tensor, ...]], tol: tuple[float, float] | None = None) -> list[Row]:
    atol, rtol = tol or TOL[dtype]
    got = fn()
    with kernels_mode("torch"):
        want = ref()
    suffix = ["", ".logprob"] if len(got) == 2 else [""]
    return [compare(name + s, shape, g, w, atol, rtol) for s, g, w in zip(suffix, got, want, strict=True)]


def kernel_rows(device: torch.device) -> list[Row]:
    rows: list[Row] = []
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)

    for dtype in (torch.float32, torch.bfloat16):
        for shape in ((3, 7, 37), (4, 18, 128), (2, 83, 96)):
            x, d, e, m = (rnd(*shape, dtype=dtype) for _ in range(4))
            s = "x".join(map(str, shape))
            rows += _run("rms_norm", s, dtype, lambda x=x: (ops.rms_norm(x),),
                         lambda x=x: (reference.rms_norm(x),))
            rows += _run("add_rmsnorm", s, dtype, lambda x=x, d=d: (ops.add_rmsnorm(x, d),),
                         lambda x=x, d=d: (reference.add_rmsnorm(x, d),))
            rows += _run("inject(3)", s, dtype, lambda x=x, d=d, e=e: (ops.inject(x, d, e),),
                         lambda x=x, d=d, e=e: (reference.inject(x, d, e),))
            rows += _run("sum_rmsnorm(4)", s, dtype,
                         lambda x=x, d=d, e=e, m=m: (ops.sum_rmsnorm(x, d, e, m),),
                         lambda x=x, d=d, e=e, m=m: (reference.sum_rmsnorm(x, d, e, m),))
        for b, r, d_in, hidden, d_out in ((3, 7, 37, 40, 37), (4, 18, 128, 352, 128), (2, 96, 83, 224, 83),
                                          (2, 5, 64, 96, 48)):
            x = rnd(b, r, d_in, dtype=dtype)
            wgu = rnd(2 * hidden, d_in, dtype=dtype, scale=d_in**-0.5)
            wd = rnd(d_out, hidden, dtype=dtype, scale=hidden**-0.5)
            s = f"{b}x{r}x{d_in} H{hidden}->{d_out}"
            for impl in ("fused", "composed"):
                rows += _run(f"swiglu[{impl}]", s, dtype,
                             lambda x=x, wgu=wgu, wd=wd, impl=impl: (ops.swiglu(x, wgu, wd, impl=impl),),
                             lambda x=x, wgu=wgu, wd=wd: (reference.swiglu(x, wgu, wd),))
                if d_in == d_out:
                    rows += _run(f"swiglu_add_rmsnorm[{impl}]", s, dtype,
                                 lambda x=x, wgu=wgu, wd=wd, impl=impl: (
                                     ops.swiglu_add_rmsnorm(x, wgu, wd, impl=impl),),
                                 lambda x=x, wgu=wgu, wd=wd: (reference.swiglu_add_rmsnorm(x, wgu, wd),))
            xt = rnd(b, d_in, r, dtype=dtype).transpose(1, 2)  # the sequence mixer's transposed view
            rows += _run("swiglu[transposed view]", s, dtype,
                         lambda xt=xt, wgu=wgu, wd=wd: (ops.swiglu(xt, wgu, wd),),
                         lambda xt=xt, wgu=wgu, wd=wd: (reference.swiglu(xt, wgu, wd),))
            e1, e2 = (rnd(b, d_in, r, dtype=dtype).transpose(1, 2) for _ in range(2))  # the injections
            rows += _run("swiglu[transposed, +2 inputs]", s, dtype,
                         lambda xt=xt, wgu=wgu, wd=wd, e=(e1, e2): (ops.swiglu(xt, wgu, wd, extra_inputs=e),),
                         lambda xt=xt, wgu=wgu, wd=wd, e=(e1, e2): (
                             reference.swiglu(reference.inject(xt, *e), wgu, wd),))
        for b, length, dim in ((5, 7, 37), (3, 83, 96)):
            u = rnd(b, length, dim, dtype=dtype)
            proj = rnd(b, length, 2 * dim, dtype=dtype)
            mu, sigma = proj[..., :dim], proj[..., dim:].abs() + 0.01
            seed = torch.tensor([0, 2**40 + 5, 7, 3, 2**62][:b], device=device)
            traj = torch.tensor([1, 2**33, 0, 5, 4][:b], device=device)
            ctr = torch.tensor([0, 2**32 - 1, 6, 1, 9][:b], device=device)
            s = f"{b}x{length}x{dim}"
            gtol = (1e-4, 1e-5) if dtype == torch.float32 else (3e-2, 2e-2)
            rows += _run("guidance", s, dtype,
                         lambda u=u, mu=mu, sigma=sigma, seed=seed, traj=traj, ctr=ctr: (
                             ops.guidance(u, mu, sigma, seed, traj, ctr),),
                         lambda u=u, mu=mu, sigma=sigma, seed=seed, traj=traj, ctr=ctr: (
                             reference.guidance(u, mu, sigma, seed, traj, ctr),), gtol)
            weight = rnd(2 * dim, dim, dtype=dtype, scale=dim**-0.5)
            bias = rnd(2 * dim, dtype=dtype, scale=2.0)
            rows += _run("prior_guidance (head+noise)", s, dtype,
                         lambda u=u, w=weight, b_=bias, seed=seed, traj=traj, ctr=ctr: (
                             ops.prior_guidance(u, w, b_, 1e-3, seed, traj, ctr),),
                         lambda u=u, w=weight, b_=bias, seed=seed, traj=traj, ctr=ctr: (
                             reference.prior_guidance(u, w, b_, 1e-3, seed, traj, ctr),),
                         (1e-4, 1e-5) if dtype == torch.float32 else (0.25, 2e-2))
            temp = torch.tensor([1.0, 2.5, 0.5, 3.0, 1.3][:b], device=device)  # per-slot prior temperature
            rows += _run("prior_guidance (per-slot temperature)", s, dtype,
                         lambda u=u, w=weight, b_=bias, seed=seed, traj=traj, ctr=ctr, t=temp: (
                             ops.prior_guidance(u, w, b_, 1e-3, seed, traj, ctr, t),),
                         lambda u=u, w=weight, b_=bias, seed=seed, traj=traj, ctr=ctr, t=temp: (
                             reference.prior_guidance(u, w, b_, 1e-3, seed, traj, ctr, t),),
                         (1e-4, 1e-5) if dtype == torch.float32 else (0.75, 2e-2))
            sq = sigma + 0.1
            rows += _run("gaussian_kl", s, dtype,
                         lambda u=u, mu=mu, sq=sq, sigma=sigma: (ops.gaussian_kl(mu, sq, u, sigma),),
                         lambda u=u, mu=mu, sq=sq, sigma=sigma: (reference.gaussian_kl(mu, sq, u, sigma),),
                         (1e-4, 1e-4) if dtype == torch.float32 else (5e-2, 5e-2))
        for shape in ((3, 81, 1, 11), (2, 49, 16, 3), (5, 16, 1, 5)):
            logits = rnd(*shape, dtype=dtype, scale=3.0)
            rows += _run("decode_epilogue", "x".join(map(str, shape)), dtype,
                         lambda lg=logits: ops.decode_epilogue(lg),
                         lambda lg=logits: reference.decode_epilogue(lg), (1e-5, 1e-5))
    seed = torch.tensor([0, 1, 2**40 + 5, 2**62 + 3], device=device)
    traj = torch.tensor([0, 3, 2**33, 9], device=device)
    ctr = torch.tensor([0, 5, 2**32 - 1, 0], device=device)
    for numel in (1, 7, 8064):
        rows += _run("counter_normal", f"4x{numel}", torch.float32,
                     lambda n=numel: (ops.counter_normal(seed, traj, ctr, n),),
                     lambda n=numel: (reference.counter_normal(seed, traj, ctr, n),), (1e-4, 1e-5))
    from kernels import triton_guidance

    m = reference._MASK32
    s_, t_, c_ = seed.view(-1, 1), traj.view(-1, 1), ctr.view(-1, 1)
    words = reference.philox4x32(torch.arange(2016, device=device).view(1, -1), c_ & m, (s_ >> 32) & m,
                                 (t_ >> 32) & m, s_ & m, t_ & m)
    want = torch.stack(torch.broadcast_tensors(*words), dim=-1)
    rows.append(compare("philox4x32 words (bit-exact)", "4x2016x4",
                         triton_guidance.philox_words(seed, traj, ctr, 2016), want, 0.0, 0.0))
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'kernel':36} {'shape':26} {'dtype':9} {'max_abs_err':>12} {'err/max|ref|':>12}  ok")
    for r in rows:
        verdict = "ok" if r.ok else "FAIL"
        print(f"{r.name:36} {r.shape:26} {r.dtype:9} {r.max_abs:12.3e} {r.scaled:12.3e}  {verdict}")


def report(rows: list[Row], t0: float) -> int:
    """Print the table and a summary; the exit status (1 on any mismatch)."""
    print_table(rows)
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)}/{len(rows)} ok in {time.perf_counter() - t0:.1f}s")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    # Before anything imports triton: without a GPU the kernels run under the interpreter.
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    set_mode("triton")
    device = torch.device("cuda" if CUDA else "cpu")
    mode = "CUDA (native Triton)" if CUDA else "CPU (Triton interpreter)"
    print(f"kernels.check on {mode}: torch {torch.__version__}", end="")
    import triton

    print(f", triton {triton.__version__}")
    t0 = time.perf_counter()
    torch.set_grad_enabled(False)
    return report(kernel_rows(device), t0)


if __name__ == "__main__":
    sys.exit(main())
