"""The Triton kernels agree with their torch references (run under the Triton interpreter on CPU), and
the dispatch picks the implementation GRAM_KERNELS asks for."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (kernels.backend also does)

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels import backend, ops, reference  # noqa: E402
from tests.kernel_fixtures import one_thread, triton_mode  # noqa: E402, F401

TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def _rand(*shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 5, 37), (2, 7, 64), (1, 130)])
def test_norm_family_matches_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x, d, e = (_rand(*shape, dtype=dtype) for _ in range(3))
    for got, want in (
        (ops.rms_norm(x), reference.rms_norm(x)),
        (ops.add_rmsnorm(x, d), reference.add_rmsnorm(x, d)),
        (ops.inject(x, d, e), reference.inject(x, d, e)),
        (ops.sum_rmsnorm(x, d, e, x), reference.sum_rmsnorm(x, d, e, x)),
    ):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_sum_rmsnorm_of_more_summands_than_the_kernel_takes_uses_the_reference() -> None:
    parts = [_rand(2, 3, 16) for _ in range(5)]
    torch.testing.assert_close(ops.sum_rmsnorm(*parts), reference.sum_rmsnorm(*parts))


def test_inject_broadcasts_like_torch() -> None:
    state, vec = _rand(2, 3, 16), _rand(16)
    torch.testing.assert_close(ops.inject(state, vec), reference.inject(state, vec))


@pytest.mark.parametrize("impl", ["fused", "composed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d_in,hidden,d_out", [(37, 40, 37), (64, 96, 64), (16, 33, 24)])
def test_swiglu_matches_reference(impl: str, dtype: torch.dtype, d_in: int, hidden: int, d_out: int) -> None:
    torch.manual_seed(1)
    x = _rand(3, 5, d_in, dtype=dtype)
    wgu = _rand(2 * hidden, d_in, dtype=dtype, scale=d_in**-0.5)
    wd = _rand(d_out, hidden, dtype=dtype, scale=hidden**-0.5)
    torch.testing.assert_close(ops.swiglu(x, wgu, wd, impl=impl), reference.swiglu(x, wgu, wd), **TOL[dtype])
    if d_in == d_out:
        got = ops.swiglu_add_rmsnorm(x, wgu, wd, impl=impl)
        torch.testing.assert_close(got, reference.swiglu_add_rmsnorm(x, wgu, wd), **TOL[dtype])


@pytest.mark.parametrize("impl", ["fused", "composed"])
def test_swiglu_reads_a_transposed_view_and_returns_a_transposable_layout(impl: str) -> None:
    """The sequence mixer calls swiglu(x.transpose(1, 2)): no copy in, and .transpose back is contiguous."""
    torch.manual_seed(2)
    x = _rand(2, 19, 24)  # [B, L, D]
    wgu, wd = _rand(2 * 40, 19, scale=0.2), _rand(19, 40, scale=0.2)
    got = ops.swiglu(x.transpose(1, 2), wgu, wd, impl=impl)
    torch.testing.assert_close(got, reference.swiglu(x.transpose(1, 2), wgu, wd), atol=2e-5, rtol=2e-5)
    assert got.transpose(1, 2).is_contiguous()


def test_fused_swiglu_folds_the_injection_into_its_prologue() -> None:
    from kernels import triton_swiglu

    torch.manual_seed(3)
    l, h, e = (_rand(2, 24, 19).transpose(1, 2) for _ in range(3))
    wgu, wd = _rand(2 * 32, 24, scale=0.2), _rand(24, 32, scale=0.2)
    got = triton_swiglu.swiglu(l, wgu, wd, extra_inputs=(h, e), residual_norm=True)
    torch.testing.assert_close(got, reference.swiglu_add_rmsnorm(l + h + e, wgu, wd), atol=2e-5, rtol=2e-5)


def test_swiglu_rejects_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ops.swiglu(_rand(2, 8), _rand(10, 8), _rand(8, 6))


@pytest.mark.parametrize("vocab", [3, 11, 130])
def test_decode_epilogue_matches_reference(vocab: int) -> None:
    torch.manual_seed(4)
    logits = _rand(3, 9, 2, vocab, scale=3.0)
    logits[0, 0, 0, :] = 0.0  # all tied: the lowest index wins, as torch.argmax
    logits[1, 2, 1, 1] = logits[1, 2, 1, 0] = 50.0
    tokens, logprob = ops.decode_epilogue(logits)
    ref_tokens, ref_logprob = reference.decode_epilogue(logits)
    assert tokens.dtype == torch.int64 and logprob.dtype == torch.float32
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logprob, ref_logprob, atol=1e-5, rtol=1e-5)
    assert tokens[0, 0, 0] == 0 and tokens[1, 2, 1] == 0


def test_decode_epilogue_bf16_logits() -> None:
    logits = _rand(4, 7, 11, dtype=torch.bfloat16, scale=2.0)
    tokens, logprob = ops.decode_epilogue(logits)
    ref_tokens, ref_logprob = reference.decode_epilogue(logits)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logprob, ref_logprob, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_short_attention_is_scaled_dot_product_attention(dtype: torch.dtype) -> None:
    q, k, v = (torch.randn(3, 4, 14, 32, generator=torch.Generator().manual_seed(i)) for i in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    got = reference.short_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=1e-5 if dtype == torch.float32 else 3e-2, rtol=0)


def test_gaussian_kl_matches_reference() -> None:
    torch.manual_seed(5)
    mq, mp = _rand(2, 5, 33), _rand(2, 5, 33)
    sq, sp = torch.rand(2, 5, 33) + 0.05, torch.rand(2, 5, 33) + 0.05
    torch.testing.assert_close(ops.gaussian_kl(mq, sq, mp, sp), reference.gaussian_kl(mq, sq, mp, sp),
                               atol=1e-5, rtol=1e-5)


def test_kl_is_zero_for_equal_gaussians() -> None:
    mu, sigma = _rand(4, 9), torch.rand(4, 9) + 0.1
    assert ops.gaussian_kl(mu, sigma, mu, sigma).abs().max() < 1e-6


def test_dispatch_torch_mode_never_loads_a_kernel() -> None:
    with backend.kernels_mode("torch"):
        assert not backend.use_triton(torch.zeros(2))
    with backend.kernels_mode("auto"):
        assert not backend.use_triton(torch.zeros(2))  # CPU tensors: references in auto mode
    with backend.kernels_mode("triton"):
        assert backend.use_triton(torch.zeros(2))


def test_dispatch_takes_the_reference_when_autograd_needs_it() -> None:
    x = torch.randn(3, 16, requires_grad=True)
    assert not backend.use_triton(x)
    y = ops.add_rmsnorm(x, torch.randn(3, 16))
    y.sum().backward()  # the reference is differentiable; a kernel output would have no grad_fn
    assert x.grad is not None
    with torch.no_grad():
        assert backend.use_triton(x)


def test_dispatch_rejects_an_unknown_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="GRAM_KERNELS"):
        backend.set_mode("cuda")
    assert backend.mode() == "triton"  # unchanged (this module's fixture)
    monkeypatch.setenv("GRAM_KERNELS", "cuda")
    with pytest.raises(ValueError, match="GRAM_KERNELS"):
        backend.set_mode(None)


def test_the_mode_is_read_once_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ops do not look the variable up per call: changing it later does nothing until set_mode(None)."""
    monkeypatch.setenv("GRAM_KERNELS", "torch")
    assert backend.mode() == "triton" and backend.use_triton(torch.zeros(2))
    previous = backend.set_mode(None)
    try:
        assert backend.mode() == "torch" and not backend.use_triton(torch.zeros(2))
    finally:
        backend.set_mode(previous)


def test_interpreter_works_after_torch_compile_loaded_triton_for_the_compiler() -> None:
    """torch._dynamo imports triton (built for the compiler) before any test sets TRITON_INTERPRET; the
    dispatch must still run the kernels under the interpreter. A fresh process, so sys.modules is clean."""
    import subprocess
    import sys

    code = (
        "import os, torch, torch._dynamo, sys\n"
        "os.environ.pop('TRITON_INTERPRET', None)\n"
        "assert 'triton' in sys.modules\n"
        "os.environ['GRAM_KERNELS'] = 'triton'\n"
        "from kernels import ops, reference\n"
        "x, w1, w2 = torch.randn(3, 2, 40), torch.randn(64, 40) / 6, torch.randn(40, 32) / 6\n"
        "k = (torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]), torch.tensor([4, 5, 6]))\n"
        "close = torch.testing.assert_close\n"
        "close(ops.rms_norm(x), reference.rms_norm(x))\n"
        "close(ops.swiglu_add_rmsnorm(x, w1, w2), reference.swiglu_add_rmsnorm(x, w1, w2))\n"
        "close(ops.swiglu(x, w1, w2, impl='composed'), reference.swiglu(x, w1, w2), atol=1e-5, rtol=1e-5)\n"
        "s = x.abs() + 1\n"
        "close(ops.guidance(x, x, s, *k), reference.guidance(x, x, s, *k), atol=1e-4, rtol=1e-4)\n"
        "close(ops.gaussian_kl(x, s, x, s + 1), reference.gaussian_kl(x, s, x, s + 1))\n"
        "assert torch.equal(ops.decode_epilogue(x)[0], reference.decode_epilogue(x)[0])\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_kernels_call_no_triton_language_jit_helpers() -> None:
    """tl.sum, tl.zeros, ... are @triton.jit functions of triton.language, built once, for the compiler or
    the interpreter, when triton is imported; kernels that call them break under the interpreter after
    torch.compile imported triton. Builtins and kernels.triton_util's helpers are safe."""
    import pathlib
    import re

    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    helpers = {n for n in dir(tl) if isinstance(getattr(tl, n), JITFunction | InterpretedFunction)}
    assert {"sum", "zeros"} <= helpers  # the scan below would be vacuous otherwise
    for path in sorted(pathlib.Path(__file__).parent.parent.joinpath("kernels").glob("triton_*.py")):
        used = set(re.findall(r"\btl\.(\w+)\(", path.read_text()))
        assert not used & helpers, f"{path.name} calls triton.language jit helpers {sorted(used & helpers)}"


def test_kernels_compile_for_an_h200_without_a_gpu() -> None:
    """The interpreter does not run Triton's compiler; compile a representative set to sm_90 cubins
    (python -m kernels.aot_check does all of them) so compiler-only errors show up here too."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    picks = "|".join(("swiglu fused bfloat16 128->128 {'BLOCK_M': 32,", "prior_guidance bfloat16 D128",
                      "counter_normal", "decode bfloat16", "sum_norm float32 D128"))
    done = subprocess.run([sys.executable, "-m", "kernels.aot_check", "--arch", "90", "--filter", picks],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.count("  ok ") == 5, done.stdout
