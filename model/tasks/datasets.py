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


class GeneratedPairs:
    """What a family gets for free from its ``generate``: a fixed data set and the trainer's pair sampler.
    Families whose generator is slow (Sudoku) override ``sample_training_pair`` with a pool."""

    unconditional = False  # a puzzle family: solved and verified (MNIST overrides: sampled)

    def generate(self, rng: random.Random, **knobs: Any) -> Any:  # provided by the family
        raise NotImplementedError

    def generate_dataset(self, seed: int, count: int, **knobs: Any) -> Pairs:
        """``count`` (x, y) pairs from ``generate`` with one seeded rng (a fixed set, e.g. for evaluation)."""
        return generate_dataset(self, seed, count, **knobs)  # type: ignore[arg-type]

    def sample_training_pair(self, rng: random.Random, **knobs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for the trainer, straight from ``generate``."""
        instance, y = self.generate(rng, **knobs)
        return instance.x, y
