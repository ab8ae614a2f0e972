"""The GRAM network (arXiv 2605.19376; docs/GRAM.md) and its inference interface.

    e_x = f_enc(x)                                       (eq. 1)   once per request
    one transition z_{t-1} -> z_t:                       (eqs. 6-9)
        l <- f_L(l, h + e_x)   K times                   (eq. 7)
        u  = f_H(h, l)                                   (eq. 8)
        eps ~ N(mu(u), sigma(u)^2)  (prior at inference, posterior q(eps | u, y) in training)
        h  = u + eps                                     (eq. 9)   noise on h only
    one supervision step = T transitions, then the decoder reads h (eq. 2) and the heads read h[:, 0].

The engine calls ``encode``, ``init_state`` and ``step`` (README "Model inference interface"); the trainer
uses ``transition`` and ``readout`` directly. How a step is computed fast (fused kernels, compiled CPU
paths, CUDA graphs) is model/fast_path's business, through ``use_impl`` (model/step_impl.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kernels import ops
from model.config import GRAMConfig, config_for
from model.layers import (
    AttentionPosteriorHead,
    Block,
    GaussianHead,
    GridPositions,
    PosteriorHead,
    ReasoningModule,
)
from model.step_impl import DEFAULT, StepImpl

PAD = 0  # token 0 is PAD in every family's input and output (README "Tokens"; model/tasks/base.py)


@dataclass
class NoiseKeys:
    """Per-slot noise stream keys, int64 [B] each. Transition t of supervision step n of a slot draws
    kernels.reference.counter_normal(seed, traj, n * T + t), so a trajectory never depends on its batch."""

    seed: torch.Tensor
    traj: torch.Tensor
    step: torch.Tensor
    # Not a key: each slot's prior temperature (float [B]), multiplying the prior's sigma when the step
    # samples. None: 1 for every slot, the trained prior. Above 1 the trajectories spread further: more
    # distinct puzzles solved at a given width, each trajectory a little less accurate (BENCHMARKS.md).
    # Training never sets it. sigma * 1.0 is exact, so a slot at 1 steps bit for bit as with None.
    temperature: torch.Tensor | None = None

    def with_unit_temperature(self, batch: int, device: torch.device) -> NoiseKeys:
        """These keys with a temperature of 1 per slot where they have none: the same numbers (sigma * 1
        is exact), and one shape of inputs for a compiled or CUDA-graphed step, given a temperature or not."""
        if self.temperature is None:
            return dataclasses.replace(self, temperature=torch.ones(batch, device=device))
        return self


def served_temperature(model: Any, override: float | None = None) -> float:
    """The prior temperature a model is sampled at by default: ``override`` (a server setting, a CLI flag)
    when given, else the checkpoint's recommendation (its card's ``prior_temperature``, measured per
    checkpoint), else 1, the trained prior."""
    if override is not None:
        return float(override)
    return float((getattr(model, "card", None) or {}).get("prior_temperature", 1.0))


def served_halting(model: Any, override: bool | None = None) -> bool:
    """Whether a trajectory retires when the model's halting head says stop (q_halt > 0): ``override``
    (a server setting, a CLI flag) when given, else the checkpoint's card (``use_halting``, measured per
    checkpoint: a head that fires early on wrong answers costs answers), else true."""
    if override is not None:
        return bool(override)
    return bool((getattr(model, "card", None) or {}).get("use_halting", True))


@dataclass
class StepOutput:
    h: torch.Tensor  # [B, P + L, D]
    l: torch.Tensor  # [B, P + L, D]
    tokens: torch.Tensor  # int64 [B, L, G_out]
    token_logprob: torch.Tensor  # f32 [B, L, G_out]
    q_halt: torch.Tensor  # f32 [B], halting logit: halt when > 0
    value: torch.Tensor  # f32 [B], LPRM: expected accuracy in [0, 1]


@dataclass
class Readout:
    logits: torch.Tensor  # [B, L, G_out, V_out]
    q_halt: torch.Tensor  # [B]
    value_logit: torch.Tensor  # [B]


# Maps u to h = u + eps (one draw). Lets one transition() serve prior, posterior and the baseline.
Guide = Callable[[torch.Tensor], torch.Tensor]


class GRAM(nn.Module):
    impl: StepImpl = DEFAULT  # how this copy computes a step (use_impl); the default is the reference

    def __init__(self, config: GRAMConfig, card: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = config
        self.card: dict[str, Any] = dict(card or {})
        c = config
        d = c.d_model
        # Encoder (eq. 1): sum of per-sub-index token embeddings, positions, P learned puzzle tokens.
        self.tok_emb = nn.Embedding(c.in_group * c.in_vocab, d)
        nn.init.trunc_normal_(self.tok_emb.weight, std=1.0 / math.sqrt(d))
        self.puzzle_emb = nn.Parameter(torch.zeros(c.n_puzzle, d))  # zero-init as TRM
        if c.positions == "grid":
            self.pos_emb = nn.Parameter(torch.randn(c.n_puzzle, d) / math.sqrt(d))  # puzzle tokens only
            self.grid_pos: GridPositions | None = GridPositions(c.seq_len, d)
        else:
            self.pos_emb = nn.Parameter(torch.randn(c.total_len, d) / math.sqrt(d))
            self.grid_pos = None
        self.register_buffer(
            "in_offsets", torch.arange(c.in_group, dtype=torch.long) * c.in_vocab, persistent=False
        )
        self.core = ReasoningModule(c)
        # z0 = (h0, l0) drawn once from N(0, I) (truncated) and stored in the checkpoint (eq. 12, paper B.1):
        # one D-vector per state broadcast over positions, as TRM.
        z0 = torch.empty(2, d)
        nn.init.trunc_normal_(z0, std=1.0, a=-2.0, b=2.0)
        self.register_buffer("z0", z0)
        # Guidance (eq. 9): prior p(eps | u); posterior q(eps | u, y) sees y through its own embedding.
        self.prior = GaussianHead(d, d, c.sigma_min, c.sigma_init)
        self.posterior: nn.Module = (
            AttentionPosteriorHead(c) if c.posterior == "attn" else PosteriorHead(d, c.sigma_min)
        )
        self.y_emb = nn.Embedding(c.out_group * c.out_vocab, d)
        nn.init.trunc_normal_(self.y_emb.weight, std=1.0)
        self.register_buffer(
            "out_offsets", torch.arange(c.out_group, dtype=torch.long) * c.out_vocab, persistent=False
        )
        # Where the noise enters h (GRAMConfig.noise_at): None = every position (no mask, the paper).
        self.noise_mask: torch.Tensor | None
        if c.noise_at == "puzzle":
            self.register_buffer("noise_mask", torch.arange(c.total_len) < c.n_puzzle, persistent=False)
        else:
            self.noise_mask = None
        # Decoder reads only h at content positions (paper 2.1); heads read the first puzzle token. With
        # decoder_layers, blocks over all of h first (GRAMConfig.decoder_layers); registered only then,
        # so the linear-head checkpoints load unchanged.
        self.decoder_blocks = (nn.ModuleList(Block(c.with_(mixer="attn")) for _ in range(c.decoder_layers))
                               if c.decoder_layers else None)
        self.decoder_latent = (nn.Linear(c.n_puzzle * d, c.seq_len * d, bias=False)
                               if c.decoder_from_puzzle else None)
        self.decoder = nn.Linear(d, c.out_group * c.out_vocab, bias=False)
        nn.init.trunc_normal_(self.decoder.weight, std=1.0 / math.sqrt(d))
        self.halt_head = nn.Linear(d, 1)
        self.value_head = nn.Linear(d, 1)
        for head in (self.halt_head, self.value_head):
            nn.init.zeros_(head.weight)
        nn.init.constant_(self.halt_head.bias, -5.0)  # start at "never halt" (TRM)
        nn.init.zeros_(self.value_head.bias)

    # ---- inference interface -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.z0.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_emb.dtype

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x int64 [B, L, G_in] -> e_x [B, P + L, D] (eq. 1), scaled by sqrt(D)."""
        c = self.config
        if x.dim() != 3 or x.shape[1] != c.seq_len or x.shape[2] != c.in_group:
            raise ValueError(f"x must be [B, {c.seq_len}, {c.in_group}], got {list(x.shape)}")
        x = x.to(self.device)
        # A sum of G_in embeddings has G_in times the variance of one: divide by sqrt(G_in).
        content = self.tok_emb(x + self.in_offsets).sum(2) * (1.0 / math.sqrt(c.in_group))
        puzzle = self.puzzle_emb.unsqueeze(0).expand(x.shape[0], -1, -1)
        pos = self.pos_emb if self.grid_pos is None else torch.cat((self.pos_emb, self.grid_pos()), dim=0)
        return math.sqrt(c.d_model) * (torch.cat((puzzle, content), dim=1) + pos)

    def use_impl(self, impl: StepImpl) -> GRAM:
        """Compute steps as ``impl`` says (model/step_impl.py) in this model and every module of it that
        reads it; returns the model. The fast paths call it on their own copy (model/fast_path)."""
        for module in self.modules():
            if "impl" in type(module).__dict__:  # the classes that declare one read it
                module.impl = impl
        return self

    def init_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(h0, l0) [batch, P + L, D] from the stored z0 (fresh tensors the caller may write into)."""
        shape = (batch, self.config.total_len, self.config.d_model)
        h0 = self.z0[0].expand(shape).clone()
        l0 = self.z0[1].expand(shape).clone()
        return h0, l0

    @torch.no_grad()
    def step(
        self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: NoiseKeys,
        x: torch.Tensor | None = None,
    ) -> StepOutput:
        """ONE supervision step (T transitions with the prior) for B slots, then decode (eq. 2).

        ``x``: the slots' input tokens (int64 [B, L, G_in], those e_x was encoded from), whose all-PAD
        positions decode to PAD (``pad_mask``: exact). A caller that keeps no tokens may leave it out;
        the positions are then read off e_x (``pad_positions``: a float comparison)."""
        for t in range(self.config.T):
            h, l = self.transition(h, l, e_x, self._prior_guide(noise, t))
        tokens, logprob, q_halt, value = self.decode(h, e_x, x)
        return StepOutput(h=h, l=l, tokens=tokens, token_logprob=logprob, q_halt=q_halt, value=value)

    def decode(
        self, h: torch.Tensor, e_x: torch.Tensor, x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """The end of a step (eq. 2): (tokens, token_logprob, q_halt, value) from h. A method of its own
        so that the CPU path can compile it as one graph (model/fast_path/cpu_path.py), the PAD positions
        included: from the tokens x when given, else read off e_x."""
        out = self.readout(h)
        tokens, logprob = ops.decode_epilogue(out.logits)
        # README contract: a position whose input sub-tokens are all PAD (off-board cell, absent node) is
        # PAD in the answer. Training never scores those positions, so the decoder's guess there is
        # meaningless.
        pad = self.pad_mask(x) if x is not None else self.pad_positions(e_x)
        tokens = tokens.masked_fill(pad.unsqueeze(-1), PAD)
        logprob = logprob.masked_fill(pad.unsqueeze(-1), 0.0)
        return tokens, logprob, out.q_halt.float(), torch.sigmoid(out.value_logit.float())

    def pad_mask(self, x: torch.Tensor) -> torch.Tensor:
        """bool [B, L] on the model's device: the content positions whose input sub-tokens are all PAD.
        From the tokens, so exact whatever the dtype the step runs in."""
        return (x == PAD).all(-1).to(self.device)

    def pad_positions(self, e_x: torch.Tensor) -> torch.Tensor:
        """bool [B, L]: pad_mask for a caller that has only e_x, read off it by comparison with the
        embedding of an all-PAD input (the same computation, so equal up to rounding). Prefer passing
        the tokens to ``step``: this is a float comparison, and it already needed fixing once.

        The tolerance follows the dtype: the bf16 CPU path gets e_x encoded in fp32 and rounded, while
        this reference is encoded in bf16 arithmetic, a few bf16 ulps apart; a fixed 1e-3 missed every PAD
        row there, so no N-Queens answer verified (measured: coverage 0 vs 0.23 in fp32). Different
        inputs differ by whole embeddings (order 1 per component after the sqrt(D) scale), far above it."""
        c = self.config
        blank = torch.zeros(1, c.seq_len, c.in_group, dtype=torch.long, device=e_x.device)
        ref = self.encode(blank)[0, c.n_puzzle :].float()  # [L, D]
        diff = (e_x[:, c.n_puzzle :].float() - ref).abs().amax(-1)
        tol = max(1e-3, 8 * torch.finfo(e_x.dtype).eps)
        return diff <= tol * (1.0 + ref.abs().amax(-1))

    # ---- pieces shared with training ----------------------------------------------------------------
    def transition(
        self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, guide: Guide | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_{t-1} -> z_t: K low-level updates (eq. 7), u = f_H(h, l) (eq. 8), h = guide(u) (eq. 9)."""
        for _ in range(self.config.K):
            l = self.core(l, h, e_x)
        u = self.core(h, l)
        if guide is None or not self.config.stochastic:
            return u, l
        return self.mask_noise(guide(u), u), l

    def mask_noise(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """h = u + eps where the config puts noise (GRAMConfig.noise_at), u elsewhere; h itself (the same
        tensor, no op) when the noise is everywhere."""
        if self.noise_mask is None:
            return h
        return torch.where(self.noise_mask.unsqueeze(-1), h, u)

    def _prior_guide(self, noise: NoiseKeys, t: int) -> Guide:
        """Transition t of supervision step n draws the counter n * T + t of each slot's stream."""
        T = self.config.T

        def guide(u: torch.Tensor) -> torch.Tensor:
            d = u.device
            return self.prior.sample(u, noise.seed.to(d), noise.traj.to(d), noise.step.to(d) * T + t,
                                     noise.temperature, fused=self.impl.fused)

        return guide

    def guidance_params(
        self, u: torch.Tensor, y_feat: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(mu_p, sigma_p) of the prior and, given the target features, (mu_q, sigma_q) of the posterior."""
        mu_p, sigma_p = self.prior(u)
        if y_feat is None:
            return mu_p, sigma_p, None, None
        mu_q, sigma_q = self.posterior(u, y_feat, mu_p, sigma_p)
        return mu_p, sigma_p, mu_q, sigma_q

    def embed_target(self, y: torch.Tensor) -> torch.Tensor:
        """y int64 [B, L, G_out] -> [B, P + L, D]: what the posterior knows of the target. Zero at the
        puzzle positions; PAD targets embed like any token (they are known from x anyway)."""
        c = self.config
        feat = self.y_emb(y.to(self.device) + self.out_offsets).sum(2) * (1.0 / math.sqrt(c.out_group))
        pad = feat.new_zeros(y.shape[0], c.n_puzzle, c.d_model)
        return torch.cat((pad, feat), dim=1)

    def readout(self, h: torch.Tensor, heads_grad: bool = True) -> Readout:
        """Decoder logits from h at content positions; halting and value logits from h[:, 0]."""
        c = self.config
        z = h
        if self.decoder_latent is not None:
            latent = self.decoder_latent(h[:, : c.n_puzzle].flatten(1)).view(h.shape[0], c.seq_len, -1)
            z = torch.cat((h[:, : c.n_puzzle], h[:, c.n_puzzle :] + latent), dim=1)
        for block in self.decoder_blocks or ():
            z = block(z)
        logits = self.decoder(z[:, c.n_puzzle :]).view(h.shape[0], c.seq_len, c.out_group, c.out_vocab)
        first = h[:, 0] if heads_grad else h[:, 0].detach()
        return Readout(
            logits=logits,
            q_halt=self.halt_head(first).squeeze(-1),
            value_logit=self.value_head(first).squeeze(-1),
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(config: GRAMConfig, seed: int = 0, card: dict[str, Any] | None = None) -> GRAM:
    """A randomly initialised GRAM, deterministic in ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GRAM(config, card)


def tiny_config(task: str, **overrides: Any) -> GRAMConfig:
    """A very small config for any task family: for engine and service tests (milliseconds per step)."""
    defaults: dict[str, Any] = dict(d_model=32, n_heads=2, n_layers=1, n_puzzle=2, T=2, K=1, n_sup=4)
    defaults.update(overrides)
    return config_for(task, **defaults)


def tiny_model(task: str, seed: int = 0, **overrides: Any) -> GRAM:
    """A tiny randomly initialised GRAM for ``task`` in eval mode (untrained: answers are noise)."""
    return build_model(tiny_config(task, **overrides), seed=seed).eval()
