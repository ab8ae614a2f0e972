"""Chaos run: the Redis-mode stack under overload and faults, on loopback only, bounded in time.

    .venv/bin/python -m loadtests.chaos [--phase-s 20] [--csv loadtests/results/chaos/chaos.csv]

Starts redis-server (append-only file), two `gram worker`s and one `gram serve` (loadtests/chaos_stack.py)
serving the N-Queens checkpoint, measures capacity with a closed loop, then runs one phase after another
with an open-loop Poisson load of N-Queens 8x8 requests (each with a deadline and its own
Idempotency-Key; a client retries 502/503s and connection errors with the same key until its deadline):

- overload: 4x the measured capacity;
- worker-kill: 1x capacity; one worker is SIGKILLed mid-phase and a new one started; re-claim latency is
  the time until none of the dead worker's pending entries is still its own;
- redis-restart: 1x; redis-server stopped (SIGTERM) for 3 s, then started again on its file;
- api-restart: 1x; the API SIGKILLed and started again on the same port 1 s later;
- slow-clients: 1x, plus 300 connections sending their headers a byte every 2 s; /healthz latency.

Per phase it prints and writes: sent, accepted (200), complete (200 with complete: true within the
deadline), partial, 429s, 5xx / other statuses, lost (no final answer: neither 200 nor 429 nor 4xx),
duplicated (keys answered by more than one job), re-claim seconds, /healthz worst seconds, RSS of the API
and the workers before and after. Figures: BENCHMARKS.md ("Faults and overload").
"""

from __future__ import annotations

import asyncio
import csv
import random
import signal
import socket
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import redis
import typer
from rich.console import Console
from rich.table import Table

from loadtests.chaos_stack import Stack

BODY = {"task": "nqueens", "n": 8, "num_trajectories": 8, "max_solutions": 1}
RETRYABLE = {502, 503, 504}


@dataclass
class Phase:
    name: str
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    duplicated: int = 0
    reclaim_s: float | None = None
    healthz_worst_s: float | None = None
    rss_before: float = 0.0
    rss_after: float = 0.0

    def row(self) -> dict[str, Any]:
        o = self.outcomes
        accepted = o["complete"] + o["partial"] + o["late"]
        return {
            "phase": self.name, "sent": self.sent, "accepted": accepted, "complete": o["complete"],
            "complete_pct_of_accepted": round(100 * o["complete"] / accepted, 1) if accepted else None,
            "partial_or_late": o["partial"] + o["late"], "429": o["429"],
            "5xx_other": sum(n for k, n in o.items() if k.startswith("http")), "lost": o["lost"],
            "duplicated": self.duplicated,
            "reclaim_s": None if self.reclaim_s is None else round(self.reclaim_s, 2),
            "healthz_worst_s": None if self.healthz_worst_s is None else round(self.healthz_worst_s, 2),
            "rss_mb_before": round(self.rss_before), "rss_mb_after": round(self.rss_after),
        }


async def _request(client: httpx.AsyncClient, url: str, timeout_ms: float, phase: Phase) -> None:
    """One logical request: retried with its key through outages until its deadline (plus 15 s)."""
    key = uuid.uuid4().hex
    body = {**BODY, "seed": random.randrange(2**31), "timeout_ms": timeout_ms}
    started = time.monotonic()
    give_up = started + timeout_ms / 1000 + 15
    answered_by: set[str] = set()
    outcome = "lost"
    while time.monotonic() < give_up:
        try:
            response = await client.post(url + "/solve", json=body, headers={"Idempotency-Key": key},
                                         timeout=timeout_ms / 1000 + 10)
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if response.status_code in RETRYABLE:
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 200:
            answer = response.json()
            answered_by.add(answer["job_id"])
            in_time = time.monotonic() - started <= timeout_ms / 1000 + 0.5
            outcome = ("complete" if in_time else "late") if answer["complete"] else "partial"
        else:
            outcome = "429" if response.status_code == 429 else f"http{response.status_code}"
        break
    phase.outcomes[outcome] += 1
    phase.duplicated += len(answered_by) > 1


async def _offer(url: str, rate: float, duration_s: float, timeout_ms: float, phase: Phase) -> None:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits) as client:
        tasks = []
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            tasks.append(asyncio.create_task(_request(client, url, timeout_ms, phase)))
            phase.sent += 1
            await asyncio.sleep(random.expovariate(rate))
        await asyncio.gather(*tasks)


async def _capacity(url: str, seconds: float, concurrency: int) -> float:
    done = 0
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60) as client:
        async def loop() -> None:
            nonlocal done
            while time.monotonic() < end:
                r = await client.post(url + "/solve", json={**BODY, "seed": random.randrange(2**31)})
                done += r.status_code == 200
        await asyncio.gather(*[loop() for _ in range(concurrency)])
    return done / seconds


def _reclaim_latency(stack: Stack, victim_pid: int, killed_at: float, limit_s: float) -> float | None:
    """Seconds from the kill until no pending entry is still the dead worker's (None: it held none)."""
    client = redis.Redis(port=stack.redis_port)
    stream = "gram:jobs:nqueens"

    def held() -> int:
        pending = client.xpending_range(stream, "gram-engines", "-", "+", 10_000)
        return sum(f"-{victim_pid}-" in p["consumer"].decode() for p in pending)

    if held() == 0:
        return None
    while time.monotonic() - killed_at < limit_s:
        if held() == 0:
            return time.monotonic() - killed_at
        time.sleep(0.1)
    return float("inf")


async def _healthz_worst(url: str, seconds: float) -> float:
    worst = 0.0
    end = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                await client.get(url + "/healthz", timeout=30)
            except httpx.HTTPError:
                pass
            worst = max(worst, time.monotonic() - started)
            await asyncio.sleep(0.2)
    return worst


async def _slow_clients(port: int, count: int, seconds: float) -> None:
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    header = b"POST /solve HTTP/1.1\r\nHost: x\r\n"
    for i in range(int(seconds / 2)):
        for sock in socks:
            try:
                sock.send(header[i % len(header):][:1])
            except OSError:
                pass
        await asyncio.sleep(2)
    for sock in socks:
        sock.close()


def _rss(stack: Stack) -> float:
    return sum(p.rss_mb() for p in [stack.api, *stack.workers] if p is not None and p.alive())


async def _run_phase(stack: Stack, name: str, rate: float, seconds: float, timeout_ms: float,
                     claim_idle_s: float) -> Phase:
    phase = Phase(name, rss_before=_rss(stack))
    load = asyncio.create_task(_offer(stack.url, rate, seconds, timeout_ms, phase))
    await asyncio.sleep(seconds / 3)
    if name == "worker-kill":
        victim = stack.workers.pop(0)
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        stack.workers.append(stack.start_worker())
        phase.reclaim_s = await asyncio.to_thread(_reclaim_latency, stack, victim.pid, killed_at,
                                                  claim_idle_s + 30)
    elif name == "redis-restart":
        assert stack.redis is not None
        stack.redis.signal(signal.SIGTERM)
        await asyncio.sleep(3)
        await asyncio.to_thread(stack.start_redis)
    elif name == "api-restart":
        assert stack.api is not None
        port = stack.api.port
        stack.api.signal(signal.SIGKILL)
        await asyncio.sleep(1)
        await asyncio.to_thread(stack.start_api, port)
    elif name == "slow-clients":
        assert stack.api is not None
        slow = asyncio.create_task(_slow_clients(stack.api.port, 300, seconds * 2 / 3))
        phase.healthz_worst_s = await _healthz_worst(stack.url, seconds * 2 / 3)
        await slow
    await load
    phase.rss_after = _rss(stack)
    return phase


def main(
    phase_s: float = typer.Option(20.0, help="seconds of arrivals per phase"),
    timeout_ms: float = typer.Option(10_000.0, help="each request's deadline"),
    claim_idle_s: float = typer.Option(5.0, help="GRAM_CLAIM_IDLE_S of the workers"),
    overload: float = typer.Option(4.0, help="the overload phase's rate, in multiples of capacity"),
    csv_out: Annotated[Path, typer.Option("--csv")] = Path("loadtests/results/chaos/chaos.csv"),
) -> None:
    """Run every phase once and print the table (and write it as CSV)."""
    env = {"GRAM_MODELS": "nqueens", "GRAM_TORCH_THREADS": "1", "GRAM_CPU_PATH": "bf16", "GRAM_SLOTS": "32",
           "GRAM_CLAIM_IDLE_S": str(claim_idle_s), "GRAM_WORKER_MAX_JOBS": "8"}
    stack = Stack(Path(tempfile.mkdtemp(prefix="gram-chaos-")), env)
    phases: list[Phase] = []
    capacity = 0.0
    try:
        stack.start(workers=2)
        capacity = asyncio.run(_capacity(stack.url, 10.0, 16))
        print(f"capacity ~{capacity:.1f} req/s (closed loop, 16 clients); logs in {stack.folder}")
        plan = [("overload", overload), ("worker-kill", 1.0), ("redis-restart", 1.0), ("api-restart", 1.0),
                ("slow-clients", 1.0)]
        for name, times in plan:
            phases.append(asyncio.run(_run_phase(stack, name, times * capacity, phase_s, timeout_ms,
                                                 claim_idle_s)))
            print(phases[-1].row())
    finally:
        stack.stop()
    rows = [p.row() for p in phases]
    table = Table(title=f"chaos run (capacity {capacity:.1f} req/s, deadline {timeout_ms:.0f} ms)")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row.values()])
    Console(width=200).print(table)
    csv_out.parent.mkdir(parents=True, exist_ok=True)
    with csv_out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {csv_out}")


if __name__ == "__main__":
    typer.run(main)
