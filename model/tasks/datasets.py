"""Fixed data sets built once from a family's seeded generator (for trainers and benchmarks)."""

from __future__ import annotations

import random
from typing import Any

import torch

from model.tasks.base import Task

Pairs = list[tuple[torch.Tensor, torch.Tensor]]


def generate_dataset(task: Task, seed: int, count: int, **knobs: Any) -> Pairs:
    """``count`` (x, y) pairs from ``task.generate`` driven by one ``random.Random(seed)``."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        instance, y = task.generate(rng, **knobs)
        pairs.append((instance.x, y))
    return pairs
