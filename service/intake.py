"""Validated request bodies -> Jobs, shared by the API (service/app.py) and `gram solve` / `gram sample`.

The one place a request is routed (which model answers it, from the queue's ``models()``) and checked
against the server's limits. Every problem a client can cause raises ``TaskInputError`` (field name +
message), which the API turns into a 422 and the CLI prints; no model serving the task raises NoModel (503).
"""

from __future__ import annotations

import secrets
import time

from model.tasks.base import TaskInputError
from service.errors import NoModel
from service.jobs import Job
from service.queues import ModelInfo
from service.schemas import SampleRequest, SolveCommon, task_body
from service.settings import Settings


def route(models: list[ModelInfo], task: str, requested: str | None = None) -> str:
    """The model a job goes to: the requested one (it must serve the task), else the first serving it."""
    serving = [m.name for m in models if m.task == task]
    if requested is not None:
        if requested not in serving:
            raise TaskInputError(
                f"model {requested!r} does not serve task {task!r}; models serving it: {sorted(serving)}",
                "model",
            )
        return requested
    if not serving:
        raise NoModel(f"no loaded model serves task {task!r}")
    return serving[0]


def solve_job(settings: Settings, body: SolveCommon, models: list[ModelInfo]) -> Job:
    from model.tasks.registry import get_task

    task = body.task
    model = route(models, task, body.model)
    instance = get_task(task).parse(task_body(body))
    if body.num_trajectories > settings.max_trajectories:
        raise TaskInputError(
            f"num_trajectories = {body.num_trajectories} is over the limit {settings.max_trajectories} "
            "(GRAM_MAX_TRAJECTORIES)",
            "num_trajectories",
        )
    check_limits(settings, body.max_steps, "max_steps", body.timeout_ms)
    return Job.new(
        model=model, task=task, x=instance.x.tolist(), meta=instance.meta,
        num_trajectories=body.num_trajectories, max_solutions=body.max_solutions, max_steps=body.max_steps,
        stall_patience=body.stall_patience, seed=resolve_seed(body.seed),
        temperature=_float(body.temperature),
        deadline=deadline(settings, body.timeout_ms), seeded=body.seed is not None,
    )


def sample_job(settings: Settings, body: SampleRequest, models: list[ModelInfo]) -> Job:
    from model.tasks.registry import get_task

    model = route(models, "mnist")
    check_limits(settings, body.steps, "steps", body.timeout_ms)
    instance = get_task("mnist").parse({})
    return Job.new(
        model=model, task="mnist", x=instance.x.tolist(), meta=instance.meta,
        num_trajectories=body.n, max_solutions=body.n, max_steps=body.steps, seed=resolve_seed(body.seed),
        temperature=_float(body.temperature),
        deadline=deadline(settings, body.timeout_ms), seeded=body.seed is not None,
    )


def check_limits(settings: Settings, steps: int | None, steps_field: str, timeout_ms: float | None) -> None:
    if steps is not None and steps > settings.max_steps_cap:
        raise TaskInputError(
            f"{steps_field} = {steps} is over the limit {settings.max_steps_cap} (GRAM_MAX_STEPS_CAP)",
            steps_field,
        )
    if timeout_ms is not None and timeout_ms > settings.max_timeout_ms:
        raise TaskInputError(
            f"timeout_ms = {timeout_ms} is over the limit {settings.max_timeout_ms}", "timeout_ms"
        )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh random one (returned to the client so it can replay the answer)."""
    return seed if seed is not None else secrets.randbits(53)  # JSON-safe: below 2^53


def deadline(settings: Settings, timeout_ms: float | None) -> float | None:
    timeout = timeout_ms if timeout_ms is not None else settings.default_timeout_ms
    return None if timeout is None else time.time() + timeout / 1000.0
