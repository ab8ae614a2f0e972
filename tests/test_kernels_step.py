"""Whole supervision steps: the Triton path (interpreter) and the fused low-level update agree with the
torch path on a small model; the CUDA-graph wrapper's bucketing; the CPU path selection settings."""

from __future__ import annotations

import copy
import dataclasses
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (kernels.backend also does)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels.backend import kernels_mode  # noqa: E402
from model.config import config_for  # noqa: E402
from model.fast_path import cpu_path  # noqa: E402
from model.fast_path.cuda_graphs import GraphedStep, bucket_for, default_buckets  # noqa: E402
from model.fast_path.workload import randomize_zero_heads, step_inputs, step_tokens  # noqa: E402
from model.gram import build_model  # noqa: E402
from model.layers import SelfAttention  # noqa: E402
from model.step_impl import DEFAULT, StepImpl  # noqa: E402
from tests.kernel_fixtures import one_thread, torch_kernels  # noqa: E402, F401


def _small_model(mixer: str) -> torch.nn.Module:
    cfg = config_for("graph_coloring", d_model=32, n_heads=2, n_layers=2, n_puzzle=2, T=1, K=1, mixer=mixer)
    model = build_model(cfg, seed=0).eval()
    randomize_zero_heads(model)  # zero-initialised heads would agree trivially
    return model


def _assert_steps_close(got, want, atol: float = 1e-4) -> None:
    torch.testing.assert_close(got.h, want.h, atol=atol, rtol=1e-4)
    torch.testing.assert_close(got.l, want.l, atol=atol, rtol=1e-4)
    torch.testing.assert_close(got.token_logprob, want.token_logprob, atol=atol, rtol=1e-4)
    torch.testing.assert_close(got.q_halt, want.q_halt, atol=atol, rtol=1e-4)
    assert (got.tokens == want.tokens).float().mean() > 0.99  # only near-ties may flip


@pytest.mark.parametrize("mixer", ["mlp_t", "attn"])
def test_triton_step_and_fused_step_match_the_torch_step(mixer: str) -> None:
    model = _small_model(mixer)
    h, l, e_x, noise = step_inputs(model, 3)
    with kernels_mode("torch"):
        want = model.step(h, l, e_x, noise)
    with kernels_mode("triton"):
        composed = model.step(h, l, e_x, noise)
        fused_model = copy.deepcopy(model).use_impl(StepImpl(fused=True))
        fused = fused_model.step(h, l, e_x, noise)
    with kernels_mode("torch"):
        fused_on_torch = fused_model.step(h, l, e_x, noise)
    _assert_steps_close(composed, want)
    _assert_steps_close(fused, want)
    _assert_steps_close(fused_on_torch, want, atol=1e-5)
    assert fused_model.core.impl.fused and fused_model.impl.fused and not model.core.impl.fused
    with kernels_mode("torch"):
        back = fused_model.use_impl(DEFAULT).step(h, l, e_x, noise)
    assert torch.equal(back.h, want.h)  # the default again: the reference step, bit for bit


def test_prior_temperature_reaches_every_step_path() -> None:
    """NoiseKeys.temperature spreads each slot's trajectory on the torch step, the Triton step, the fused
    step (whose prior kernel reads it per slot), the bf16+compile CPU path and a CUDA-graphed step alike;
    a slot at 1 steps exactly as with none."""
    model = _small_model("attn")
    h, l, e_x, noise = step_inputs(model, 3)
    hot = dataclasses.replace(noise, temperature=torch.tensor([1.0, 3.0, 0.5]))
    with kernels_mode("torch"):
        cold = model.step(h, l, e_x, noise)
        want = model.step(h, l, e_x, hot)
        compiled = cpu_path.make_step(model, "bf16+compile")
        compiled_cold, compiled_hot = compiled(h, l, e_x, noise), compiled(h, l, e_x, hot)
        graphed = GraphedStep(model, buckets=(4,), emulate=True)
        graphed_cold, graphed_hot = graphed(h, l, e_x, noise), graphed(h, l, e_x, hot)
    assert torch.equal(want.h[0], cold.h[0])  # slot 0 at 1: bit for bit
    assert (want.h[1:] - cold.h[1:]).abs().amax((1, 2)).min() > 0.1  # the others spread or narrowed
    with kernels_mode("triton"):
        fused_model = copy.deepcopy(model).use_impl(StepImpl(fused=True))
        _assert_steps_close(model.step(h, l, e_x, hot), want)
        _assert_steps_close(fused_model.step(h, l, e_x, hot), want)
    assert torch.equal(compiled_hot.h[0], compiled_cold.h[0])
    assert (compiled_hot.h[1:] - want.h[1:]).abs().max() < (compiled_cold.h[1:] - want.h[1:]).abs().max()
    _assert_steps_close(graphed_cold, cold)
    _assert_steps_close(graphed_hot, want)


@pytest.mark.usefixtures("torch_kernels")
def test_every_step_path_takes_the_input_tokens() -> None:
    """The runner's paths pass x on to GRAM.step (PAD positions from the tokens) with the same result."""
    model = _small_model("attn")
    h, l, e_x, noise = step_inputs(model, 3)
    x = step_tokens(model, 3)
    want = model.step(h, l, e_x, noise)
    graphed = GraphedStep(model, buckets=(4,), emulate=True)
    for step in (model.step, cpu_path.make_step(model, "bf16"), graphed):
        without, with_x = step(h, l, e_x, noise), step(h, l, e_x, noise, x)
        assert torch.equal(with_x.tokens, without.tokens) and torch.equal(with_x.h, without.h)
    _assert_steps_close(graphed(h, l, e_x, noise, x), want)
    assert graphed.captures == 2  # with and without tokens: one graph each


def test_a_slot_steps_the_same_alone_or_in_a_batch_on_the_triton_path() -> None:
    model = _small_model("attn")
    h, l, e_x, noise = step_inputs(model, 4)
    with kernels_mode("triton"):
        batch = model.step(h, l, e_x, noise)
        alone = model.step(h[2:3], l[2:3], e_x[2:3],
                           type(noise)(noise.seed[2:3], noise.traj[2:3], noise.step[2:3]))
    torch.testing.assert_close(alone.h[0], batch.h[2], atol=1e-5, rtol=1e-5)


def test_buckets() -> None:
    assert default_buckets(100) == (8, 16, 32, 64, 100)
    assert default_buckets(64) == (8, 16, 32, 64)
    assert default_buckets(4) == (4,)
    assert bucket_for(1, (8, 16)) == 8
    assert bucket_for(8, (16, 8)) == 8
    assert bucket_for(9, (8, 16)) == 16
    assert bucket_for(17, (8, 16)) is None
    with pytest.raises(ValueError):
        bucket_for(0, (8,))


def test_graphed_step_pads_to_buckets_and_returns_the_real_rows() -> None:
    model = _small_model("attn")
    h, l, e_x, noise = step_inputs(model, 7)
    graphed = GraphedStep(model, buckets=(4, 8), emulate=True)
    with kernels_mode("torch"):
        want = model.step(h, l, e_x, noise)
        got = graphed(h, l, e_x, noise)
        sub = type(noise)(noise.seed[:3], noise.traj[:3], noise.step[:3])
        got3 = graphed(h[:3], l[:3], e_x[:3], sub)
        got3_again = graphed(h[:3], l[:3], e_x[:3], sub)
    assert graphed.captures == 2  # buckets 8 and 4, each captured once
    assert got.h.shape == want.h.shape and got.tokens.shape == want.tokens.shape
    torch.testing.assert_close(got.h, want.h)
    torch.testing.assert_close(got3.h, want.h[:3])
    assert torch.equal(got3.tokens, got3_again.tokens)
    assert got3.h.data_ptr() != got3_again.h.data_ptr()  # returned rows do not alias the static buffers


def test_graphed_step_runs_eagerly_beyond_the_largest_bucket_and_passes_through_on_cpu() -> None:
    model = _small_model("attn")
    h, l, e_x, noise = step_inputs(model, 5)
    graphed = GraphedStep(model, buckets=(2, 4), emulate=True)
    with kernels_mode("torch"):
        out = graphed(h, l, e_x, noise)
    assert graphed.eager_calls == 1 and graphed.captures == 0 and out.h.shape[0] == 5
    plain = GraphedStep(model)  # a CPU model: disabled, pure pass-through
    assert not plain.enabled
    with kernels_mode("torch"):
        torch.testing.assert_close(plain(h, l, e_x, noise).h, out.h)


def test_cpu_path_setting_overrides_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _small_model("attn")
    monkeypatch.setenv("GRAM_CPU_PATH", "bf16")
    assert cpu_path.choose(model, 4) == ("bf16", [])
    monkeypatch.setenv("GRAM_CPU_PATH", "gpu")
    with pytest.raises(ValueError, match="GRAM_CPU_PATH"):
        cpu_path.choose(model, 4)


@pytest.mark.usefixtures("torch_kernels")
def test_cpu_path_measures_and_picks_the_fastest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GRAM_CPU_PATH", raising=False)
    monkeypatch.setenv("GRAM_CPU_PATH_CACHE", str(tmp_path / "cpu_path.json"))  # nothing recorded yet
    model = _small_model("attn")
    path, figures = cpu_path.choose(model, 4, paths=("fp32", "bf16"), repeats=1)
    assert {f.path for f in figures} == {"fp32", "bf16"}
    assert path == min(figures, key=lambda f: f.step_s).path
    assert all(f.step_s > 0 and f.model_gflops > 0 for f in figures)


@pytest.mark.usefixtures("torch_kernels")
def test_bf16_path_keeps_the_engine_dtype_and_stays_close() -> None:
    model = _small_model("attn")
    h, l, e_x, noise = step_inputs(model, 3)
    want = model.step(h, l, e_x, noise)
    got = cpu_path.make_step(model, "bf16")(h, l, e_x, noise)
    assert got.h.dtype == torch.float32 and got.l.dtype == torch.float32
    assert (got.h - want.h).abs().max() < 0.25  # bf16 over a whole step: close, not equal
    assert next(model.parameters()).dtype == torch.float32  # the engine's model is left untouched


@pytest.mark.usefixtures("torch_kernels")
def test_bf16_compile_path_matches_bf16_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAM_CPU_PATH", "bf16+compile")
    model = _small_model("attn")
    assert cpu_path.choose(model, 4) == ("bf16+compile", [])
    h, l, e_x, noise = step_inputs(model, 3)
    eager = cpu_path.make_step(model, "bf16")(h, l, e_x, noise)
    got = cpu_path.make_step(model, "bf16+compile")(h, l, e_x, noise)
    assert got.h.dtype == torch.float32 and got.l.dtype == torch.float32
    assert (got.h - eager.h).abs().max() < 0.1  # same bf16 math, fused differently by inductor
    assert (got.tokens == eager.tokens).float().mean() >= 0.9  # argmax may flip on near-ties only


@pytest.mark.usefixtures("torch_kernels")
def test_compiled_path_never_compiles_on_an_engine_step() -> None:
    """make_step builds every graph the engine needs (batch 1, and batches >= 2 under inference_mode), so
    a lone width-1 request or the first full batch never waits for a compilation."""
    import torch._dynamo

    model = _small_model("attn")
    for with_tokens in (False, True):  # a caller that passes the input tokens x, and one that does not
        step = cpu_path.make_step(model, "bf16+compile", tokens=with_tokens)
        with torch._dynamo.config.patch(error_on_recompile=True):  # restores the setting
            for batch, engine_made in ((1, True), (3, True), (7, False), (1, False), (5, True)):
                tokens = (step_tokens(model, batch),) if with_tokens else ()
                if engine_made:  # the engine makes its slot tensors and noise keys under inference_mode
                    with torch.inference_mode():
                        out = step(*step_inputs(model, batch), *tokens)
                else:  # a measurement or a test makes them outside it
                    out = step(*step_inputs(model, batch), *tokens)
                assert out.h.shape[0] == batch


def test_compile_transition_uses_the_short_attention_on_its_copy_only() -> None:
    model = _small_model("attn")
    compiled = cpu_path.compile_transition(copy.deepcopy(model))
    attention = [m for m in compiled.modules() if isinstance(m, SelfAttention)]
    assert attention and all(m.impl.short_attention for m in attention)
    assert not any(m.impl.short_attention for m in model.modules() if isinstance(m, SelfAttention))


def test_compiled_decode_matches_the_eager_one() -> None:
    """bf16+compile also compiles the step's decode (readout, argmax, log-probability, PAD mask, heads):
    on the same state it must give the eager decode's tokens and PAD rows, and its scores."""
    model = _small_model("attn").to(torch.bfloat16)
    compiled = cpu_path.compile_transition(copy.deepcopy(model))
    h, _, _, _ = step_inputs(model, 5)
    x = step_tokens(model, 5)
    x[1:3, -4:] = 0  # absent nodes
    with torch.inference_mode():
        h, e_x = h.to(torch.bfloat16).clone(), model.encode(x).clone()
        assert model.pad_mask(x).any()
        eager = model.decode(h, e_x)
        got = compiled.decode(h, e_x)
        assert torch.equal(compiled.decode(h, e_x, x)[0], got[0])  # PAD rows from the tokens: the same
    assert torch.equal(got[0], eager[0])  # tokens, PAD rows included
    for a, b in zip(got[1:], eager[1:], strict=True):  # token log-probs, q_halt, value
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.usefixtures("torch_kernels")
def test_runner_on_cpu_follows_the_cpu_path_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from model.fast_path.runner import make_runner

    monkeypatch.setenv("GRAM_CPU_PATH", "fp32")
    model = _small_model("attn")
    step, how = make_runner(model, batch_hint=4)
    assert how == "cpu+fp32"
    h, l, e_x, noise = step_inputs(model, 3)
    torch.testing.assert_close(step(h, l, e_x, noise).h, model.step(h, l, e_x, noise).h)


def test_bf16_model_finds_the_same_pad_rows_as_fp32() -> None:
    """The bf16 path encodes nothing itself: it gets the fp32 e_x rounded to bf16, and must still read
    off-board rows as PAD (a fixed tolerance missed all of them, so no N-Queens answer verified)."""
    from model.gram import tiny_model
    from model.tasks.registry import get_task

    model = tiny_model("nqueens").eval()
    x = get_task("nqueens").parse({"n": 6, "queens": [[0, 1]]}).x.unsqueeze(0)
    e_x = model.encode(x)
    want = model.pad_positions(e_x)
    assert want[0, 6:].all() and not want[0, :6].any()  # rows 6..11 are off a 6x6 board
    low = copy.deepcopy(model).to(torch.bfloat16)
    assert torch.equal(low.pad_positions(e_x.to(torch.bfloat16)), want)
