"""The engine: one model, one thread, one batch of trajectory slots.

Each iteration asks the pure scheduler (service/scheduler.py) for a plan, initialises newly admitted slots
(input embedding copied from the job's one ``encode``, state from ``init_state``), runs ONE supervision step
of the model for every active slot, verifies the candidates the plan asks for in one batched
``task.verify`` call, and feeds the outcomes back. Finished jobs become ``Result``s (solutions formatted
by ``task.format``) delivered through a ``concurrent.futures.Future``. torch releases the GIL in its
kernels, so an asyncio front end in the same process stays responsive.

Usable outside the API process (e.g. by a Redis worker):

    engine = Engine("sudoku", load_checkpoint(path, device), get_task("sudoku"), settings)
    engine.warmup(); engine.start()
    future = engine.submit(job)                        # raises QueueFull when max_queue jobs are in flight
    future.add_done_callback(lambda f: publish(f.result()))   # runs on the engine thread: keep it short
    result = await asyncio.wrap_future(future)         # or: from an event loop
    engine.abort(job.id)                               # frees its slots; the future gets an aborted Result
    engine.stop()

A job's noise keys are (job.seed, trajectory index, step), so its answer does not depend on what else is
in the batch (see the scheduler's docstring for the completion rules that keep it so).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import torch

from model.gram import GRAM, NoiseKeys, served_halting, served_temperature
from model.tasks.base import Instance, Task, TaskSpec
from service import metrics
from service.errors import EngineStopped, QueueFull
from service.jobs import Job, JobKind, Outcome, Result, Solution
from service.scheduler import FinishedJob, RowOutcome, Scheduler, StepPlan
from service.settings import MAX_TEMPERATURE, BatchingMode, Settings

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    job: Job
    x: torch.Tensor  # [L, G_in] on the engine's device
    future: Future[Result]


class Engine:
    def __init__(
        self,
        name: str,
        model: Any,
        task: Task,
        settings: Settings | None = None,
        *,
        slots: int | None = None,
        mode: BatchingMode | str | None = None,
        max_queue: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        settings = settings or Settings()
        self.name = name
        self.model = model
        self.task = task
        self.device = torch.device(device or settings.device)
        self.slots = slots or settings.slots
        self.mode = BatchingMode(mode or settings.batching)
        self.max_queue = max_queue or settings.max_queue
        self.n_sup = int(_config(model, "n_sup", 16))
        # The step runs through kernels.runner: on CUDA fused Triton kernels and one CUDA graph per batch
        # bucket (unless GRAM_CUDA_RUNNER=false); on CPU the GRAM_CPU_PATH choice (auto: the fastest of
        # fp32, bf16 and bf16+compile, timed at this engine's slot count; kernels/README.md). Test doubles
        # that are not GRAM models run their own step.
        self._runner: Any = None
        self.step_path = "model.step"
        if isinstance(model, GRAM) and (self.device.type != "cuda" or settings.cuda_runner):
            from kernels.runner import make_runner

            self._runner, self.step_path = make_runner(model, batch_hint=self.slots)
            log.info("engine %s: step path %s", name, self.step_path)
        self.max_steps_cap = settings.max_steps_cap
        self.stall_patience = settings.stall_patience
        # The prior temperature of jobs that give none: the server's setting, else the checkpoint's
        # recommendation (measured per checkpoint, in its card), else 1 (the trained prior).
        self.temperature = served_temperature(model, settings.temperature)
        self.scheduler = Scheduler(
            self.slots, self.mode, batch_wait_s=settings.request_batch_wait_ms / 1000.0,
            admission=settings.admission, stall_min_steps=settings.stall_min_steps,
            # the server's setting, else the checkpoint's (a card says false where its head misfires)
            use_halting=served_halting(model, settings.use_halting),
        )
        self.ready = False
        self._lock = threading.Condition()
        self._inbox: deque[_Pending] = deque()
        self._aborts: deque[str] = deque()
        self._pending: dict[str, _Pending] = {}  # every unfinished job, by id
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Slot tensors, allocated on the first admission (shapes come from the model).
        self._h: torch.Tensor | None = None
        self._l: torch.Tensor | None = None
        self._ex: torch.Tensor | None = None
        self._x: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None  # each slot's last candidate, for stall exit
        self._seed = torch.zeros(self.slots, dtype=torch.int64, device=self.device)
        self._temperature = torch.ones(self.slots, dtype=torch.float32, device=self.device)
        self._job_ex: dict[str, torch.Tensor] = {}  # job id -> e_x [P + L, D], encoded once per job
        self._finish_times: deque[float] = deque(maxlen=64)  # for Retry-After
        self.iterations = 0
        metrics.init_model_series(name, task.name, self.slots)

    def _run_step(self, h: torch.Tensor, l: torch.Tensor, e_x: torch.Tensor, noise: NoiseKeys) -> Any:
        return (self._runner or self.model.step)(h, l, e_x, noise)

    # -- public API (any thread) --------------------------------------------------------------------
    def submit(self, job: Job) -> Future[Result]:
        """Queue a job; its Result arrives on the returned future. Raises QueueFull or ValueError."""
        job = self._resolve(job)
        # checked here: a bad token would fail the whole batch's step, not just this job
        _check_tokens(job.x, self.task.spec)
        x = torch.tensor(job.x, dtype=torch.int64, device=self.device)
        pending = _Pending(job=job, x=x, future=Future())
        pending.future.set_running_or_notify_cancel()
        with self._lock:
            if self._stopping or self._thread is None:
                raise EngineStopped(f"the engine of model {self.name!r} is not running")
            if job.id in self._pending:
                raise ValueError(f"job {job.id} is already queued on model {self.name!r}")
            if len(self._pending) >= self.max_queue:
                metrics.REJECTED.labels(reason="queue_full").inc()
                raise QueueFull(self.name, self.retry_after_s())
            self._pending[job.id] = pending
            self._inbox.append(pending)
            self._lock.notify()
        return pending.future

    def abort(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._pending:
                self._aborts.append(job_id)
                self._lock.notify()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def retry_after_s(self) -> float:
        """Seconds for a quarter of the jobs in flight to finish at the recent finish rate (1..60)."""
        times = list(self._finish_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 1.0
        rate = (len(times) - 1) / (times[-1] - times[0])
        return float(min(60, max(1, math.ceil(len(self._pending) / rate / 4))))

    def answer_settings(self) -> dict[str, Any]:
        """The server settings a seeded answer depends on besides the job and the weights: the batching
        mode (continuous answers with a prefix of trajectories, request/serial with all of them), the
        exit rules, the default max_steps and the step's numerics (fp32 and bf16 sample different
        boards). Part of the Redis result-cache key, so deployments that differ in them never serve each
        other's cached answers."""
        return {
            "batching": self.mode.value, "n_sup": self.n_sup, "stall_patience": self.stall_patience,
            "stall_min_steps": self.scheduler.stall_min_steps, "use_halting": self.scheduler.use_halting,
            "step_path": self.step_path, "temperature": self.temperature,
        }

    def warmup(self) -> None:
        """One supervision step on a blank input, so /readyz means 'the first request will not pay
        for lazy initialisation'."""
        spec = self.task.spec
        x = torch.ones(1, spec.seq_len, spec.in_group, dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            e_x = self.model.encode(x)
            h, l = self.model.init_state(1)
            zero = torch.zeros(1, dtype=torch.int64, device=self.device)
            keys = NoiseKeys(zero, zero, zero, self._temperature[:1])
            out = self._run_step(h.to(self.device), l.to(self.device), e_x, keys)
            self.task.verify(out.tokens, x)
        self.ready = True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; unfinished jobs get an aborted Result."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            leftovers = list(self._pending.values())
            self._pending.clear()
            self._inbox.clear()
        for pending in leftovers:
            self._deliver(pending, Result(pending.job.id, self.name, self.task.name, Outcome.aborted,
                                          error="the engine stopped"))

    # -- the loop (engine thread) ---------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._lock:
                if self._stopping:
                    return
                incoming = list(self._inbox)
                self._inbox.clear()
                aborts = list(self._aborts)
                self._aborts.clear()
            now = time.time()
            try:
                for pending in incoming:
                    self.scheduler.add(pending.job, now)
                for job_id in aborts:
                    self.scheduler.abort(job_id, now)
                plan = self.scheduler.schedule(time.time())
                self._publish(self.scheduler.pop_finished())
                if plan.rows:
                    self._iterate(plan)
                    self._publish(self.scheduler.pop_finished())
            except Exception as err:  # a failure must not kill the engine or leave a job unanswered
                log.exception("engine %s: step failed", self.name)
                self._fail_all(f"{type(err).__name__}: {err}")
                plan = StepPlan(rows=[])
            self._observe()
            if not plan.rows:
                self._idle(plan.wake_at)

    def _idle(self, wake_at: float | None) -> None:
        with self._lock:
            if self._inbox or self._aborts or self._stopping:
                return
            timeout = None if wake_at is None else max(0.0, wake_at - time.time())
            self._lock.wait(timeout)

    def _iterate(self, plan: StepPlan) -> None:
        started = time.perf_counter()
        self._admit(plan)
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
            out = self._run_step(h, l, e_x, noise)
            self._h[idx] = out.h.to(self._h.dtype)
            self._l[idx] = out.l.to(self._l.dtype)
            unchanged = self._unchanged(plan, idx, out.tokens)
            outcomes = self._outcomes(plan, out, x, unchanged)
        self.scheduler.update(plan, outcomes, time.time())
        self.iterations += 1
        metrics.STEP_DURATION.labels(model=self.name).observe(time.perf_counter() - started)
        metrics.BATCH_OCCUPANCY.labels(model=self.name).observe(len(rows) / self.slots)

    def _admit(self, plan: StepPlan) -> None:
        new = [r for r in plan.rows if r.new]
        if not new:
            return
        unseen = list(dict.fromkeys(r.job_id for r in new if r.job_id not in self._job_ex))
        if unseen:
            xs = torch.stack([self._pending[j].x for j in unseen])
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
        self._x[idx] = torch.stack([self._pending[r.job_id].x for r in new])
        self._seed[idx] = torch.tensor(
            [self._pending[r.job_id].job.seed for r in new], dtype=torch.int64, device=self.device
        )
        self._temperature[idx] = torch.tensor(
            [self._pending[r.job_id].job.temperature for r in new], dtype=torch.float32, device=self.device
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
        keep = [
            i for i, r in enumerate(rows)
            if valid[i] or (self._pending[r.job_id].job.kind == JobKind.sample and (r.final or halted[i]))
        ]
        if keep:
            ki = torch.tensor(keep, dtype=torch.int64, device=tokens.device)
            mask = self.task.answer_mask(x[ki])
            per_row = (out.token_logprob[ki].float() * mask).flatten(1).sum(1).tolist()
            for i, s in zip(keep, per_row, strict=True):
                scores[i] = float(s)
        keep_set = set(keep)
        results = []
        for i, _row in enumerate(rows):
            if i in keep_set:
                y = tokens[i].cpu().clone()
                key = self.task.canonical_key(x[i].cpu(), y) if valid[i] else None
                results.append(RowOutcome(valid[i], halted[i], unchanged[i], key, scores[i], y))
            else:
                results.append(RowOutcome(valid=False, halted=halted[i], unchanged=unchanged[i]))
        return results

    # -- results -------------------------------------------------------------------------------------
    def _publish(self, finished: list[FinishedJob]) -> None:
        for done in finished:
            self._job_ex.pop(done.job.id, None)
            pending = self._pending.get(done.job.id)
            if pending is None:
                continue
            try:
                result = self._result(done, pending)
            except Exception as err:  # formatting failed: still answer, with the reason
                log.exception("engine %s: formatting job %s failed", self.name, done.job.id)
                result = Result(done.job.id, self.name, self.task.name, Outcome.error,
                                error=f"{type(err).__name__}: {err}")
            metrics.QUEUE_WAIT.labels(model=self.name).observe(done.queue_s)
            if done.job.kind == JobKind.solve and result.outcome != Outcome.error:
                metrics.DISTINCT_SOLUTIONS.labels(task=self.task.name).observe(len(result.solutions))
            self._deliver(pending, result)

    def _result(self, done: FinishedJob, pending: _Pending) -> Result:
        job = done.job
        instance = Instance(task=self.task.name, x=pending.x.cpu(), meta=job.meta)
        solutions = [
            Solution(self.task.format(instance, rec.payload), round(rec.score, 6), rec.count, rec.first_step)
            for rec in done.solutions
        ]
        return Result(
            job_id=job.id, model=self.name, task=self.task.name, outcome=done.outcome, solutions=solutions,
            num_trajectories=done.num_trajectories, steps=done.steps,
            queue_ms=done.queue_s * 1000.0,
        )

    def _deliver(self, pending: _Pending, result: Result) -> None:
        now = time.time()
        result.elapsed_ms = (now - pending.job.submitted_at) * 1000.0
        with self._lock:
            self._pending.pop(pending.job.id, None)
            self._finish_times.append(now)
        metrics.JOBS.labels(task=self.task.name, outcome=result.outcome.value).inc()
        metrics.JOB_DURATION.labels(task=self.task.name, outcome=result.outcome.value).observe(
            result.elapsed_ms / 1000.0
        )
        if not pending.future.done():
            pending.future.set_result(result)

    def _fail_all(self, message: str) -> None:
        now = time.time()
        for job_id in self.scheduler.job_ids():
            self.scheduler.abort(job_id, now)
        self.scheduler.pop_finished()
        self._job_ex.clear()
        with self._lock:
            queued = {id(p) for p in self._inbox}
            failed = [p for p in self._pending.values() if id(p) not in queued]
        for pending in failed:
            self._deliver(pending, Result(pending.job.id, self.name, self.task.name, Outcome.error,
                                          error=message))

    def _observe(self) -> None:
        stats = self.scheduler.stats()
        with self._lock:
            inbox = len(self._inbox)
        metrics.QUEUE_DEPTH.labels(model=self.name).set(stats.waiting_jobs + inbox)
        metrics.ACTIVE_SLOTS.labels(model=self.name).set(stats.active_slots)
        for outcome, n in self.scheduler.pop_retired_counts().items():
            metrics.TRAJECTORIES.labels(model=self.name, outcome=outcome).inc(n)

    def _resolve(self, job: Job) -> Job:
        steps = job.max_steps if job.max_steps is not None else self.n_sup
        if not 1 <= steps <= self.max_steps_cap:
            raise ValueError(f"max_steps must be in 1..{self.max_steps_cap}, got {steps}")
        if job.num_trajectories < 1 or job.max_solutions < 1:
            raise ValueError("num_trajectories and max_solutions must be >= 1")
        patience = job.stall_patience if job.stall_patience is not None else self.stall_patience
        if patience < 0:
            raise ValueError(f"stall_patience must be >= 0, got {patience}")
        temperature = float(job.temperature if job.temperature is not None else self.temperature)
        if not 0 < temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be in (0, {MAX_TEMPERATURE:g}], got {temperature}")
        return replace(job, max_steps=steps, stall_patience=patience, temperature=temperature)


def _check_tokens(x: Any, spec: TaskSpec) -> None:
    """job.x must be [seq_len][in_group] ints in 0..in_vocab-1. Checked in Python on the list, not with
    torch reductions: after an idle gap each torch op a request touches outside the model step costs
    0.1-0.2 ms on this VM's cold caches (BENCHMARKS.md, service overhead)."""
    if not isinstance(x, list) or len(x) != spec.seq_len or any(
        not isinstance(row, list) or len(row) != spec.in_group for row in x
    ):
        raise ValueError(f"job.x must be [{spec.seq_len}][{spec.in_group}] (a list of lists)")
    vocab = spec.in_vocab
    for row in x:
        for token in row:
            if type(token) is not int or not 0 <= token < vocab:
                raise ValueError(f"job.x tokens must be ints in 0..{vocab - 1}, got {token!r}")


def _config(model: Any, name: str, default: Any) -> Any:
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)
