"""The engine core: one model, one thread, one batch of trajectory slots.

Each iteration is three calls, like vLLM v1's ``EngineCore.step``:

    plan = scheduler.schedule(now)                 # which slots run; jobs whose deadline passed
    outcomes = runner.step(plan, jobs)             # one supervision step, verified: a RowOutcome per row
    finished = scheduler.update(plan, outcomes, now)   # what finished, handed back

The pure scheduler (service/scheduler.py) decides, the runner (service/runner.py) owns the device state and
the model step; this module owns the thread and inbox, the futures, and turns finished jobs into
``Result``s (solutions formatted by ``task.format``) delivered through a ``concurrent.futures.Future``.
torch releases the GIL in its kernels, so an asyncio front end in the same process stays responsive.

Usable outside the API process (e.g. by a Redis worker):

    engine = Engine("sudoku", load_checkpoint(path, device), get_task("sudoku"), settings)
    engine.warmup(); engine.start()
    future = engine.submit(job)                        # raises QueueFull when max_queue jobs are in flight
    future = engine.submit(job, listener=on_event)     # streamed: on_event(kind, data) as answers are
                                                       # verified, and progress (service/watch.py)
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
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from model.gram import GRAM, served_halting, served_temperature
from model.tasks.base import Instance, Task, TaskSpec
from service import metrics
from service.admission import DeadlineUnmeetable, WorkMeter
from service.errors import EngineStopped, QueueFull
from service.jobs import Job, Outcome, Result, Solution
from service.plan import Finished, FinishedJob, Found, StepPlan
from service.runner import JobInput, SlotRunner
from service.scheduler import Scheduler
from service.settings import MAX_TEMPERATURE, BatchingMode, Settings
from service.watch import Listener, Watch

log = logging.getLogger(__name__)


@dataclass
class _Pending(JobInput):
    future: Future[Result] = field(default_factory=Future)
    watch: Watch | None = None  # a streamed job's events (service/watch.py)


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
        self.n_sup = int(model.config.n_sup)  # the default max_steps: the steps the model was trained with
        # The step runs through kernels.runner: on CUDA fused Triton kernels and one CUDA graph per batch
        # bucket (unless GRAM_CUDA_RUNNER=false); on CPU the GRAM_CPU_PATH choice (auto: the fastest of
        # fp32, bf16 and bf16+compile, timed at this engine's slot count; kernels/README.md). Test doubles
        # that are not GRAM models run their own step.
        step, self.step_path = None, "model.step"
        if isinstance(model, GRAM) and (self.device.type != "cuda" or settings.cuda_runner):
            from model.fast_path.runner import make_runner

            step, self.step_path = make_runner(model, batch_hint=self.slots)
            log.info("engine %s: step path %s", name, self.step_path)
        self.runner = SlotRunner(model, task, step, self.slots, self.device)
        self.max_steps_cap = settings.max_steps_cap
        self.stall_patience = settings.stall_patience
        # The prior temperature of jobs that give none: the server's setting, else the checkpoint's
        # recommendation (measured per checkpoint, in its card), else 1 (the trained prior).
        self.temperature = served_temperature(model, settings.temperature)
        self.scheduler = Scheduler(
            self.slots, self.mode, batch_wait_s=settings.request_batch_wait_ms / 1000.0,
            admission=settings.admission, stall_min_steps=settings.stall_min_steps,
            # the server's setting, else the checkpoint's (a card says false where its head misfires)
            use_halting=served_halting(model, settings.use_halting), sampling=task.unconditional,
        )
        self.ready = False
        self._lock = threading.Condition()
        self._inbox: deque[_Pending] = deque()
        self._aborts: deque[str] = deque()
        self._pending: dict[str, _Pending] = {}  # every unfinished job, by id
        self._watched: dict[str, Watch] = {}  # the streamed ones among them (engine thread only)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._finish_times: deque[float] = deque(maxlen=64)  # for Retry-After
        # deadline-aware admission (service/admission.py): speed and work per job, slot-steps used per job
        self.meter = WorkMeter()
        self.deadline_admission = settings.deadline_admission
        self._used: Counter[str] = Counter()
        self.iterations = 0
        self._last_step_at: float | None = None  # when the last step started, while the loop stays busy
        metrics.init_model_series(name, task.name, self.slots)

    # -- public API (any thread) --------------------------------------------------------------------
    def submit(self, job: Job, listener: Listener | None = None) -> Future[Result]:
        """Queue a job; its Result arrives on the returned future. Raises QueueFull or ValueError.
        ``listener(kind, data)``: the job's events as it runs, on the engine thread (service/watch.py)."""
        job = self._resolve(job)
        # checked here: a bad token would fail the whole batch's step, not just this job
        _check_tokens(job.x, self.task.spec)
        x = torch.tensor(job.x, dtype=torch.int64, device=self.device)
        pending = _Pending(job=job, x=x)
        if listener is not None:
            instance = Instance(task=self.task.name, x=x.cpu(), meta=job.meta)
            pending.watch = Watch(listener, self.task, instance, job.submitted_at)
        pending.future.set_running_or_notify_cancel()
        with self._lock:
            if self._stopping or self._thread is None:
                raise EngineStopped(f"the engine of model {self.name!r} is not running")
            if job.id in self._pending:
                raise ValueError(f"job {job.id} is already queued on model {self.name!r}")
            if len(self._pending) >= self.max_queue:
                metrics.REJECTED.labels(reason="queue_full").inc()
                raise QueueFull(self.name, self.retry_after_s())
            if job.deadline is not None and self.deadline_admission:
                self._admit_by_deadline(job)
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

    def _admit_by_deadline(self, job: Job) -> None:
        """Raise DeadlineUnmeetable when the work ahead of ``job`` and its own would outlast its deadline
        at the measured pace (service/admission.py). Called under the lock."""
        pace = self.meter.pace()
        if pace is None or job.deadline is None:
            return
        used, ratio = self._used, pace.ratio
        ahead = sum(max(0.0, ratio * _budget(p.job) - used.get(p.job.id, 0)) for p in self._pending.values())
        expected = (ahead + ratio * _budget(job)) / pace.rate
        remaining = job.deadline - time.time()
        if expected > remaining:
            metrics.REJECTED.labels(reason="deadline").inc()
            raise DeadlineUnmeetable(self.name, expected, remaining)

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
        self.runner.warmup()
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
        self._watched.clear()
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
                    self.scheduler.add(pending.job, now, watch=pending.watch is not None)
                    if pending.watch is not None:
                        self._watched[pending.job.id] = pending.watch
                finished = Finished()
                for job_id in aborts:
                    finished += self.scheduler.abort(job_id, now)
                plan = self.scheduler.schedule(time.time())
                finished += plan.finished
                self._publish(finished)  # aborted and expired jobs answer before the step runs
                if plan.rows:
                    self._publish(self._step(plan))
                if self._watched:
                    self._progress()
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
            self._last_step_at = None  # idle: the next step's interval is not a busy one
            self._lock.wait(timeout)

    def _step(self, plan: StepPlan) -> Finished:
        started = time.perf_counter()
        outcomes = self.runner.step(plan, self._pending)
        finished = self.scheduler.update(plan, outcomes, time.time())
        self.iterations += 1
        took = time.perf_counter() - started
        # the running estimate deadlines are planned with: the slower of the last step and a slow-decay
        # average, so one fast step after a slow one does not let the next step overrun a deadline
        self.scheduler.step_s = max(took, 0.8 * self.scheduler.step_s + 0.2 * took)
        # the pace is what a busy loop achieves: the whole interval from the last step's start (results,
        # admission and a contended CPU included), not the step alone
        busy = took if self._last_step_at is None else started - self._last_step_at
        self._last_step_at = started
        self.meter.step(len(plan.rows), busy)
        self._used.update(row.job_id for row in plan.rows)
        metrics.STEP_DURATION.labels(model=self.name).observe(took)
        metrics.BATCH_OCCUPANCY.labels(model=self.name).observe(len(plan.rows) / self.slots)
        return finished

    # -- results -------------------------------------------------------------------------------------
    def _count_retired(self, finished: Finished) -> None:
        for outcome, n in finished.retired.items():
            metrics.TRAJECTORIES.labels(model=self.name, outcome=outcome).inc(n)

    def _progress(self) -> None:
        """A progress event for each streamed job whose last one is PROGRESS_EVERY_S old."""
        now = time.monotonic()
        for job_id, watch in self._watched.items():
            if watch.due(now):
                progress = self.scheduler.progress(job_id)
                if progress is not None:
                    watch.progress(progress, now)

    def _publish(self, finished: Finished) -> None:
        self._count_retired(finished)
        if finished.found:  # streamed jobs' answers, before any job's Result
            by_job: dict[str, list[Found]] = {}
            for rec in finished.found:
                by_job.setdefault(rec.job_id, []).append(rec)
            for job_id, records in by_job.items():
                watch = self._watched.get(job_id)
                if watch is not None:
                    watch.found(records)
        for done in finished.jobs:
            self.runner.forget(done.job.id)
            used = self._used.pop(done.job.id, 0)
            if done.outcome in (Outcome.complete, Outcome.partial):  # partial ones too: else only the
                self.meter.job_done(_budget(done.job), used)  # quick jobs are measured under overload
            pending = self._pending.get(done.job.id)
            if pending is None:
                continue
            watch = self._watched.pop(done.job.id, None)
            if watch is not None and done.progress is not None:
                watch.progress(done.progress, time.monotonic())
            try:
                result = self._result(done, pending)
            except Exception as err:  # formatting failed: still answer, with the reason
                log.exception("engine %s: formatting job %s failed", self.name, done.job.id)
                result = Result(done.job.id, self.name, self.task.name, Outcome.error,
                                error=f"{type(err).__name__}: {err}")
            metrics.QUEUE_WAIT.labels(model=self.name).observe(done.queue_s)
            if not self.task.unconditional and result.outcome != Outcome.error:
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
            # answered below with the error, not as aborted; their cut-short trajectories still count
            self._count_retired(self.scheduler.abort(job_id, now))
        self.runner.clear()
        self._watched.clear()
        self._used.clear()
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


def _budget(job: Job) -> int:
    """A resolved job's budget in slot-steps: every trajectory run for max_steps."""
    return job.num_trajectories * (job.max_steps or 1)


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
