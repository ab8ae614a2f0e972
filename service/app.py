"""The FastAPI application: ``create_app(settings)``.

Request path: pydantic body (service/schemas.py) -> ``Task.parse`` (TaskInputError -> 422) -> Job ->
``JobQueue.submit`` (QueueFull -> 429 + Retry-After) -> Result -> response. While a request waits, a
watcher task waits for the client's disconnect and cancels the handler's wait, which aborts the job and
frees its slots.

Lifespan: the models load in a background thread so /healthz answers at once; /readyz is 503 until every
model is loaded and has run a warm-up step. Pass ``runtime=`` to serve models already in memory (tests)
or ``queue=`` to use another JobQueue (Redis).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel

from model.tasks.base import TaskInputError
from service import metrics
from service.intake import sample_job, solve_job
from service.jobs import Job, Outcome, Result
from service.limits import BodySizeLimit
from service.playground import add_browser_pages
from service.queues import InProcessQueue, JobQueue, NoModel, QueueFull
from service.runtime import Runtime
from service.schemas import (
    SUDOKU_EXAMPLE,
    ErrorResponse,
    ModelCard,
    ModelsResponse,
    SampleRequest,
    SampleResponse,
    SolutionOut,
    SolveRequest,
    SolveResponse,
)
from service.settings import Settings

log = logging.getLogger(__name__)

SOLVE_EXAMPLES: dict[str, dict[str, Any]] = {
    "sudoku": {
        "summary": "Sudoku (81-char string, '.' blank)",
        "value": {"task": "sudoku", "puzzle": SUDOKU_EXAMPLE, "num_trajectories": 8, "seed": 0},
    },
    "sudoku_grid": {
        "summary": "Sudoku (9x9 array, 0 blank)",
        "value": {"task": "sudoku", "puzzle": [[0] * 9 for _ in range(9)], "max_solutions": 3, "seed": 1},
    },
    "nqueens": {
        "summary": "N-Queens, one queen placed",
        "value": {"task": "nqueens", "n": 8, "queens": [[0, 0]], "max_solutions": 4, "seed": 0},
    },
    "graph_coloring": {
        "summary": "Graph colouring of a 5-cycle with 3 colours, node 0 fixed to colour 0",
        "value": {
            "task": "graph_coloring", "num_nodes": 5, "num_colors": 3,
            "edges": [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]], "fixed": {"0": 0}, "seed": 0,
        },
    },
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "request body over GRAM_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "malformed or invalid input; the message names the field"},
    429: {"model": ErrorResponse, "description": "queue full; retry after the Retry-After header's seconds"},
    503: {"model": ErrorResponse, "description": "no model loaded for this task (yet)"},
}


def _error(status: int, loc: list[str | int], msg: str, kind: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status, headers=headers)


def _invalid(field: str | None, msg: str) -> JSONResponse:
    metrics.REJECTED.labels(reason="invalid_input").inc()
    return _error(422, ["body"] + ([field] if field else []), msg, "value_error")


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, queue: JobQueue | None = None
) -> FastAPI:
    settings = settings or Settings()
    # The app shuts down only what it created: a runtime or queue passed in belongs to the caller.
    owns_queue = queue is None
    if queue is None and settings.queue_url:  # Redis mode: `gram worker`s load the models, not this process
        from service.redis_queue import create_queue

        queue = create_queue(settings)
        runtime = runtime or Runtime.from_models(settings, {})
    owns_runtime = runtime is None
    runtime = runtime or Runtime(settings)
    queue = queue or InProcessQueue(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not runtime.loaded.is_set():
            threading.Thread(target=runtime.load, name="load-models", daemon=True).start()
        yield
        if owns_queue and not isinstance(queue, InProcessQueue):
            await queue.close()
        if owns_runtime:
            runtime.stop()

    app = FastAPI(
        title="GRAM Serve",
        version="0.1.0",
        summary="Generative Recursive Reasoning Models: many latent trajectories per puzzle, checked answers",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.queue = queue
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    add_browser_pages(app)  # GET / (the playground), offline /docs and /redoc

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.REJECTED.labels(reason="invalid_input").inc()
        return await request_validation_exception_handler(request, exc)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "models loading or failed"}})
    async def readyz() -> JSONResponse:
        """Readiness: every model loaded and warmed up (or the queue's workers present)."""
        if queue.ready():
            models = sorted(runtime.engines) or getattr(queue, "models", [])  # Redis mode: the workers'
            return JSONResponse({"status": "ready", "models": models})
        status = "error" if runtime.error else "loading"
        detail = runtime.error or getattr(queue, "not_ready", None)  # Redis mode says why it is not ready
        return JSONResponse({"status": status, "detail": detail}, 503)

    @app.get("/models", tags=["ops"], response_model=ModelsResponse)
    async def models() -> ModelsResponse:
        """The loaded models and their cards."""
        cards = []
        for name, engine in runtime.engines.items():
            info = runtime.cards.get(name, {})
            cards.append(ModelCard(
                name=name, task=engine.task.name, ready=engine.ready, slots=engine.slots,
                batching=engine.mode.value, n_sup=engine.n_sup, temperature=engine.temperature,
                parameters=info.get("parameters"),
                config=info.get("config", {}), card=info.get("card", {}), markdown=info.get("markdown"),
            ))
        if not runtime.engines and hasattr(queue, "model_cards"):  # Redis mode: what the workers serve
            cards = [ModelCard(**card) for card in await queue.model_cards()]
        return ModelsResponse(models=cards)

    @app.post("/solve", tags=["solve"], response_model=SolveResponse, responses=ERROR_RESPONSES)
    async def solve(
        body: Annotated[SolveRequest, Body(openapi_examples=SOLVE_EXAMPLES)], request: Request
    ) -> Any:
        """Sample trajectories for a puzzle; return its distinct verified solutions (by count, then score)."""
        try:
            job = solve_job(settings, body, _model_for(runtime, body.task, body.model))
        except TaskInputError as err:
            return _invalid(err.field_name, str(err))
        result = await _run(queue, job, request)
        if isinstance(result, JSONResponse):
            return result
        return _json(SolveResponse(
            task=result.task, model=result.model,
            # fields by name, not dataclasses.asdict: asdict deep-copies each solution's nested lists
            # (~30 us a request), and pydantic validates them as they are
            solutions=[
                SolutionOut(solution=s.solution, score=s.score, count=s.count, first_step=s.first_step)
                for s in result.solutions
            ],
            complete=result.complete, num_trajectories=result.num_trajectories, steps=result.steps,
            elapsed_ms=round(result.elapsed_ms, 3), seed=job.seed, cached=result.cached,
        ))

    @app.post("/sample", tags=["sample"], response_model=SampleResponse, responses=ERROR_RESPONSES)
    async def sample(body: SampleRequest, request: Request) -> Any:
        """Unconditional binarized MNIST digits."""
        from service.images import bits_tensor, grid_png_base64, png_base64

        try:
            job = sample_job(settings, body, _model_for(runtime, "mnist"))
        except TaskInputError as err:
            return _invalid(err.field_name, str(err))
        result = await _run(queue, job, request)
        if isinstance(result, JSONResponse):
            return result
        rows = [s.solution for s in result.solutions]
        bits = bits_tensor(rows) if rows else None  # none when the deadline passed before any finished
        images: list[Any] = rows if body.format == "bits" or bits is None else [png_base64(b) for b in bits]
        return _json(SampleResponse(
            model=result.model, images=images, grid_png=grid_png_base64(bits) if bits is not None else "",
            complete=result.complete,
            steps=result.steps, elapsed_ms=round(result.elapsed_ms, 3), seed=job.seed, cached=result.cached,
        ))

    return app


def _model_for(runtime: Runtime, task: str, requested: str | None = None) -> str:
    """The model a job goes to: the requested one (checked when this process holds the engines), else the
    first serving the task (else the task's name, for a JobQueue that routes by task)."""
    if requested is not None:
        engine = runtime.engines.get(requested)
        if runtime.engines and (engine is None or engine.task.name != task):
            serving = sorted(n for n, e in runtime.engines.items() if e.task.name == task)
            raise TaskInputError(
                f"model {requested!r} does not serve task {task!r}; models serving it: {serving}", "model"
            )
        return requested
    engine = runtime.engine_for_task(task)
    return engine.name if engine is not None else task


def _json(body: BaseModel) -> Response:
    """The response FastAPI would make from ``body`` (its ``response_model``): the same JSON bytes
    (pydantic's serializer, what FastAPI's own fast path calls) and headers. Returning a Response skips
    FastAPI's second validation of the model it has just been built from; ``response_model=`` stays on the
    route for the OpenAPI schema."""
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")


async def _run(queue: JobQueue, job: Job, request: Request) -> Result | JSONResponse:
    """Submit and wait, aborting the job when the client disconnects; errors as JSON responses.

    The handler's own task awaits the queue; one watcher task cancels it if the client goes away first,
    and the queue's submit aborts the job on that cancellation. (Cheaper than a second task for the
    wait plus asyncio.wait over both: measured ~20 us a request.)"""
    handler = asyncio.current_task()
    assert handler is not None
    client_gone = False

    async def watch() -> None:
        nonlocal client_gone
        await _disconnected(request)
        client_gone = True
        handler.cancel()  # the queue aborts the job and frees its slots

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        result = await queue.submit(job)
    except asyncio.CancelledError:
        if not client_gone:
            raise  # cancelled by someone else (the server stopping): not ours to swallow
        handler.uncancel()
        log.info("client went away; aborted job %s", job.id)
        return JSONResponse({"detail": "client disconnected"}, 499)
    except QueueFull as err:
        return _error(429, [], str(err), "queue_full",
                      headers={"Retry-After": str(int(max(1, round(err.retry_after_s))))})
    except NoModel as err:
        metrics.REJECTED.labels(reason="no_model").inc()
        return _error(503, ["body", "task"], str(err), "no_model")
    except ValueError as err:
        return _invalid(None, str(err))
    finally:
        # Runs before the handler awaits anything else, so the watcher cannot cancel it after this.
        watcher.cancel()
    if result.outcome == Outcome.error:
        return JSONResponse({"detail": f"the engine failed on this request: {result.error}"}, 500)
    if result.outcome == Outcome.aborted:
        return JSONResponse({"detail": "the request was aborted (the service is stopping)"}, 503)
    return result


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away. The body has been read, so the server's next ASGI message is
    http.disconnect (sent on a disconnect, or once the response is complete): no polling."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
