"""`gram solve --stream`: a rich live view of a streamed solve, fed by the engine's events in process or by a
server's Server-Sent Events (``--url``): each distinct solution is added the moment it is verified, under
a status line with the steps run, trajectories alive / retired and the elapsed time."""

from __future__ import annotations

import json
import queue
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

Fail = Callable[[str], None]


def shown(solution: Any) -> str:
    """A solution as a table cell: an N-Queens board drawn, a Sudoku string as it is, anything else JSON."""
    if isinstance(solution, dict) and "board" in solution:
        return "\n".join(solution["board"])
    return solution if isinstance(solution, str) else json.dumps(solution)


class LiveSolutions:
    """``with LiveSolutions(console) as view: view.event(kind, data)`` for each event."""

    def __init__(self, console: Console) -> None:
        self.solutions: list[dict[str, Any]] = []
        self.progress: dict[str, Any] = {}
        self.live = Live(self._render(), console=console, refresh_per_second=10, transient=True)

    def __enter__(self) -> LiveSolutions:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "solution":
            self.solutions.append(data)
        elif kind == "progress":
            self.progress = data
        else:
            return
        self.live.update(self._render())

    def _render(self) -> Group:
        table = Table(title=f"{len(self.solutions)} distinct solutions so far")
        for column in ("#", "solution", "trajectory", "score", "first step"):
            table.add_column(column)
        for d in self.solutions:
            table.add_row(str(d["distinct"]), shown(d["solution"]), str(d["trajectory"]), f"{d['score']:.3f}",
                          str(d["first_step"]))
        p = self.progress
        retired = ", ".join(f"{k} {v}" for k, v in sorted(p.get("retired", {}).items())) or "none"
        status = (f"steps {p.get('steps', 0)}  alive {p.get('alive', 0)}  waiting {p.get('waiting', 0)}  "
                  f"retired: {retired}  elapsed {p.get('elapsed_ms', 0.0):.0f} ms")
        return Group(table, Text(status, style="dim"))


def follow_local(engine: Any, job: Any, console: Console) -> Any:
    """Run ``job`` on ``engine`` with the live view; its Result."""
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    future = engine.submit(job, lambda kind, data: events.put((kind, data)))
    with LiveSolutions(console) as view:
        while not (future.done() and events.empty()):
            try:
                view.event(*events.get(timeout=0.05))
            except queue.Empty:
                pass
    return future.result()


def follow_remote(url: str, path: str, body: dict[str, Any], console: Console, fail: Fail) -> dict[str, Any]:
    """POST ``body`` with ``"stream": true`` and show its events live; the ``done`` event's answer."""
    import httpx
    from httpx_sse import connect_sse

    with httpx.Client(timeout=None) as client, connect_sse(
        client, "POST", url.rstrip("/") + path, json={**body, "stream": True}
    ) as source:
        if source.response.status_code != 200:
            source.response.read()
            fail(f"{source.response.status_code} {source.response.text}")
        with LiveSolutions(console) as view:
            for sse in source.iter_sse():
                data = json.loads(sse.data)
                if sse.event == "done":
                    return dict(data)
                if sse.event == "error":
                    fail(f"{data['status']} {data['detail']}")
                view.event(sse.event, data)
    fail("the stream ended without an answer")
    return {}
