"""The docker-compose stack without Docker, for rendering the Grafana dashboard: redis-server, one
`gram worker`, one `gram serve` (Redis mode, as compose runs them) and a real Prometheus scraping both with
the shipped scrape jobs, every process on a free loopback port and stopped by its pid; plus a short mixed
load (every task, seeded repeats for cache hits, invalid requests, a burst past the queue limit for 429s).
Used by ``loadtests.render_dashboard``; needs redis-server and prometheus on PATH (`make system-deps`)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(grace_s)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])


def _binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise SystemExit(f"{name} is not installed (`make system-deps` installs it)")
    return path


def _wait(check: Callable[[], bool], timeout_s: float, what: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited while waiting for {what}\n{p.tail()}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}\n" +
                       "\n".join(p.tail() for p in procs))


def prometheus_config(api_port: int, worker_port: int, prom_port: int, scrape_s: int) -> dict[str, Any]:
    """The shipped config with compose's DNS discovery replaced by loopback targets and a short interval."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval=f"{scrape_s}s", evaluation_interval=f"{scrape_s}s")
    config["rule_files"] = [str(ALERTS)]
    targets = {"gram-api": api_port, "gram-worker": worker_port, "prometheus": prom_port}
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    return dict(config)


class Stack:
    """``with Stack(tmp, weights) as stack:`` gives ``stack.api_url`` and ``stack.prometheus_url``."""

    def __init__(self, tmp: Path, weights: Path, models: str, scrape_s: int = 2, max_queue: int = 6) -> None:
        self.tmp, self.weights, self.models = tmp, weights, models
        self.scrape_s, self.max_queue = scrape_s, max_queue
        self.procs: list[Proc] = []
        self.api_url = self.prometheus_url = ""

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def _start(self) -> None:
        tmp = self.tmp
        redis_port, worker_port, api_port, prom_port = (free_port() for _ in range(4))
        redis = Proc("redis", [_binary("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                     tmp / "redis.log", redis_port).start()
        self.procs.append(redis)
        # One CPU path on every process, as docker-compose pins it; bf16 eager starts without compiling.
        env = {"GRAM_QUEUE_URL": f"redis://127.0.0.1:{redis_port}/0", "GRAM_WEIGHTS_DIR": str(self.weights),
               "GRAM_MODELS": self.models, "GRAM_TORCH_THREADS": "1", "GRAM_CPU_PATH": "bf16",
               "GRAM_SLOTS": "16", "GRAM_MAX_QUEUE": str(self.max_queue), "PYTHONUNBUFFERED": "1"}
        gram = [sys.executable, "-c", "from service.cli import app; app()"]
        worker = Proc("worker", [*gram, "worker", "--metrics-host", "127.0.0.1", "--metrics-port",
                                 str(worker_port)], tmp / "worker.log", worker_port, env).start()
        api = Proc("api", [*gram, "serve", "--host", "127.0.0.1", "--port", str(api_port), "--log-level",
                           "warning"], tmp / "api.log", api_port, env).start()
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(api_port, worker_port, prom_port, self.scrape_s)))
        prom = Proc("prometheus", [_binary("prometheus"), f"--config.file={config}",
                                   f"--storage.tsdb.path={tmp / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}"],
                    tmp / "prometheus.log", prom_port).start()
        self.procs += [worker, api, prom]
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.prometheus_url = f"http://127.0.0.1:{prom_port}"
        _wait(lambda: httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200, 300,
              "the API's /readyz (the worker loading its models)", self.procs)
        _wait(lambda: _targets_up(self.prometheus_url) == 3, 60, "Prometheus scraping 3 targets", self.procs)


def _targets_up(base: str) -> int:
    targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return sum(t["health"] == "up" for t in targets)


SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


REPEATED = [  # seeded requests sent again and again: the result cache answers all but the first
    {"task": "sudoku", "puzzle": SUDOKU, "num_trajectories": 8, "max_solutions": 1, "seed": 0},
    {"task": "nqueens", "n": 8, "queens": [[0, 1]], "num_trajectories": 8, "max_solutions": 1, "seed": 0},
    {"task": "graph_coloring", "num_nodes": 6, "num_colors": 3, "num_trajectories": 8, "seed": 0,
     "edges": [[v, (v + 1) % 6] for v in range(6)]},
]


def request_body(rng: random.Random, i: int) -> dict[str, Any]:
    """One request of the mix: mostly unseeded solves of every task, 1 in 8 a seeded repeat (answered from
    the result cache), 1 in 25 invalid (422)."""
    if i % 25 == 24:
        return {"task": "nqueens", "n": 8, "queens": [[0, 0], [1, 1]]}  # queens attack each other
    if i % 8 == 0:
        return dict(rng.choice(REPEATED))
    kind = rng.choice(["sudoku", "nqueens", "nqueens", "graph_coloring", "graph_coloring"])
    if kind == "sudoku":
        cells = list(SUDOKU)
        for j in rng.sample([k for k, c in enumerate(cells) if c != "."], 3):
            cells[j] = "."  # a few variants of the puzzle
        body: dict[str, Any] = {"task": "sudoku", "puzzle": "".join(cells)}
    elif kind == "nqueens":
        n = rng.choice([6, 8, 8, 10])
        body = {"task": "nqueens", "n": n, "queens": [[0, rng.randrange(n)]]}
    else:
        n = rng.choice([6, 8, 10])
        body = {"task": "graph_coloring", "num_nodes": n, "num_colors": 3,
                "edges": [[v, (v + 1) % n] for v in range(n)] + [[0, n // 2]]}
    return {**body, "num_trajectories": rng.choice([4, 8, 16]), "max_solutions": rng.choice([1, 3]),
            "timeout_ms": 20000}


def rate_at(t: float, duration_s: float, base_rate: float) -> float:
    """Requests per second at ``t`` s into the load: the base rate, 2.5x in the middle third and a burst of
    10x for a few seconds near its end (past the queue limit: 429s)."""
    third = duration_s / 3
    if third <= t < 2 * third:
        burst = 2 * third - 6 <= t < 2 * third - 2
        return base_rate * (10.0 if burst else 2.5)
    return base_rate


async def run_load(api_url: str, duration_s: float, base_rate: float, seed: int = 0) -> dict[int, int]:
    """Open-loop Poisson arrivals at ``rate_at``; returns how many answers had each HTTP status."""
    rng = random.Random(seed)
    codes: dict[int, int] = {}
    tasks: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=64)

    async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as client:
        async def post(body: dict[str, Any]) -> None:
            try:
                status = (await client.post("/solve", json=body)).status_code
            except httpx.HTTPError:
                status = 0
            codes[status] = codes.get(status, 0) + 1

        start = time.monotonic()
        i = 0
        while (t := time.monotonic() - start) < duration_s:
            tasks.append(asyncio.create_task(post(request_body(rng, i))))
            i += 1
            await asyncio.sleep(rng.expovariate(rate_at(t, duration_s, base_rate)))
        await asyncio.gather(*tasks)
    return codes
