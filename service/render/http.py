"""`POST /solve`'s ``render`` field: one picture per solution, drawn off the event loop."""

from __future__ import annotations

import asyncio

from service.jobs import Solution
from service.render import pictures
from service.schemas import SolveCommon, task_body


async def solution_pictures(request: SolveCommon, solutions: list[Solution]) -> list[str | None]:
    """A base64 PNG or SVG text per solution when the request asked for ``render``, else None for each.
    Drawing takes milliseconds per picture, so it runs in a worker thread, not on the event loop."""
    if request.render is None or not solutions:
        return [None] * len(solutions)
    answers = [s.solution for s in solutions]
    return await asyncio.to_thread(pictures, request.task, task_body(request), answers, request.render)
