"""What streaming costs a non-streamed request: the same seeded requests, one at a time, against two
`gram serve` processes running side by side, this checkout and a baseline checkout without streaming,
in alternating order (A B, B A, ...), so drift in the machine's load hits both alike. Also the streamed
latency (POST with "stream": true, read to the done event) on this checkout, for reference.

    git worktree add /tmp/gram-base <commit before streaming>
    python -m loadtests.stream_overhead --baseline /tmp/gram-base --rounds 200

Prints per workload: median latency of each, the median of the paired differences (this - baseline) with
its 95 % bootstrap interval, and the streamed median. "No measurable cost" means that interval holds 0.
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from loadtests.overhead import LeanClient
from loadtests.server import REPO_ROOT, ServiceProcess

console = Console(width=150)

SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
WORKLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "sudoku w8": ("/solve", {"task": "sudoku", "puzzle": SUDOKU, "num_trajectories": 8, "seed": 0}),
    "nqueens 8 w16": ("/solve", {"task": "nqueens", "n": 8, "queens": [[0, 0], [1, 4]],
                                 "num_trajectories": 16, "max_solutions": 4, "seed": 0}),
    "mnist 4": ("/sample", {"n": 4, "seed": 0, "format": "bits"}),
}


def timed(client: LeanClient, path: str, payload: bytes) -> float:
    t0 = time.perf_counter()
    status, raw = client.request("POST", path, payload)
    took = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"{path}: HTTP {status}: {raw[:300].decode(errors='replace')}")
    return took


def timed_stream(url: str, path: str, body: dict[str, Any]) -> float:
    """POST with "stream": true on a fresh connection and read to the done event."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    payload = json.dumps({**body, "stream": True}).encode()
    t0 = time.perf_counter()
    conn.request("POST", path, payload, {"content-type": "application/json"})
    response = conn.getresponse()
    text = response.read().decode()
    took = time.perf_counter() - t0
    conn.close()
    if response.status != 200 or "event: done" not in text:
        raise RuntimeError(f"{path} streamed: HTTP {response.status}: {text[-300:]}")
    return took


def bootstrap_ci(diffs: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds)]


def main(
    baseline: Annotated[Path, typer.Option(help="a checkout without streaming (git worktree)")],
    rounds: Annotated[int, typer.Option(help="request pairs per workload")] = 200,
    warmup: Annotated[int, typer.Option(help="unmeasured request pairs first")] = 10,
    threads: Annotated[int, typer.Option(help="GRAM_TORCH_THREADS of each server")] = 1,
    only: Annotated[str | None, typer.Option(help="comma-separated workload names (default: all)")] = None,
) -> None:
    names = list(WORKLOADS) if only is None else [n.strip() for n in only.split(",")]
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        raise typer.BadParameter(f"unknown workloads {sorted(unknown)}; known: {list(WORKLOADS)}")
    env = {"GRAM_CPU_PATH": "fp32", "GRAM_SLOTS": "32", "GRAM_TORCH_THREADS": str(threads),
           "GRAM_MODELS": "sudoku,nqueens,mnist"}
    with ServiceProcess("continuous", env=env) as this, ServiceProcess("continuous", env=env,
                                                                       repo=baseline.resolve()) as base:
        clients = {"this": LeanClient(this.url), "baseline": LeanClient(base.url)}
        table = Table(title=f"non-streamed latency, this checkout ({REPO_ROOT.name}) vs baseline "
                            f"({baseline.name}); {rounds} alternating pairs per workload")
        for column in ("workload", "this median ms", "baseline median ms", "paired diff median ms",
                       "95 % CI ms", "diff %", "streamed median ms"):
            table.add_column(column)
        for name in names:
            path, body = WORKLOADS[name]
            payload = json.dumps(body).encode()
            for _ in range(warmup):
                timed(clients["this"], path, payload), timed(clients["baseline"], path, payload)
            ours, theirs = [], []
            for i in range(rounds):
                order = ("this", "baseline") if i % 2 == 0 else ("baseline", "this")
                got = {who: timed(clients[who], path, payload) for who in order}
                ours.append(got["this"])
                theirs.append(got["baseline"])
            streamed = [timed_stream(this.url, path, body) for _ in range(max(10, rounds // 4))]
            diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
            low, high = bootstrap_ci(diffs)
            base_ms = statistics.median(theirs) * 1000
            diff_ms = statistics.median(diffs) * 1000
            table.add_row(name, f"{statistics.median(ours) * 1000:.2f}", f"{base_ms:.2f}", f"{diff_ms:+.3f}",
                          f"[{low * 1000:+.3f}, {high * 1000:+.3f}]", f"{100 * diff_ms / base_ms:+.1f}",
                          f"{statistics.median(streamed) * 1000:.2f}")
        for client in clients.values():
            client.close()
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
