"""Solve a Sudoku with GRAM Serve from Python (httpx, synchronous).

    python examples/client_sync.py [BASE_URL]        # default http://127.0.0.1:8000 (`make serve`)

What it shows: a seeded /solve request and its `status`, `solutions` and `seed`; a 429 (queue full) retried
after the `Retry-After` header's seconds; a 422 (invalid input) turned into an error naming the field.
Only httpx is needed (`pip install httpx`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx

# A medium puzzle ('.' = blank): the shipped Sudoku checkpoint solves it.
PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


class InvalidRequest(ValueError):
    """The API answered 422: the request names a field it rejected and why."""

    def __init__(self, detail: Any) -> None:
        items = detail if isinstance(detail, list) else [{"loc": [], "msg": str(detail)}]
        super().__init__("; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in items))
        self.detail = detail


def retry_after_s(response: httpx.Response, default_s: float = 1.0) -> float:
    """Seconds the server asks a client to wait before retrying (the Retry-After header)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return default_s


def solve(client: httpx.Client, body: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
    """POST /solve; on 429 wait Retry-After seconds and try again (up to ``attempts`` times)."""
    for attempt in range(1, attempts + 1):
        response = client.post("/solve", json=body)
        if response.status_code == 429 and attempt < attempts:
            wait = retry_after_s(response)
            print(f"queue full (429): retrying in {wait:g} s", file=sys.stderr)
            time.sleep(wait)
            continue
        if response.status_code == 422:
            raise InvalidRequest(response.json()["detail"])
        response.raise_for_status()  # 429 after the last attempt, 413, 5xx: httpx.HTTPStatusError
        return dict(response.json())
    raise AssertionError("unreachable")


def show(answer: dict[str, Any]) -> None:
    print(f"status: {answer['status']}  seed: {answer['seed']}  complete: {answer['complete']}  "
          f"{answer['elapsed_ms']:.0f} ms")
    for s in answer["solutions"]:
        print(f"  {s['solution']}  reached by {s['count']} trajectories, score {s['score']:.3f}")
    if answer.get("hint"):
        print(f"  hint: {answer['hint']}")
    if answer.get("outside_trained_range"):
        print(f"  outside the trained range: {answer['outside_trained_range']}")


def main(base_url: str = "http://127.0.0.1:8000") -> None:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        # seed: the same request gives the same answer again; without one the server draws it and returns it
        answer = solve(client, {"task": "sudoku", "puzzle": PUZZLE, "num_trajectories": 8, "seed": 0})
        show(answer)
        try:
            solve(client, {"task": "sudoku", "puzzle": "55" + PUZZLE[2:]})  # two 5s in row 0
        except InvalidRequest as err:
            print(f"422 invalid request: {err}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
