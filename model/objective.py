"""One deep-supervision step of GRAM training (docs/GRAM.md section 7.2) as an nn.Module, so DDP can wrap it.

Per step, from the carried (h, l):
- transitions 1..T-1 under no_grad with posterior noise; transition T with grad (eq. 14: only the last
  transition carries gradient; the carry is detached between steps by the caller);
- loss = CE(y | h_T) + beta * KL_bal(q || p) + w_halt * BCE(q_halt) + w_value * MSE(value)  (eqs. 13-16).

Choices the paper leaves open (docs/GRAM.md section 7.3), made here:
- The posterior q(eps | u, y) sees u and a per-position embedding of the target and is a correction of
  the prior (layers.PosteriorHead): mu_q = mu_p + delta, sigma_q = sigma_min + sigma_p * exp(s), zero-
  initialised so q = p at the start. It cannot shortcut for free: every bit it passes about y to the
  decoder goes through eps and is priced by the KL on every element; the decoder sees only h, never y;
  sigma_q is floored (a zero-variance guide overfits, paper 4.4).
- KL is summed over D and averaged over positions and batch; CE is averaged over answer sub-tokens of
  each sequence, then over the batch. beta therefore prices "nats of KL per position" against "nats of
  CE per answer token".
- KL balancing (DreamerV2): 0.8 * KL(sg(q) || p) + 0.2 * KL(q || sg(p)).
- ``carry="prior"`` (the CPU preset): transitions 1..T-1 and the carried state follow the prior, q acts
  only at the last transition of each step. With the paper's posterior carry, q injects the answer into
  h at the first step of an example and every later step just carries it (CE ~ 0, KL ~ 0): only the
  first step of each example teaches the prior. With the prior carry every step does, and training
  sees the states inference will see.
- ``prior_ce`` (the CPU preset, not in the paper): the same CE on the prior sample h_p = u + prior draw
  of the last transition. Measured on this CPU: with KL balancing 0.8 the posterior pays only
  0.2 * beta per nat it passes, so it hands the decoder whole answers (training CE ~ 0.02) while the
  prior, which must predict them from u, learned nothing usable in 35 minutes (N-Queens prior token
  accuracy below the all-empty board's, colouring at chance) at beta = 0.07, 1 and 2. The auxiliary
  term trains the path inference uses as directly as the baseline's loss does; the ELBO terms still
  shape the noise (which mode to pick) on top of it. Not for unconditional MNIST, where the target
  cannot be predicted without the noise: there the term pulls the prior to the mean image (nearly
  blank after argmax), so the MNIST preset sets it to 0.
- Halting and value targets come from the PRIOR rollout of the same u (h_p = u + a prior draw), i.e. what
  inference will see, not the optimistic posterior. Both heads read h_p[:, 0] detached: they train only
  the heads (paper A.1). Halting target: the prior's prediction is valid (task verifier; multi-solution
  tasks accept any solution) or equals y; value target r = 1 if valid else per-token accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kernels import ops
from model import hindsight
from model.gram import GRAM

Verifier = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_pred, x) -> bool[B]


@dataclass
class StepLosses:
    loss: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor
    halt: torch.Tensor
    value: torch.Tensor
    h: torch.Tensor  # carry for the next supervision step (posterior rollout), detached
    l: torch.Tensor
    valid: torch.Tensor  # bool [B]: the prior rollout's prediction is a valid answer
    token_acc: torch.Tensor  # [B]: prior rollout's token accuracy vs y on answer positions
    q_halt: torch.Tensor  # [B] (prior rollout, detached)


def kl_balanced(
    mu_q: torch.Tensor, sigma_q: torch.Tensor, mu_p: torch.Tensor, sigma_p: torch.Tensor, balance: float
) -> torch.Tensor:
    """DreamerV2 KL balancing: ``balance`` of the gradient trains the prior towards the posterior, the
    rest regularises the posterior. Same value as the plain KL; elementwise."""
    to_prior = ops.gaussian_kl(mu_q.detach(), sigma_q.detach(), mu_p, sigma_p)
    to_post = ops.gaussian_kl(mu_q, sigma_q, mu_p.detach(), sigma_p.detach())
    return balance * to_prior + (1.0 - balance) * to_post


class GRAMObjective(nn.Module):
    def __init__(self, model: GRAM, verify: Verifier | None = None) -> None:
        super().__init__()
        self.model = model
        self.verify = verify

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, h: torch.Tensor, l: torch.Tensor,
        generator: torch.Generator | None = None,
        cands: torch.Tensor | None = None, counts: torch.Tensor | None = None,
    ) -> StepLosses:
        """One supervision step from the carry (h, l). With ``cands`` [B, C, L, G] / ``counts`` [B] (valid
        solutions of each input, model.hindsight) the target is, per row, the candidate nearest to the
        prior sample's prediction; otherwise ``y``."""
        m, c = self.model, self.model.config
        e_x = m.encode(x)
        answer = y != 0  # [B, L, G]: PAD targets are not part of the answer
        y_feat = m.embed_target(y) if c.stochastic and c.carry == "posterior" else None

        def early_guide(u: torch.Tensor) -> torch.Tensor:
            # Transitions 1..T-1 follow the same rollout as the carry (see GRAMConfig.carry).
            mu_p, sigma_p, mu_q, sigma_q = m.guidance_params(u, y_feat)
            mu, sigma = (mu_q, sigma_q) if mu_q is not None else (mu_p, sigma_p)
            return u + mu + sigma * _randn_like(u, generator)

        with torch.no_grad():
            for _ in range(c.T - 1):
                h, l = m.transition(h, l, e_x, early_guide)
        # Last transition with gradient (eq. 14).
        for _ in range(c.K):
            l = m.core(l, h, e_x)
        u = m.core(h, l)
        if c.stochastic:
            mu_p, sigma_p = m.prior(u)
            h_p = m.mask_noise(u + mu_p + sigma_p * _randn_like(u, generator), u)
            if c.prior_ce == 0.0:
                h_p = h_p.detach()
        else:
            h_p = u.detach()
        # Halting / value heads (and the hindsight choice) on the prior rollout, detached from the core.
        out_p = m.readout(h_p, heads_grad=False)
        if cands is not None and counts is not None and cands.shape[1] > 1:
            y = hindsight.nearest(out_p.logits, cands, counts, answer)
        if c.stochastic:
            mu_q, sigma_q = m.posterior(u, m.embed_target(y), mu_p, sigma_p)
            h_q = m.mask_noise(u + mu_q + sigma_q * _randn_like(u, generator), u)
            kl_el = kl_balanced(mu_q, sigma_q, mu_p, sigma_p, c.kl_balance).float().sum(-1)  # [B, S]
            if m.noise_mask is not None:  # no noise there, nothing passed: only the noised positions count
                kl_el = kl_el * m.noise_mask
            if c.kl_norm == "answer":
                kl = (kl_el.sum(1) / answer.any(-1).sum(1).clamp_min(1)).mean()
            else:
                kl = kl_el.mean()
        else:
            h_q = u
            kl = u.new_zeros((), dtype=torch.float32)

        logits = m.readout(h_q).logits.float()  # [B, L, G, V]
        ce_tok = F.cross_entropy(logits.flatten(0, 2), y.flatten(), reduction="none").view_as(y)
        n_ans = answer.sum((1, 2)).clamp_min(1)
        ce = ((ce_tok * answer).sum((1, 2)) / n_ans).mean()

        prior_ce = logits.new_zeros(())
        if c.stochastic and c.prior_ce > 0:
            lp = out_p.logits.float()
            tok = F.cross_entropy(lp.flatten(0, 2), y.flatten(), reduction="none").view_as(y)
            prior_ce = ((tok * answer).sum((1, 2)) / n_ans).mean()
        with torch.no_grad():
            pred = out_p.logits.argmax(-1).masked_fill((x == 0).all(-1, keepdim=True), 0)  # as step()
            exact = ((pred == y) | ~answer).all(-1).all(-1)
            valid = exact | self.verify(pred, x).to(exact.device) if self.verify is not None else exact
            token_acc = ((pred == y) & answer).sum((1, 2)) / n_ans
            r = torch.where(valid, torch.ones_like(token_acc), token_acc)
        halt = F.binary_cross_entropy_with_logits(out_p.q_halt.float(), valid.float())
        value = F.mse_loss(torch.sigmoid(out_p.value_logit.float()), r.float())

        loss = ce + c.prior_ce * prior_ce + c.beta * kl + c.halt_weight * halt + c.value_weight * value
        return StepLosses(
            loss=loss, ce=ce.detach(), kl=kl.detach(), halt=halt.detach(), value=value.detach(),
            h=(h_p if c.carry == "prior" else h_q).detach(), l=l.detach(), valid=valid,
            token_acc=token_acc.detach(),
            q_halt=out_p.q_halt.detach().float(),
        )


def _randn_like(u: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)
