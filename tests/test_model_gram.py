"""The GRAM network and its inference interface (README "Model inference interface")."""

from __future__ import annotations

import pytest
import torch

from kernels import ops
from model.config import GRAMConfig, config_for
from model.gram import GRAM, NoiseKeys, StepOutput, build_model, tiny_config, tiny_model

TASKS = ["sudoku", "nqueens", "graph_coloring", "mnist"]


def keys(seeds: list[int], trajs: list[int], step: int = 0) -> NoiseKeys:
    n = len(seeds)
    return NoiseKeys(torch.tensor(seeds), torch.tensor(trajs), torch.full((n,), step, dtype=torch.long))


def blank_x(cfg: GRAMConfig, batch: int) -> torch.Tensor:
    return torch.ones(batch, cfg.seq_len, cfg.in_group, dtype=torch.long)


@pytest.mark.parametrize("task", TASKS)
def test_shapes_of_every_output(task: str) -> None:
    model = tiny_model(task)
    c = model.config
    e_x = model.encode(blank_x(c, 3))
    assert e_x.shape == (3, c.n_puzzle + c.seq_len, c.d_model)
    h, l = model.init_state(3)
    assert h.shape == l.shape == e_x.shape
    out = model.step(h, l, e_x, keys([1, 1, 2], [0, 1, 0]))
    assert isinstance(out, StepOutput)
    assert out.h.shape == out.l.shape == e_x.shape
    assert out.tokens.shape == (3, c.seq_len, c.out_group) and out.tokens.dtype == torch.int64
    assert out.token_logprob.shape == out.tokens.shape and out.token_logprob.dtype == torch.float32
    assert (out.token_logprob <= 0).all()
    assert out.q_halt.shape == (3,) and out.value.shape == (3,)
    assert ((out.value >= 0) & (out.value <= 1)).all()
    assert int(out.tokens.max()) < c.out_vocab


def test_encode_rejects_wrong_shape() -> None:
    model = tiny_model("nqueens")
    with pytest.raises(ValueError, match=r"\[B, 12, 1\]"):
        model.encode(torch.ones(2, 81, 1, dtype=torch.long))


def test_init_state_is_the_stored_z0_and_writable() -> None:
    model = tiny_model("sudoku")
    h, l = model.init_state(2)
    assert torch.equal(h[1, 5], model.z0[0]) and torch.equal(l[0, 0], model.z0[1])
    h[0] += 1  # fresh storage: writing a slot must not change z0
    assert torch.equal(model.init_state(1)[0][0, 0], model.z0[0])


def test_seeded_step_is_reproducible_and_independent_of_batch() -> None:
    model = tiny_model("nqueens")
    c = model.config
    x = torch.randint(1, 3, (4, c.seq_len, c.in_group))
    e_x = model.encode(x)
    h, l = model.init_state(4)
    full = model.step(h, l, e_x, keys([7, 8, 7, 9], [0, 0, 1, 3], step=2))
    again = model.step(h, l, e_x, keys([7, 8, 7, 9], [0, 0, 1, 3], step=2))
    assert torch.equal(full.h, again.h)
    # Row 2 alone, and in a batch shuffled with other slots, gives the same h as in the full batch.
    alone = model.step(h[2:3], l[2:3], e_x[2:3], keys([7], [1], step=2))
    torch.testing.assert_close(alone.h[0], full.h[2], rtol=1e-5, atol=1e-5)
    order = [3, 2, 0]
    mixed = model.step(h[order], l[order], e_x[order], keys([9, 7, 7], [3, 1, 0], step=2))
    torch.testing.assert_close(mixed.h[1], full.h[2], rtol=1e-5, atol=1e-5)
    assert torch.equal(mixed.tokens[1], full.tokens[2])


def test_noise_depends_on_seed_traj_and_step() -> None:
    model = tiny_model("graph_coloring", sigma_init=0.5)
    c = model.config
    e_x = model.encode(blank_x(c, 1).expand(4, -1, -1))
    h, l = model.init_state(4)
    out = model.step(h, l, e_x, NoiseKeys(torch.tensor([1, 2, 1, 1]), torch.tensor([0, 0, 1, 0]),
                                          torch.tensor([0, 0, 0, 1])))
    for i in range(1, 4):
        assert not torch.allclose(out.h[0], out.h[i]), f"slot {i} drew the same noise as slot 0"


def test_guidance_uses_counter_step_times_T_plus_t() -> None:
    """Transition t of supervision step n draws counter n * T + t (README noise contract)."""
    model = tiny_model("graph_coloring", sigma_init=0.5)
    c = model.config
    e_x = model.encode(blank_x(c, 1))
    h, l = model.init_state(1)
    seed, traj, n = torch.tensor([5]), torch.tensor([3]), 4
    out = model.step(h, l, e_x, NoiseKeys(seed, traj, torch.tensor([n])))
    with torch.no_grad():  # replay by hand with the kernel's noise stream
        hh, ll = h, l
        for t in range(c.T):
            for _ in range(c.K):
                ll = model.core(ll, hh, e_x)
            u = model.core(hh, ll)
            mu, sigma = model.prior(u)
            eps = ops.counter_normal(seed, traj, torch.tensor([n * c.T + t]), u[0].numel()).view_as(u)
            hh = u + mu + sigma * eps
    torch.testing.assert_close(out.h, hh)


def test_deterministic_baseline_ignores_noise() -> None:
    model = tiny_model("nqueens", stochastic=False)
    c = model.config
    e_x = model.encode(blank_x(c, 2))
    h, l = model.init_state(2)
    out = model.step(h, l, e_x, keys([1, 2], [0, 5]))
    torch.testing.assert_close(out.h[0], out.h[1])


def test_build_model_is_deterministic_in_seed() -> None:
    cfg = tiny_config("sudoku")
    a, b, c = build_model(cfg, seed=3), build_model(cfg, seed=3), build_model(cfg, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


@pytest.mark.parametrize("mixer", ["attn", "mlp_t"])
def test_both_mixers_run_and_differ(mixer: str) -> None:
    model = GRAM(config_for("sudoku", d_model=32, n_heads=2, n_layers=1, n_puzzle=2, T=1, K=1, mixer=mixer))
    e_x = model.encode(blank_x(model.config, 2))
    assert torch.isfinite(model.step(*model.init_state(2), e_x, keys([0, 0], [0, 1])).h).all()


def test_config_validation_and_json_round_trip() -> None:
    cfg = config_for("nqueens", d_model=48, n_heads=4, stochastic=False)
    assert GRAMConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="mixer"):
        config_for("nqueens", mixer="conv")
    with pytest.raises(ValueError, match="divisible"):
        config_for("nqueens", d_model=30, n_heads=4)
    with pytest.raises(KeyError, match="unknown task"):
        config_for("chess")


def test_bf16_model_steps() -> None:
    model = tiny_model("nqueens").to(torch.bfloat16)
    c = model.config
    e_x = model.encode(blank_x(c, 2))
    h, l = model.init_state(2)
    out = model.step(h, l, e_x, keys([1, 1], [0, 1]))
    assert out.h.dtype == torch.bfloat16 and out.token_logprob.dtype == torch.float32


def test_grid_positions_factor_into_rows_columns_and_boxes() -> None:
    model = tiny_model("sudoku", positions="grid")
    grid = model.grid_pos
    assert grid is not None and set(grid.names) == {"row", "col", "diag", "anti", "box"}
    with torch.no_grad():
        grid.diag_emb.zero_()
        grid.anti_emb.zero_()
        grid.box_emb.zero_()
        pos = grid().view(9, 9, -1)
    # Rows and columns are shared factors: moving one column changes every row the same way.
    torch.testing.assert_close(pos[0, 3] - pos[0, 5], pos[7, 3] - pos[7, 5])
    with pytest.raises(ValueError, match="square"):
        GRAMConfig("toy", seq_len=10, in_group=1, in_vocab=3, out_group=1, out_vocab=3, positions="grid")


def test_all_pad_input_positions_decode_to_pad() -> None:
    """Off-board cells (N-Queens n < 12) and absent nodes decode to PAD, as the verifiers require."""
    from model.tasks.nqueens import placement_tokens

    model = tiny_model("nqueens")
    x = torch.stack([placement_tokens(6, {0: 1}), placement_tokens(12, {})])
    out = model.step(*model.init_state(2), model.encode(x), keys([0, 0], [0, 1]))
    off_board = x[..., 0] == 0
    assert bool((out.tokens[off_board] == 0).all()) and bool((out.token_logprob[off_board] == 0).all())
    raw = model.readout(out.h).logits.argmax(-1)  # on-board cells keep the decoder's own choice
    assert torch.equal(out.tokens[~off_board], raw[~off_board])
    assert bool((raw[off_board] != 0).any()), "the probe needs an untrained decoder that guesses non-PAD"
    assert int(off_board[1].sum()) == 0


@pytest.mark.parametrize("task", TASKS)
def test_the_pad_mask_comes_from_the_tokens_and_agrees_with_the_embedding(task: str) -> None:
    """step(..., x) masks the all-PAD positions of the tokens (exact); without x it reads them off e_x.
    Both give the same step, in fp32 and bf16."""
    model = tiny_model(task)
    c = model.config
    x = torch.randint(1, c.in_vocab, (3, c.seq_len, c.in_group), generator=torch.Generator().manual_seed(0))
    x[0, -2:] = 0  # all-PAD positions
    x[1, :1, :1] = 0  # one PAD sub-token is not a PAD position (groups of several sub-tokens)
    want = torch.zeros(3, c.seq_len, dtype=torch.bool)
    want[0, -2:] = True
    want[1, 0] = c.in_group == 1
    assert torch.equal(model.pad_mask(x), want)
    for net in (model, tiny_model(task).to(torch.bfloat16)):
        e_x = net.encode(x)
        assert torch.equal(net.pad_positions(e_x), want)
        h, l = net.init_state(3)
        with_x = net.step(h, l, e_x, keys([1, 2, 3], [0, 1, 2]), x)
        without = net.step(h, l, e_x, keys([1, 2, 3], [0, 1, 2]))
        for field in ("h", "tokens", "token_logprob", "q_halt", "value"):
            assert torch.equal(getattr(with_x, field), getattr(without, field)), field
        assert bool((with_x.tokens[want] == 0).all())


def test_the_torch_only_copy_of_the_token_layouts_matches_the_task_modules() -> None:
    """model.config.KNOWN_SPECS stands in for the task modules where pydantic is missing (a GPU box)."""
    from model.config import KNOWN_SPECS, spec_for
    from model.tasks.registry import TASKS

    assert set(KNOWN_SPECS) == set(TASKS)
    for name in TASKS:
        assert KNOWN_SPECS[name] == spec_for(name), name


def test_default_config_keeps_the_linear_decoder_and_noise_everywhere() -> None:
    """The options that came later default to the first checkpoints' network: no new tensors, so their
    checkpoints load unchanged (strictly) and step as before."""
    model = tiny_model("mnist")
    assert model.decoder_blocks is None and model.noise_mask is None and model.decoder_latent is None
    new = ("decoder_blocks", "decoder_latent", "posterior.extra")
    assert not any(k.startswith(new) for k in model.state_dict())
    grown = tiny_model("mnist", decoder_layers=1, noise_at="puzzle", posterior="attn", posterior_layers=2,
                       decoder_from_puzzle=True)
    assert any(k.startswith("decoder_blocks.0.") for k in grown.state_dict())
    assert "decoder_latent.weight" in grown.state_dict()
    assert any(k.startswith("posterior.extra.0.") for k in grown.state_dict())
    with pytest.raises(ValueError, match="posterior='attn'"):
        config_for("mnist", noise_at="puzzle")
    with pytest.raises(ValueError, match="noise_at"):
        config_for("mnist", noise_at="content", posterior="attn")
    with pytest.raises(ValueError, match="decoder_layers"):
        config_for("mnist", decoder_layers=-1)


def test_noise_at_puzzle_leaves_the_content_positions_deterministic() -> None:
    """noise_at="puzzle": h = u + eps at the P puzzle tokens only; two seeds give the same content
    positions after one transition, different puzzle tokens, and a seed repeats bit for bit."""
    model = tiny_model("mnist", T=1, noise_at="puzzle", posterior="attn", sigma_init=0.5)
    c = model.config
    e_x = model.encode(blank_x(c, 2))
    h, l = model.init_state(2)
    out = model.step(h, l, e_x, keys([1, 2], [0, 0]))
    assert torch.equal(out.h[0, c.n_puzzle :], out.h[1, c.n_puzzle :])
    assert not torch.allclose(out.h[0, : c.n_puzzle], out.h[1, : c.n_puzzle])
    again = model.step(h, l, e_x, keys([1, 2], [0, 0]))
    assert torch.equal(out.h, again.h) and torch.equal(out.tokens, again.tokens)
    # Later transitions spread the puzzle tokens' noise over the content (the core attends to them).
    deep = tiny_model("mnist", T=2, noise_at="puzzle", posterior="attn", sigma_init=0.5)
    out = deep.step(*deep.init_state(2), deep.encode(blank_x(c, 2)), keys([1, 2], [0, 0]))
    assert not torch.allclose(out.h[0, c.n_puzzle :], out.h[1, c.n_puzzle :])


def test_decoder_blocks_mix_space_and_the_linear_decoder_does_not() -> None:
    """With decoder_layers a position's logits depend on the other positions of h (and the puzzle
    tokens); the linear head reads each position alone."""
    for layers, mixes in ((0, False), (2, True)):
        model = tiny_model("mnist", decoder_layers=layers)
        c = model.config
        h = torch.randn(1, c.total_len, c.d_model, generator=torch.Generator().manual_seed(0))
        moved = h.clone()
        moved[0, 0] += 1.0  # a puzzle token
        moved[0, c.n_puzzle + 5] += 1.0  # content position 5
        a, b = model.readout(h).logits, model.readout(moved).logits
        assert not torch.allclose(a[0, 5], b[0, 5])
        assert (not torch.allclose(a[0, 20], b[0, 20])) == mixes, layers


def test_decoder_from_puzzle_maps_the_puzzle_tokens_to_every_patch() -> None:
    """decoder_from_puzzle: a linear map of the puzzle tokens (the global latent) reaches every content
    position's logits, even with no decoder blocks; the content positions still do not mix."""
    model = tiny_model("mnist", decoder_from_puzzle=True)
    c = model.config
    h = torch.randn(1, c.total_len, c.d_model, generator=torch.Generator().manual_seed(0))
    latent, content = h.clone(), h.clone()
    latent[0, 1] += 1.0
    content[0, c.n_puzzle + 5] += 1.0
    base = model.readout(h).logits
    assert all(not torch.allclose(base[0, j], model.readout(latent).logits[0, j]) for j in (0, 20, 48))
    moved = model.readout(content).logits
    assert not torch.allclose(base[0, 5], moved[0, 5]) and torch.allclose(base[0, 20], moved[0, 20])
