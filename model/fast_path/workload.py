"""Synthetic step inputs for measuring a model: random input tokens, the model's own z0, distinct
noise keys per slot. Shared by the bench, check and launches scripts and the CPU path's timing."""

from __future__ import annotations

from typing import Any

import torch

from model.gram import NoiseKeys


def step_tokens(model: Any, batch: int, seed: int = 0) -> torch.Tensor:
    """The random input tokens step_inputs encodes (int64 [batch, L, G_in], on the model's device)."""
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, c.in_vocab, (batch, c.seq_len, c.in_group), generator=gen).to(model.device)


def step_inputs(
    model: Any, batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """(h, l, e_x, noise) for ``batch`` slots on the model's device, in the model's dtype; the tokens
    e_x encodes are step_tokens(model, batch, seed)."""
    device = model.device
    with torch.no_grad():
        e_x = model.encode(step_tokens(model, batch, seed))
    h, l = model.init_state(batch)
    keys = torch.arange(batch, dtype=torch.int64, device=device)
    noise = NoiseKeys(seed=keys + seed * 1_000_003, traj=keys, step=torch.zeros_like(keys))
    return h, l, e_x, noise


def randomize_zero_heads(model: Any, std: float = 0.05, seed: int = 0) -> None:
    """A fresh model's prior mean and halting/value heads are zero-initialised, so two implementations
    would agree on them trivially; random weights make a comparison (or a benchmark) mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.prior.proj, model.halt_head, model.value_head):
            w = torch.randn(head.weight.shape, generator=gen) * std
            head.weight.copy_(w.to(head.weight.dtype))
