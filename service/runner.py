"""The model side of the engine loop: ``SlotRunner.step(plan, jobs)`` runs one supervision step for the
planned rows and turns the candidates into one ``RowOutcome`` per row.

It owns what lives on the device across steps: the persistent slot tensors (state h and l, input
embedding e_x, input tokens x, each slot's last candidate for stall exit, and the noise keys' seed and
temperature per slot), the step function, and verify/score/dedupe. Rows gather from and scatter back to
the slot tensors by index, so a trajectory keeps its state however the batch around it changes.

A job's noise keys are (job.seed, trajectory index, step), so its answer does not depend on what else is
in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from model.gram import NoiseKeys
from model.tasks.base import Task
from service.jobs import Job
from service.plan import RowOutcome, StepPlan

StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, NoiseKeys], Any]


@dataclass
class JobInput:
    job: Job  # resolved: seed and temperature set
    x: torch.Tensor  # [L, G_in] on the runner's device


class SlotRunner:
    def __init__(self, model: Any, task: Task, step: StepFn | None, slots: int, device: torch.device) -> None:
        self.model = model
        self.task = task
        # the fast path the engine chose (model.fast_path), else the model's own step, looked up per call
        self.run_step: StepFn = step if step is not None else self._model_step
        self.slots = slots
        self.device = device
        self.sampling = task.unconditional
        # Slot tensors, allocated on the first admission (shapes come from the model).
        self._h: torch.Tensor | None = None
        self._l: torch.Tensor | None = None
        self._ex: torch.Tensor | None = None
        self._x: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None  # each slot's last candidate, for stall exit
        self._seed = torch.zeros(slots, dtype=torch.int64, device=device)
        self._temperature = torch.ones(slots, dtype=torch.float32, device=device)
        self._job_ex: dict[str, torch.Tensor] = {}  # job id -> e_x [P + L, D], encoded once per job

    def _model_step(self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: NoiseKeys) -> Any:
        return self.model.step(h, l, e_x, noise)

    def warmup(self) -> None:
        """One supervision step and one verification on a blank input (lazy initialisation paid now)."""
        spec = self.task.spec
        x = torch.ones(1, spec.seq_len, spec.in_group, dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            e_x = self.model.encode(x)
            h, l = self.model.init_state(1)
            zero = torch.zeros(1, dtype=torch.int64, device=self.device)
            keys = NoiseKeys(zero, zero, zero, self._temperature[:1])
            out = self.run_step(h.to(self.device), l.to(self.device), e_x, keys)
            self.task.verify(out.tokens, x)

    def forget(self, job_id: str) -> None:
        """Drop a finished job's cached input embedding."""
        self._job_ex.pop(job_id, None)

    def clear(self) -> None:
        self._job_ex.clear()

    def step(self, plan: StepPlan, jobs: Mapping[str, JobInput]) -> list[RowOutcome]:
        """Initialise the newly admitted slots, run one step for every planned row, verify and score."""
        self._admit(plan, jobs)
        rows = plan.rows
        idx = torch.tensor([r.slot for r in rows], dtype=torch.int64, device=self.device)
        assert self._h is not None and self._l is not None and self._ex is not None and self._x is not None
        h, l, e_x, x = self._h[idx], self._l[idx], self._ex[idx], self._x[idx]
        noise = NoiseKeys(
            seed=self._seed[idx],
            traj=torch.tensor([r.traj for r in rows], dtype=torch.int64, device=self.device),
            step=torch.tensor([r.step for r in rows], dtype=torch.int64, device=self.device),
            temperature=self._temperature[idx],
        )
        with torch.inference_mode():
            out = self.run_step(h, l, e_x, noise)
            self._h[idx] = out.h.to(self._h.dtype)
            self._l[idx] = out.l.to(self._l.dtype)
            unchanged = self._unchanged(plan, idx, out.tokens)
            return self._outcomes(plan, out, x, unchanged)

    def _admit(self, plan: StepPlan, jobs: Mapping[str, JobInput]) -> None:
        new = [r for r in plan.rows if r.new]
        if not new:
            return
        unseen = list(dict.fromkeys(r.job_id for r in new if r.job_id not in self._job_ex))
        if unseen:
            xs = torch.stack([jobs[j].x for j in unseen])
            with torch.inference_mode():
                encoded = self.model.encode(xs)
            for j, e in zip(unseen, encoded, strict=True):
                self._job_ex[j] = e
        with torch.inference_mode():
            h0, l0 = self.model.init_state(len(new))
        if self._h is None:
            self._allocate(h0, l0, self._job_ex[new[0].job_id])
        assert self._h is not None and self._l is not None and self._ex is not None and self._x is not None
        idx = torch.tensor([r.slot for r in new], dtype=torch.int64, device=self.device)
        self._h[idx] = h0.to(self.device, self._h.dtype)
        self._l[idx] = l0.to(self.device, self._l.dtype)
        self._ex[idx] = torch.stack([self._job_ex[r.job_id] for r in new])
        self._x[idx] = torch.stack([jobs[r.job_id].x for r in new])
        self._seed[idx] = torch.tensor(
            [jobs[r.job_id].job.seed for r in new], dtype=torch.int64, device=self.device
        )
        self._temperature[idx] = torch.tensor(
            [jobs[r.job_id].job.temperature for r in new], dtype=torch.float32, device=self.device
        )

    def _allocate(self, h0: torch.Tensor, l0: torch.Tensor, e_x: torch.Tensor) -> None:
        s, spec = self.slots, self.task.spec
        self._h = torch.zeros((s, *h0.shape[1:]), dtype=h0.dtype, device=self.device)
        self._l = torch.zeros((s, *l0.shape[1:]), dtype=l0.dtype, device=self.device)
        self._ex = torch.zeros((s, *e_x.shape), dtype=e_x.dtype, device=self.device)
        self._x = torch.ones((s, spec.seq_len, spec.in_group), dtype=torch.int64, device=self.device)

    def _unchanged(self, plan: StepPlan, idx: torch.Tensor, tokens: torch.Tensor) -> list[bool]:
        """Per row: the candidate equals the one its trajectory decoded after its previous step (stall
        exit's signal; False on a trajectory's first step, whose slot holds another's last candidate)."""
        if self._tokens is None:
            shape = (self.slots, *tokens.shape[1:])
            self._tokens = torch.zeros(shape, dtype=tokens.dtype, device=tokens.device)
        same = (tokens == self._tokens[idx]).flatten(1).all(1).tolist()
        self._tokens[idx] = tokens
        return [bool(s) and row.step > 0 for s, row in zip(same, plan.rows, strict=True)]

    def _outcomes(self, plan: StepPlan, out: Any, x: torch.Tensor, unchanged: list[bool]) -> list[RowOutcome]:
        rows = plan.rows
        tokens = out.tokens
        halted = (out.q_halt > 0).tolist()
        verify_rows = [i for i, r in enumerate(rows) if r.verify]
        valid = [False] * len(rows)
        scores = [0.0] * len(rows)
        if verify_rows:
            vi = torch.tensor(verify_rows, dtype=torch.int64, device=tokens.device)
            ok = self.task.verify(tokens[vi], x[vi]).tolist()
            for i, good in zip(verify_rows, ok, strict=True):
                valid[i] = bool(good)
        # the candidates that become answers: valid ones, and a sample's output when its trajectory ends
        keep = [i for i, r in enumerate(rows) if valid[i] or (self.sampling and (r.final or halted[i]))]
        if keep:
            ki = torch.tensor(keep, dtype=torch.int64, device=tokens.device)
            mask = self.task.answer_mask(x[ki])
            per_row = (out.token_logprob[ki].float() * mask).flatten(1).sum(1).tolist()
            for i, s in zip(keep, per_row, strict=True):
                scores[i] = float(s)
        keep_set = set(keep)
        results = []
        for i in range(len(rows)):
            if i in keep_set:
                y = tokens[i].cpu().clone()
                key = self.task.canonical_key(x[i].cpu(), y) if valid[i] else None
                results.append(RowOutcome(valid[i], halted[i], unchanged[i], key, scores[i], y))
            else:
                results.append(RowOutcome(valid=False, halted=halted[i], unchanged=unchanged[i]))
        return results
