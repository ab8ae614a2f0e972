"""The Task seam: one protocol every puzzle family implements.

The service, the trainer and the evaluator talk to a family only through this protocol, so adding a family
is adding one module and registering it in ``model.tasks.registry``.

Token layout (shared by every family and by the model):
- A family has a fixed ``TaskSpec``: ``seq_len`` content positions (the model prepends its own puzzle
  tokens), each carrying ``in_group`` input sub-tokens from ``[0, in_vocab)`` and ``out_group`` output
  sub-tokens from ``[0, out_vocab)``.
- Inputs ``x`` are ``LongTensor[L, in_group]``; outputs/targets ``y`` are ``LongTensor[L, out_group]``.
  Batched forms add a leading batch dim.
- Output token 0 is always PAD: positions whose target is 0 are not part of the answer (board cells
  outside an n x n board, absent graph nodes) and are ignored by the loss and the score.
- Everything a verifier needs ("givens") is recoverable from ``x``, so ``verify(y, x)`` takes the input
  tokens of each row; rows of one batch may come from different requests.

Beyond the protocol, the families offer (duck-typed, so callers use ``getattr``):
``sample_training_pair(rng, **knobs) -> (x, y)`` (the trainer's fast path; Sudoku draws from a fixed,
augmented pool because its unique-solution generator is slow), ``generate_dataset(seed, count, **knobs)``
``training_target(x, y) -> y`` (the target the trainer fits, after augmentation: colouring relabels
colours canonically) and, for N-Queens, ``symmetry(x, y, which)`` enumerating the 8 board symmetries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel

PAD = 0


class TaskInputError(ValueError):
    """A request body that is malformed or invalid; ``str(err)`` is a message a user can act on."""

    def __init__(self, message: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass(frozen=True)
class TaskSpec:
    seq_len: int
    in_group: int
    in_vocab: int
    out_group: int
    out_vocab: int


@dataclass
class Instance:
    """A parsed, validated problem: model input tokens plus what is needed to format answers back."""

    task: str
    x: torch.Tensor  # LongTensor[L, in_group]
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. input format, n, num_nodes


@runtime_checkable
class Task(Protocol):
    name: str
    spec: TaskSpec
    # A task with no input and no verifier (MNIST): the service samples it (POST /sample) instead of
    # solving it: no candidate is verified, every trajectory runs to its end and its output is an answer.
    unconditional: bool
    # The task's own /solve fields (a pydantic model with ``task: Literal[name]``; None for an unconditional
    # task) and OpenAPI examples of whole /solve bodies: service/schemas.py builds the /solve union from them.
    request_model: type[BaseModel] | None
    openapi_examples: dict[str, dict[str, Any]]

    def parse(self, body: dict[str, Any]) -> Instance:
        """Validate a request body (task-specific fields) into an Instance; raise TaskInputError."""

    def format(self, instance: Instance, y: torch.Tensor) -> Any:
        """A solution y: LongTensor[L, out_group] as the JSON the API returns."""

    def canonical_key(self, x: torch.Tensor, y: torch.Tensor) -> bytes:
        """Key under which two solutions of the same instance count as the same (deduplication)."""

    def verify(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Batched exact check: y LongTensor[B, L, out_group], x LongTensor[B, L, in_group] -> bool[B].
        Runs on whatever device the tensors are on."""

    def answer_mask(self, x: torch.Tensor) -> torch.Tensor:
        """bool[..., L, out_group]: which output sub-tokens form the answer (the rest are PAD)."""

    def solve(self, instance: Instance, cap: int) -> list[torch.Tensor]:
        """Exact solver: up to ``cap`` distinct solutions y (all of them when fewer)."""

    def generate(self, rng: random.Random, **knobs: Any) -> tuple[Instance, torch.Tensor]:
        """One random instance and one of its solutions (the training target), deterministic in rng."""

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random symmetry applied to an (input, solution) pair; y' solves x' whenever y solves x."""
