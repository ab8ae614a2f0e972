"""Small tensor helpers shared by the families: batch shape checks and byte keys."""

from __future__ import annotations

import torch

from model.tasks.base import TaskSpec


def check_batch(spec: TaskSpec, y: torch.Tensor, x: torch.Tensor) -> None:
    """Fail loudly on a shape mismatch: a silently broadcast verifier would accept garbage."""
    want_y = (spec.seq_len, spec.out_group)
    want_x = (spec.seq_len, spec.in_group)
    if y.dim() != 3 or tuple(y.shape[1:]) != want_y:
        raise ValueError(f"y must be [B, {want_y[0]}, {want_y[1]}], got {list(y.shape)}")
    if x.dim() != 3 or tuple(x.shape[1:]) != want_x:
        raise ValueError(f"x must be [B, {want_x[0]}, {want_x[1]}], got {list(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"batch sizes differ: y has {y.shape[0]} rows, x has {x.shape[0]}")


def small_ints_key(values: list[int]) -> bytes:
    """Bytes of a list of small non-negative ints (every token and colour in this project is < 256)."""
    return bytes(values)
