"""The FastAPI application: ``create_app(settings)``.

Request path: pydantic body (service/schemas.py) -> ``Task.parse`` (TaskInputError -> 422) -> Job ->
``JobQueue.submit`` (QueueFull -> 429 + Retry-After) -> Result -> response. While a request waits, a
watcher task waits for the client's disconnect and cancels the handler's wait, which aborts the job and
frees its slots.

The app knows its queue only through the JobQueue protocol (service/queues.py). Lifespan: ``queue.start()``
(the in-process queue loads the models in a background thread, so /healthz answers at once); /readyz is 503
until ``queue.status()`` is ready. Pass ``runtime=`` to serve models already in memory (tests) or
``queue=`` to use any other JobQueue; either stays the caller's to close.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel

from model.tasks.base import TaskInputError
from service import metrics
from service.errors import NoModel, QueueFull
from service.idempotency import HEADER as IDEMPOTENCY_KEY
from service.idempotency import check_key, fingerprint
from service.intake import sample_job, solve_job
from service.jobs import Job, Outcome, Result
from service.limits import BodySizeLimit
from service.outcome import explain, range_note
from service.playground import add_browser_pages
from service.queues import JobQueue, ModelInfo
from service.render.http import solution_pictures
from service.schemas import (
    SOLVE_EXAMPLES,
    ErrorResponse,
    ModelCard,
    ModelsResponse,
    SampleRequest,
    SampleResponse,
    SolutionOut,
    SolveCommon,
    SolveRequest,
    SolveResponse,
)
from service.settings import Settings
from service.streaming import stream_job, wants_stream

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger(__name__)
JOB_ID_HEADER = "X-Job-Id"  # on every response of a request that became a job

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "request body over GRAM_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "malformed or invalid input; the message names the field"},
    429: {"model": ErrorResponse,
          "description": "queue full, or the work queued ahead would outlast the request's deadline; retry "
                         "after the Retry-After header's seconds"},
    503: {"model": ErrorResponse, "description": "no model loaded for this task (yet)"},
}
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": 'JSON; with "stream": true (or Accept: text/event-stream) Server-Sent Events: '
                         "solution (/solve) or sample (/sample) events as they are verified, progress "
                         "events, and a last done event whose data is the JSON answer (README, Streaming)"},
}


def _error(status: int, loc: list[str | int], msg: str, kind: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status, headers=headers)


def _invalid(field: str | None, msg: str) -> JSONResponse:
    metrics.REJECTED.labels(reason="invalid_input").inc()
    return _error(422, ["body"] + ([field] if field else []), msg, "value_error")


def make_queue(settings: Settings, runtime: Runtime | None = None) -> JobQueue:
    """The queue ``settings`` ask for: over ``runtime`` when given, else Redis when GRAM_QUEUE_URL is set (the
    `gram worker`s load the models, not this process), else the embedded queue over this process's models.
    Imported lazily: a Redis-mode API process never loads torch."""
    if runtime is None and settings.queue_url:
        from service.redis.queue import RedisJobQueue

        return RedisJobQueue(settings)
    from service.inprocess import InProcessQueue

    return InProcessQueue(settings, runtime)


def create_app(
    settings: Settings | None = None, runtime: Runtime | None = None, queue: JobQueue | None = None
) -> FastAPI:
    settings = settings or Settings()
    # The app closes only what it created: a runtime or queue passed in belongs to the caller.
    owns_queue = queue is None
    queue = queue or make_queue(settings, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        yield
        if owns_queue:
            await queue.close()

    app = FastAPI(
        title="GRAM Serve",
        version="0.1.0",
        summary="Generative Recursive Reasoning Models: many latent trajectories per puzzle, checked answers",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.queue = queue
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    add_browser_pages(app)  # GET / (the playground), offline /docs and /redoc

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.REJECTED.labels(reason="invalid_input").inc()
        return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, 422)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "models loading or failed"}})
    async def readyz() -> JSONResponse:
        """Readiness: every model loaded and warmed up (or the queue's workers present)."""
        status = queue.status()
        if status.ready:
            return JSONResponse({"status": "ready", "models": status.models})
        return JSONResponse({
            "status": "error" if status.error else "loading", "detail": status.detail,
            "progress": status.progress,
        }, 503)

    @app.get("/models", tags=["ops"], response_model=ModelsResponse)
    async def models() -> ModelsResponse:
        """The loaded models and their cards."""
        return ModelsResponse(models=[model_card(info) for info in await queue.models()])

    @app.post("/solve", tags=["solve"], response_model=SolveResponse,
              responses=STREAMED | ERROR_RESPONSES)
    async def solve(
        body: Annotated[SolveRequest, Body(openapi_examples=SOLVE_EXAMPLES)], request: Request
    ) -> Any:
        """Sample trajectories for a puzzle; return its distinct verified solutions (by count, then score)."""
        try:
            served = await queue.models()  # Redis unreachable: QueueUnavailable, a 503 (not a 500)
            job = solve_job(settings, body, served)
        except TaskInputError as err:
            return _invalid(err.field_name, str(err))
        except NoModel as err:
            return _no_model(err)
        if wants_stream(body.stream, request):
            return await stream_job(queue, job, answer=lambda r: solved(body, r, job, served),
                                    refuse=_refused)
        result = await _run(queue, job, request, body)
        if isinstance(result, JSONResponse):
            return result
        return await solved(body, result, job, served)

    async def solved(body: SolveCommon, result: Result, job: Job, served: list[ModelInfo]) -> Response:
        """The answer to a solve job's Result (or its error response)."""
        failed = _answer(result)
        if failed is not None:
            return failed
        note = range_note(job, next((m.card for m in served if m.name == job.model), {}))
        meaning = await explain(job, result, max_trajectories=settings.max_trajectories, note=note)
        pictures = await solution_pictures(body, result.solutions)
        return _json(job.id, SolveResponse(
            job_id=job.id, task=result.task, model=result.model,
            # fields by name, not dataclasses.asdict: asdict deep-copies each solution's nested lists
            # (~30 us a request), and pydantic validates them as they are
            solutions=[
                SolutionOut(solution=s.solution, score=s.score, count=s.count, first_step=s.first_step,
                            picture=picture)
                for s, picture in zip(result.solutions, pictures, strict=True)
            ],
            complete=result.complete, num_trajectories=result.num_trajectories, steps=result.steps,
            elapsed_ms=round(result.elapsed_ms, 3), seed=job.seed, cached=result.cached,
            status=meaning.status, hint=meaning.hint, outside_trained_range=note,
        ))

    @app.post("/sample", tags=["sample"], response_model=SampleResponse,
              responses=STREAMED | ERROR_RESPONSES)
    async def sample(body: SampleRequest, request: Request) -> Any:
        """Unconditional binarized MNIST digits."""
        try:
            job = sample_job(settings, body, await queue.models())
        except TaskInputError as err:
            return _invalid(err.field_name, str(err))
        except NoModel as err:
            return _no_model(err)
        if wants_stream(body.stream, request):
            return await stream_job(queue, job, answer=lambda r: sampled(r, job, body), refuse=_refused,
                                    convert=lambda kind, d: _digit(kind, d, body.format))
        result = await _run(queue, job, request, body)
        if isinstance(result, JSONResponse):
            return result
        return await sampled(result, job, body)

    async def sampled(result: Result, job: Job, body: SampleRequest) -> Response:
        """The answer to a sample job's Result (or its error response)."""
        from service.images import bits_tensor, grid_png_base64, png_base64

        failed = _answer(result)
        if failed is not None:
            return failed
        rows = [s.solution for s in result.solutions]
        bits = bits_tensor(rows) if rows else None  # none when the deadline passed before any finished
        images: list[Any] = rows if body.format == "bits" or bits is None else [png_base64(b) for b in bits]
        return _json(job.id, SampleResponse(
            job_id=job.id, model=result.model, images=images,
            grid_png=grid_png_base64(bits) if bits is not None else "",
            complete=result.complete,
            steps=result.steps, elapsed_ms=round(result.elapsed_ms, 3), seed=job.seed, cached=result.cached,
        ))

    return app


def _digit(kind: str, data: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A streamed sample event as /sample's client gets it: the digit in the request's format."""
    if kind != "sample":
        return data
    from service.images import bits_tensor, png_base64

    rows = data.pop("solution")
    return {"image": rows if fmt == "bits" else png_base64(bits_tensor([rows])[0]), **data}


def model_card(info: ModelInfo) -> ModelCard:
    return ModelCard(
        name=info.name, task=info.task, ready=info.ready, slots=info.slots, batching=info.batching,
        n_sup=info.n_sup, temperature=info.temperature,
        trained_range=info.card.get("input_range") or None, parameters=info.parameters, config=info.config,
        card=info.card, markdown=info.markdown,
    )


def _finite(value: Any) -> Any:
    """``value`` with every NaN / Infinity float as the string a client sent (JSON has no such numbers,
    yet Python's parser reads them and the 422 echoes the offending input, which then could not be
    serialised: a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _no_model(err: NoModel) -> JSONResponse:
    metrics.REJECTED.labels(reason="no_model").inc()
    return _error(503, ["body", "task"], str(err), "no_model")


def _json(job_id: str, body: BaseModel) -> Response:
    """The response FastAPI would make from ``body`` (its ``response_model``): the same JSON bytes
    (pydantic's serializer, what FastAPI's own fast path calls) and headers. Returning a Response skips
    FastAPI's second validation of the model it has just been built from; ``response_model=`` stays on the
    route for the OpenAPI schema."""
    return Response(body.model_dump_json(by_alias=True), media_type="application/json",
                    headers={JOB_ID_HEADER: job_id})


async def _run(queue: JobQueue, job: Job, request: Request, body: BaseModel) -> Result | JSONResponse:
    """``_submit``, with the job's id on an error response too. A retry that attached to an earlier
    attempt (Idempotency-Key) has that attempt's id and seed in ``job``."""
    outcome = await _submit(queue, job, request, body)
    if isinstance(outcome, JSONResponse):
        outcome.headers[JOB_ID_HEADER] = job.id
    return outcome


async def _submit(queue: JobQueue, job: Job, request: Request, body: BaseModel) -> Result | JSONResponse:
    """Submit and wait, aborting the job when the client disconnects; errors as JSON responses. With an
    Idempotency-Key, through the queue's key store (service/idempotency.py).

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

    key = request.headers.get(IDEMPOTENCY_KEY)
    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        if key is None:
            result = await queue.submit(job)
        else:
            request_print = fingerprint(request.url.path, body.model_dump_json())
            attempt, result = await queue.idempotency().run(check_key(key), request_print, job)
            job.id, job.seed = attempt.job_id, attempt.seed
    except asyncio.CancelledError:
        if not client_gone:
            raise  # cancelled by someone else (the server stopping): not ours to swallow
        handler.uncancel()
        log.info("client went away; aborted job %s", job.id)
        return JSONResponse({"detail": "client disconnected"}, 499)
    except TaskInputError as err:  # the Idempotency-Key header
        metrics.REJECTED.labels(reason="invalid_input").inc()
        return _error(422, ["header", IDEMPOTENCY_KEY], str(err), "value_error")
    except (QueueFull, NoModel, ValueError) as err:
        return _refused(err)  # type: ignore[return-value]
    finally:
        # Runs before the handler awaits anything else, so the watcher cannot cancel it after this.
        watcher.cancel()
    return _answer(result) or result


def _refused(err: Exception) -> JSONResponse | None:
    """The response to an error the queue raised at submit (None: not one a client caused)."""
    if isinstance(err, QueueFull):
        return _error(429, [], str(err), err.kind,
                      headers={"Retry-After": str(int(max(1, round(err.retry_after_s))))})
    if isinstance(err, NoModel):
        return _no_model(err)
    if isinstance(err, ValueError):
        return _invalid(None, str(err))
    return None


def _answer(result: Result) -> JSONResponse | None:
    """The error response to a Result that has no answer (None: it has one)."""
    if result.outcome == Outcome.error:
        return JSONResponse({"detail": f"the engine failed on this request: {result.error}"}, 500)
    if result.outcome == Outcome.aborted:
        return JSONResponse({"detail": "the request was aborted (the service is stopping)"}, 503)
    return None


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away. The body has been read, so the server's next ASGI message is
    http.disconnect (sent on a disconnect, or once the response is complete): no polling."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
