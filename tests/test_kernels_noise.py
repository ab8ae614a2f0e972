"""In-kernel Philox noise: bit-identical integers to the reference, normals to float tolerance, and a
slot's noise is a function of its own (seed, trajectory, counter) only."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (kernels.backend also does)

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels import ops, reference  # noqa: E402
from tests.kernel_fixtures import one_thread, triton_mode  # noqa: E402, F401

SEED = torch.tensor([0, 1, 2**40 + 5, 7, 2**62 + 3])
TRAJ = torch.tensor([0, 3, 2**33, 1, 9])
COUNTER = torch.tensor([0, 5, 2**32 - 1, 6, 0])


def _reference_words(
    seed: torch.Tensor, traj: torch.Tensor, counter: torch.Tensor, blocks: int
) -> torch.Tensor:
    m = reference._MASK32
    s, t, c = seed.view(-1, 1), traj.view(-1, 1), counter.view(-1, 1)
    c0 = torch.arange(blocks).view(1, -1)
    words = reference.philox4x32(c0, c & m, (s >> 32) & m, (t >> 32) & m, s & m, t & m)
    return torch.stack(torch.broadcast_tensors(*words), dim=-1)


def test_philox_words_are_bit_identical_to_the_reference() -> None:
    from kernels.backend import enable_interpreter

    enable_interpreter()
    from kernels import triton_guidance

    got = triton_guidance.philox_words(SEED, TRAJ, COUNTER, 300)
    assert torch.equal(got, _reference_words(SEED, TRAJ, COUNTER, 300))


def test_philox_matches_the_published_known_answer() -> None:
    """Random123's kat_vectors for philox4x32_10 with all-zero counter and key."""
    words = reference.philox4x32(*(torch.zeros(1, dtype=torch.int64) for _ in range(6)))
    assert [int(w) for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("numel", [1, 7, 1030])
def test_counter_normal_matches_reference(numel: int) -> None:
    got = ops.counter_normal(SEED, TRAJ, COUNTER, numel)
    want = reference.counter_normal(SEED, TRAJ, COUNTER, numel)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_noise_is_reproducible_and_independent_of_batch_position() -> None:
    full = ops.counter_normal(SEED, TRAJ, COUNTER, 517)
    again = ops.counter_normal(SEED, TRAJ, COUNTER, 517)
    assert torch.equal(full, again)
    perm = torch.tensor([3, 0, 4, 2, 1])
    shuffled = ops.counter_normal(SEED[perm], TRAJ[perm], COUNTER[perm], 517)
    assert torch.equal(shuffled, full[perm])
    alone = ops.counter_normal(SEED[2:3], TRAJ[2:3], COUNTER[2:3], 517)
    assert torch.equal(alone[0], full[2])


def test_each_key_changes_the_noise() -> None:
    s, t, c = SEED[:1], TRAJ[:1], COUNTER[:1]
    base = ops.counter_normal(s, t, c, 64)
    changed = ((s + 1, t, c), (s, t + 1, c), (s, t, c + 1), (s + 2**32, t, c), (s, t + 2**32, c))
    for seed, traj, counter in changed:
        other = ops.counter_normal(seed, traj, counter, 64)
        assert not torch.allclose(base, other)


def test_noise_looks_standard_normal() -> None:
    z = ops.counter_normal(torch.arange(8), torch.arange(8), torch.zeros(8, dtype=torch.int64), 4096)
    assert abs(z.mean().item()) < 0.02
    assert abs(z.std().item() - 1.0) < 0.02
    assert torch.isfinite(z).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_guidance_matches_reference_on_strided_heads(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    u = torch.randn(5, 6, 37).to(dtype)
    proj = torch.randn(5, 6, 74).to(dtype)  # mu and sigma are halves of one projection, as in the model
    mu, sigma = proj[..., :37], proj[..., 37:].abs()
    got = ops.guidance(u, mu, sigma, SEED, TRAJ, COUNTER)
    want = reference.guidance(u, mu, sigma, SEED, TRAJ, COUNTER)
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=2e-2)
    torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("hot", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length,dim", [(7, 37), (18, 64)])
def test_prior_guidance_matches_the_composed_head(
    dtype: torch.dtype, length: int, dim: int, hot: bool
) -> None:
    torch.manual_seed(1)
    u = torch.randn(5, length, dim).to(dtype)
    weight = (torch.randn(2 * dim, dim) / dim**0.5).to(dtype)
    bias = (torch.randn(2 * dim) * 2).to(dtype)  # sigma spans softplus' curve, incl. the x > 20 branch
    bias[dim] = 25.0
    temperature = torch.tensor([1.0, 2.5, 0.5, 1.3, 3.0]) if hot else None  # per slot
    got = ops.prior_guidance(u, weight, bias, 1e-3, SEED, TRAJ, COUNTER, temperature)
    want = reference.prior_guidance(u, weight, bias, 1e-3, SEED, TRAJ, COUNTER, temperature)
    bf16_atol = 0.75 if hot else 0.25  # a slot at temperature 3 draws three times the spread
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=bf16_atol, rtol=2e-2)
    torch.testing.assert_close(got, want, **tol)


def test_prior_temperature_scales_only_the_noise_of_its_slot() -> None:
    """h = u + mu + temperature * sigma * eps: the same draw, spread by each slot's temperature; a slot at
    1 steps exactly as with no temperature at all."""
    torch.manual_seed(2)
    dim = 16
    u = torch.randn(5, 3, dim)
    weight, bias = torch.randn(2 * dim, dim) / dim**0.5, torch.randn(2 * dim)
    mu = torch.nn.functional.linear(u, weight, bias)[..., :dim]
    temperature = torch.tensor([1.0, 2.5, 1.0, 0.5, 3.0])
    base = ops.prior_guidance(u, weight, bias, 1e-3, SEED, TRAJ, COUNTER)
    hot = ops.prior_guidance(u, weight, bias, 1e-3, SEED, TRAJ, COUNTER, temperature)
    assert (base - u - mu).abs().mean() > 0.1
    spread = temperature.view(-1, 1, 1) * (base - u - mu)
    torch.testing.assert_close(hot - u - mu, spread, atol=1e-4, rtol=1e-4)
    assert torch.equal(hot[[0, 2]], base[[0, 2]])


def test_guidance_rejects_a_key_count_that_does_not_match_the_batch() -> None:
    u = torch.zeros(3, 2, 4)
    with pytest.raises(ValueError, match="seed has 5 entries for 3 slots"):
        ops.guidance(u, u, u, SEED, TRAJ, COUNTER)
