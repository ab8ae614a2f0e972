"""A deterministic toy that implements the model inference interface and the Task protocol, so engine tests
do not depend on a trained network.

Toy task "toy": x has 4 positions of one token each: x[0] = K (distinct solutions, 1..9), x[1] = S (solve
steps spread, 1..9), x[2] = halting mode (1: never halt, 2: trajectories with traj % 3 == 2 halt at their
first step while unsolved), x[3] = 1. A candidate y is valid when y[0] == y[1] in 1..K and y[2] == y[3] == 1.

Toy model: the state h counts supervision steps (h[:, 0, 0]); trajectory (seed, traj) emits its solution
``1 + mix(seed, traj) % K`` once it has run ``1 + mix2(seed, traj) % S`` steps, and all-PAD (invalid)
before. The model reads K, S and the halting mode from e_x and the step from h, so an engine that moves
the wrong state or embedding into a slot gets wrong answers, and ``step`` checks the noise key against
the step count it carries. Scores are -0.25 * solution id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from model.tasks.base import Instance, TaskInputError, TaskSpec

P = 2  # puzzle positions the toy prepends
D = 4


@dataclass
class FakeConfig:
    task: str = "toy"
    n_sup: int = 8
    stochastic: bool = True


class FakeStepOutput(NamedTuple):
    h: torch.Tensor
    l: torch.Tensor
    tokens: torch.Tensor
    token_logprob: torch.Tensor
    q_halt: torch.Tensor
    value: torch.Tensor


def _mix(a: torch.Tensor, b: torch.Tensor, salt: int) -> torch.Tensor:
    v = (a * 1_000_003 + b * 7_919 + salt) % 2_147_483_647
    v = (v * 48_271) % 2_147_483_647
    return (v ^ (v >> 7)) % 1_000_000


class FakeModel:
    def __init__(self, n_sup: int = 8, step_delay_s: float = 0.0) -> None:
        self.config = FakeConfig(n_sup=n_sup)
        self.step_delay_s = step_delay_s  # makes steps take time, to test deadlines and disconnects
        self.steps_run = 0
        self.rows_run = 0

    def to(self, device: Any) -> FakeModel:
        return self

    def eval(self) -> FakeModel:
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.zeros(x.shape[0], P + x.shape[1], D)
        e[:, P:, 0] = x[..., 0].float()
        return e

    def init_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(batch, P + 4, D), torch.zeros(batch, P + 4, D)

    def step(self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: Any) -> FakeStepOutput:
        if self.step_delay_s:
            import time

            time.sleep(self.step_delay_s)
        self.steps_run += 1
        self.rows_run += h.shape[0]
        done = h[:, 0, 0].long()
        if not torch.equal(done, noise.step.long()):
            raise AssertionError(f"noise.step {noise.step.tolist()} != steps carried {done.tolist()}")
        h = h.clone()
        h[:, 0, 0] += 1
        steps = done + 1
        k = e_x[:, P + 0, 0].long().clamp(min=1)
        spread = e_x[:, P + 1, 0].long().clamp(min=1)
        halt_mode = e_x[:, P + 2, 0].long()
        seed, traj = noise.seed.long(), noise.traj.long()
        sol = 1 + _mix(seed, traj, 1) % k
        solve_at = 1 + _mix(seed, traj, 2) % spread
        solved = steps >= solve_at
        b = h.shape[0]
        tokens = torch.zeros(b, 4, 1, dtype=torch.long)
        tokens[:, 0, 0] = torch.where(solved, sol, 0)
        tokens[:, 1, 0] = torch.where(solved, sol, 0)
        tokens[:, 2, 0] = torch.where(solved, 1, 0)
        tokens[:, 3, 0] = torch.where(solved, 1, 0)
        logprob = torch.zeros(b, 4, 1)
        logprob[:, 0, 0] = -0.25 * sol.float()
        halts = (halt_mode == 2) & (traj % 3 == 2) & ~solved
        q_halt = torch.where(halts, 1.0, -1.0)
        return FakeStepOutput(h, l + 1, tokens, logprob, q_halt, solved.float())


class ToyTask:
    name = "toy"
    spec = TaskSpec(seq_len=4, in_group=1, in_vocab=16, out_group=1, out_vocab=16)
    unconditional = False  # a puzzle; SamplingToyTask below samples the same toy

    def parse(self, body: dict[str, Any]) -> Instance:
        values = []
        for field, default in (("k", 3), ("spread", 3), ("halt", 1)):
            v = body.get(field, default)
            if not isinstance(v, int) or not 1 <= v <= 9:
                raise TaskInputError(f"{field} must be an integer in 1..9, got {v!r}", field)
            values.append(v)
        x = torch.tensor(values + [1], dtype=torch.long).view(4, 1)
        return Instance(task=self.name, x=x, meta={"k": values[0]})

    def format(self, instance: Instance, y: torch.Tensor) -> Any:
        return int(y[0, 0])

    def canonical_key(self, x: torch.Tensor, y: torch.Tensor) -> bytes:
        return bytes(y.reshape(-1).tolist())

    def verify(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        k = x[:, 0, 0]
        return (y[:, 0, 0] >= 1) & (y[:, 0, 0] <= k) & (y[:, 1, 0] == y[:, 0, 0]) & (y[:, 2:, 0] == 1).all(1)

    def answer_mask(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(*x.shape[:-1], 1, dtype=torch.bool)

    def solve(self, instance: Instance, cap: int) -> list[torch.Tensor]:
        k = int(instance.x[0, 0])
        return [torch.tensor([[s], [s], [1], [1]]) for s in range(1, min(k, cap) + 1)]

    def generate(self, rng: random.Random, **knobs: Any) -> tuple[Instance, torch.Tensor]:
        inst = self.parse({"k": rng.randint(1, 9)})
        return inst, self.solve(inst, 1)[0]

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, rng: random.Random
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y


def expected_toy_outcome(seed: int, traj: int, k: int, spread: int) -> tuple[int, int]:
    """(solution id, step it is reached at) of one toy trajectory, computed independently of any engine."""
    s, t = torch.tensor([seed]), torch.tensor([traj])
    return int(1 + _mix(s, t, 1) % k), int(1 + _mix(s, t, 2) % spread)


class SamplingToyTask(ToyTask):
    """The toy served as an unconditional task (like MNIST): every trajectory's output is an answer."""

    unconditional = True
