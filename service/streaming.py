"""Streamed answers: ``POST /solve`` and ``POST /sample`` with ``"stream": true`` (or ``Accept:
text/event-stream``) answer with Server-Sent Events (sse-starlette) while the job runs.

Every event is one ``event:`` line and one ``data:`` line of compact JSON:

- ``solution`` (/solve): a distinct verified solution the moment the engine verified it (``solution``,
  ``score``, ``count`` so far, ``first_step``, ``trajectory``, ``distinct`` so far);
- ``sample`` (/sample): one digit as its trajectory finishes (``image`` in the request's format,
  ``trajectory``, ``first_step``, ``index``);
- ``progress``: at most every 100 ms (``steps`` done, trajectories ``alive`` / ``waiting`` / ``retired``
  by reason, ``distinct`` so far, ``elapsed_ms``);
- ``done``: the last event; its data is exactly the body the request gets without streaming;
- ``error`` instead of ``done`` when the job failed after the stream began: ``{"status", "detail"}``, the
  status and message a non-streamed request would have got.

A seeded job's answer is made of a prefix of its trajectories, so ``done`` may leave out a solution a later
trajectory streamed. What fails before the job is queued (422, 429, 503) is the plain JSON error response,
as without streaming. A client that disconnects ends the stream, and the job is aborted: its slots are
freed. The queues relay the engine's events (service/watch.py): in process through the event loop, in
Redis mode through a per-job Redis stream (service/redis/events.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.jobs import Job, Result
from service.queues import JobQueue

log = logging.getLogger(__name__)

Answer = Callable[[Result], Awaitable[Response]]  # the non-streamed response to a Result (errors included)
Refuse = Callable[[Exception], Response | None]  # the response to an error raised by submit, else None
Convert = Callable[[str, dict[str, Any]], dict[str, Any]]  # an engine event's data as the client gets it
Item = tuple[str, dict[str, Any]] | None  # None: the job has its Result (or failed)
PING_S = 15  # a comment line this often keeps proxies from closing a quiet stream

_BACKGROUND: set[asyncio.Task[Any]] = set()  # jobs cancelled by a disconnect, while they withdraw


def wants_stream(flag: bool, request: Request) -> bool:
    """The body says ``"stream": true`` or the client accepts only Server-Sent Events."""
    return flag or "text/event-stream" in request.headers.get("accept", "")


def frame(kind: str, data: Any) -> ServerSentEvent:
    """One event: ``event: <kind>`` and a single ``data:`` line of compact JSON (JSON escapes newlines)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return ServerSentEvent(data=text, event=kind)


async def stream_job(
    queue: JobQueue, job: Job, *, answer: Answer, refuse: Refuse, convert: Convert | None = None
) -> Response:
    """Queue ``job`` and answer with its events; a refusal before it is queued is a plain response."""
    events: asyncio.Queue[Item] = asyncio.Queue()

    def on_event(kind: str, data: dict[str, Any]) -> None:
        events.put_nowait((kind, data))

    task = asyncio.create_task(queue.submit(job, events=on_event))
    task.add_done_callback(lambda _: events.put_nowait(None))
    try:
        first = await events.get()  # ("queued", {}) first once the queue took the job; None: it never did
    except asyncio.CancelledError:
        _cancel(task)
        raise
    if first is None:  # refused, or answered at once (the Redis result cache)
        try:
            result = task.result()
        except Exception as err:
            refused = refuse(err)
            if refused is None:
                raise
            return refused
        response = await answer(result)
        if response.status_code != 200:
            return response
        return EventSourceResponse(_events(task, events, answer, refuse, convert, done_only=True),
                                   ping=PING_S)
    return EventSourceResponse(_events(task, events, answer, refuse, convert), ping=PING_S)


async def _events(
    task: asyncio.Task[Result], events: asyncio.Queue[Item], answer: Answer, refuse: Refuse,
    convert: Convert | None, done_only: bool = False,
) -> AsyncIterator[ServerSentEvent]:
    try:
        while not done_only and (item := await events.get()) is not None:
            kind, data = item
            if kind == "queued":
                continue
            yield frame(kind, convert(kind, data) if convert is not None else data)
        try:
            response = await answer(task.result())
        except Exception as err:
            refused = refuse(err)
            if refused is None:
                log.exception("streamed job failed")
                yield frame("error", {"status": 500, "detail": f"{type(err).__name__}: {err}"})
                return
            response = refused
        body = bytes(response.body)
        if response.status_code == 200:
            yield frame("done", body.decode())
        else:
            yield frame("error", {"status": response.status_code, "detail": json.loads(body)["detail"]})
    finally:
        _cancel(task)  # the client went away (or the server is stopping): abort the job, free its slots


def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel the waiting submit (the queue then aborts or withdraws the job), keeping the task referenced
    until it has done so."""
    if task.done():
        return
    task.cancel()
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
