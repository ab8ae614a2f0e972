"""The training objective: closed-form KL, gradient truncation, one step lowers the loss."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from kernels import ops
from model.gram import tiny_model
from model.objective import GRAMObjective, kl_balanced
from model.tasks.registry import get_task


def test_closed_form_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    s_q, s_p = torch.rand(4, 6, generator=g) + 0.05, torch.rand(4, 6, generator=g) + 0.05
    ref = kl_divergence(Normal(mu_q, s_q), Normal(mu_p, s_p))
    torch.testing.assert_close(ops.gaussian_kl(mu_q, s_q, mu_p, s_p), ref, rtol=1e-5, atol=1e-6)
    # Balancing changes the gradient split, never the value.
    torch.testing.assert_close(kl_balanced(mu_q, s_q, mu_p, s_p, 0.8), ref, rtol=1e-5, atol=1e-6)


def test_kl_balance_splits_the_gradient_08_to_the_prior() -> None:
    mu_q = torch.tensor([1.0], requires_grad=True)
    mu_p = torch.tensor([0.0], requires_grad=True)
    one = torch.ones(1)
    kl_balanced(mu_q, one, mu_p, one, 0.8).sum().backward()
    # d KL / d mu = +-(mu_q - mu_p) = +-1; the prior gets 0.8 of it, the posterior 0.2.
    torch.testing.assert_close(mu_p.grad, torch.tensor([-0.8]))
    torch.testing.assert_close(mu_q.grad, torch.tensor([0.2]))


def _batch(task_name: str, n: int, seed: int = 0):
    import random

    task = get_task(task_name)
    rng = random.Random(seed)
    pairs = [task.sample_training_pair(rng) for _ in range(n)]
    return task, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def test_no_gradient_reaches_early_transitions() -> None:
    """Only the last of T transitions carries gradient (eq. 14): the incoming carry and everything the
    first T - 1 transitions computed get none."""
    model = tiny_model("graph_coloring", T=3, K=2).train()
    task, x, y = _batch("graph_coloring", 4)
    h, l = model.init_state(4)
    h.requires_grad_(True)
    l.requires_grad_(True)
    seen: list[torch.Tensor] = []
    real_transition = model.transition

    def spy(hh, ll, e_x, guide):  # record what the no-grad transitions produce
        out = real_transition(hh, ll, e_x, guide)
        seen.extend(out)
        return out

    model.transition = spy  # type: ignore[method-assign]
    out = GRAMObjective(model, task.verify)(x, y, h, l)
    out.loss.backward()
    assert len(seen) == 2 * (model.config.T - 1)
    assert all(not t.requires_grad for t in seen)
    assert h.grad is None and l.grad is None
    assert model.core.layers[0].mlp.w_down.grad is not None  # the last transition does train the core
    assert not out.h.requires_grad and not out.l.requires_grad  # the carry is detached


def test_halting_and_value_losses_train_only_their_heads() -> None:
    """Turning the halting and value losses on changes the gradient of their heads and nothing else."""
    task, x, y = _batch("nqueens", 3)
    grads = []
    for weight in (0.0, 1.0):
        model = tiny_model("nqueens", halt_weight=weight, value_weight=weight).train()
        out = GRAMObjective(model, task.verify)(x, y, *model.init_state(3), torch.Generator().manual_seed(3))
        out.loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    heads = {k for k in grads[1] if k.startswith(("halt_head", "value_head"))}
    assert heads and all(not torch.equal(grads[1][k], grads[0].get(k, torch.zeros(1))) for k in heads)
    for k, g in grads[0].items():
        if k not in heads:
            torch.testing.assert_close(grads[1][k], g, msg=k)


def test_one_training_step_lowers_the_loss_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    # Heads off: their targets (is the prior's answer valid?) move with the model, so their loss is not
    # a fixed objective; the ELBO terms are.
    model = tiny_model("graph_coloring", halt_weight=0.0, value_weight=0.0).train()
    task, x, y = _batch("graph_coloring", 8)
    objective = GRAMObjective(model, task.verify)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)  # a warmup-sized first step
    h, l = model.init_state(8)

    def loss() -> torch.Tensor:
        return objective(x, y, h, l, torch.Generator().manual_seed(1)).loss

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before.detach() - 1e-3, (float(before), float(after))


def test_posterior_sees_the_target_and_prior_does_not() -> None:
    model = tiny_model("nqueens").train()
    torch.nn.init.normal_(model.posterior.proj.weight, std=0.1)
    _, x, y = _batch("nqueens", 2)
    u = torch.randn(2, model.config.total_len, model.config.d_model)
    *_, mu_a, _ = model.guidance_params(u, model.embed_target(y))
    *_, mu_b, _ = model.guidance_params(u, model.embed_target(y.flip(0)))
    assert not torch.allclose(mu_a, mu_b)
    # ... and a fresh posterior equals the prior (zero-initialised correction: KL starts at 0).
    fresh = tiny_model("nqueens")
    mu_p, s_p, mu_q, s_q = fresh.guidance_params(u, fresh.embed_target(y))
    torch.testing.assert_close(mu_q, mu_p)
    torch.testing.assert_close(s_q, s_p + fresh.config.sigma_min)


def test_baseline_has_no_kl() -> None:
    model = tiny_model("nqueens", stochastic=False).train()
    task, x, y = _batch("nqueens", 2)
    out = GRAMObjective(model, task.verify)(x, y, *model.init_state(2))
    assert float(out.kl) == 0.0 and torch.isfinite(out.loss)


def test_prior_carry_hides_the_target_from_the_next_step_and_posterior_carry_does_not() -> None:
    _, x, y = _batch("nqueens", 2)
    y_other = torch.where(y == 2, torch.ones_like(y), torch.where(y == 1, torch.full_like(y, 2), y))
    for carry, same in (("prior", True), ("posterior", False)):
        model = tiny_model("nqueens", carry=carry, T=2).train()
        torch.nn.init.normal_(model.posterior.proj.weight, std=0.2)
        objective = GRAMObjective(model)
        h, l = model.init_state(2)
        a = objective(x, y, h, l, torch.Generator().manual_seed(0)).h
        b = objective(x, y_other, h, l, torch.Generator().manual_seed(0)).h
        assert torch.equal(a, b) == same, carry


def test_noise_at_puzzle_prices_the_kl_of_the_puzzle_tokens_only() -> None:
    """noise_at="puzzle": only the P puzzle tokens are noised, so the KL counts only there (averaged over
    all positions, so beta keeps its meaning); the content positions of the carry are u itself."""
    from model.tasks import mnist

    model = tiny_model("mnist", T=1, noise_at="puzzle", posterior="attn", posterior_layers=2,
                       decoder_layers=1, decoder_from_puzzle=True).train()
    torch.nn.init.normal_(model.posterior.out.weight, std=0.2)
    c = model.config
    x = mnist.TASK.blank_input().unsqueeze(0).expand(2, -1, -1)
    y = torch.randint(1, 3, (2, c.seq_len, c.out_group), generator=torch.Generator().manual_seed(0))
    h, l = model.init_state(2)
    out = GRAMObjective(model)(x, y, h, l, torch.Generator().manual_seed(1))
    with torch.no_grad():
        e_x = model.encode(x)
        for _ in range(c.K):
            l = model.core(l, h, e_x)
        u = model.core(h, l)
        mu_p, s_p, mu_q, s_q = model.guidance_params(u, model.embed_target(y))
        kl = ops.gaussian_kl(mu_q, s_q, mu_p, s_p).sum(-1)  # [B, S]
    assert float(kl[:, c.n_puzzle :].sum()) > 0  # the heads would put noise there: the mask removes it
    torch.testing.assert_close(out.kl, kl[:, : c.n_puzzle].sum(1).mean() / c.total_len)
    torch.testing.assert_close(out.h[:, c.n_puzzle :], u[:, c.n_puzzle :])
    out.loss.backward()
    assert model.posterior.extra[0].mlp.w_down.grad is not None
    assert model.decoder_blocks[0].mlp.w_down.grad is not None
    assert model.decoder_latent.weight.grad is not None
