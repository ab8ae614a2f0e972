"""Solve several Sudokus concurrently with GRAM Serve from Python (httpx, asyncio).

    python examples/client_async.py [BASE_URL]       # default http://127.0.0.1:8000 (`make serve`)

The server batches the trajectories of concurrent requests together, so sending requests concurrently
is how a client gets throughput. A 429 (queue full) is retried after the `Retry-After` header's seconds;
a 422 (invalid input) comes back as an error naming the field, without stopping the other requests.
Only httpx is needed (`pip install httpx`).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx

# '.' = blank. The first two are medium; the last repeats a 5 in row 0 and gets a 422.
PUZZLES = [
    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
    "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..",
    "55..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
]


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


async def solve(client: httpx.AsyncClient, body: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
    """POST /solve; on 429 wait Retry-After seconds and try again (up to ``attempts`` times)."""
    for attempt in range(1, attempts + 1):
        response = await client.post("/solve", json=body)
        if response.status_code == 429 and attempt < attempts:
            wait = retry_after_s(response)
            print(f"queue full (429): retrying in {wait:g} s", file=sys.stderr)
            await asyncio.sleep(wait)
            continue
        if response.status_code == 422:
            raise InvalidRequest(response.json()["detail"])
        response.raise_for_status()  # 429 after the last attempt, 413, 5xx: httpx.HTTPStatusError
        return dict(response.json())
    raise AssertionError("unreachable")


async def main(base_url: str = "http://127.0.0.1:8000", concurrency: int = 8) -> None:
    limit = asyncio.Semaphore(concurrency)  # at most this many requests in flight

    async def one(client: httpx.AsyncClient, puzzle: str) -> dict[str, Any]:
        async with limit:
            return await solve(client, {"task": "sudoku", "puzzle": puzzle, "num_trajectories": 8,
                                        "max_solutions": 1})  # no seed: the server draws and returns one

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        answers = await asyncio.gather(*(one(client, p) for p in PUZZLES), return_exceptions=True)
    for i, answer in enumerate(answers):
        if isinstance(answer, InvalidRequest):
            print(f"puzzle {i}: 422 invalid request: {answer}")
        elif isinstance(answer, BaseException):
            raise answer
        else:
            found = answer["solutions"][0]["solution"] if answer["solutions"] else "-"
            print(f"puzzle {i}: status {answer['status']}, seed {answer['seed']} (send it back for a "
                  f"reproducible answer), {answer['elapsed_ms']:.0f} ms: {found}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
