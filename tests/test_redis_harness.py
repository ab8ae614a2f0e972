"""Real servers for the Redis-mode and Prometheus tests: redis-server, `gram worker`, `gram serve` and
prometheus, each started on a free loopback port and stopped by its pid. The servers are required: a
missing binary fails the tests (never skips them).

Checkpoints: the shipped ones in model/weights when every solve task has one, else tiny random models
written to a temporary folder (``model.gram.tiny_model``)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "model" / "weights"
SOLVE_TASKS = ("sudoku", "nqueens", "graph_coloring")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(binary: str) -> str:
    path = shutil.which(binary)
    assert path, f"{binary} is not installed (make test installs it); the Redis/Prometheus tests need it"
    return path


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # not up yet
            last = err
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


@dataclass
class Server:
    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        out.close()
        _STARTED.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crashed machine)."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)  # type: ignore[union-attr]

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])


_STARTED: list[Server] = []


@atexit.register
def _stop_leftovers() -> None:
    """A test run cut short (timeout, Ctrl-C) must not leave servers behind: stop them by pid."""
    for server in _STARTED:
        server.stop(timeout_s=5)


def start_redis(tmp: Path, port: int | None = None) -> Server:
    port = port or free_port()
    server = Server("redis", [need("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                    tmp / f"redis-{port}.log", port=port).start()
    wait_until(lambda: _redis_ping(port), 10, f"redis-server on {port}")
    return server


def _redis_ping(port: int) -> bool:
    import redis

    return bool(redis.Redis(port=port, socket_timeout=1).ping())


def weights_dir(tmp: Path, *, force_tiny: bool = False, **tiny_overrides: Any) -> Path:
    """The shipped checkpoints when every solve task has one (and not ``force_tiny``), else tiny ones."""
    if not force_tiny and _shipped_tasks() >= set(SOLVE_TASKS):
        return SHIPPED
    from model.checkpoint import save_checkpoint
    from model.gram import tiny_model

    folder = tmp / "weights"
    folder.mkdir(exist_ok=True)
    for task in SOLVE_TASKS:
        save_checkpoint(tiny_model(task, **tiny_overrides), folder / f"{task}.safetensors")
    return folder


def _shipped_tasks() -> set[str]:
    from model.checkpoint import read_config

    tasks = set()
    for path in SHIPPED.glob("*.safetensors"):
        try:
            tasks.add(read_config(path)[0].task)
        except Exception:  # a half-written checkpoint while training: not shipped yet
            continue
    return tasks


def gram_env(redis_url: str, weights: Path, **extra: str) -> dict[str, str]:
    env = {
        "GRAM_QUEUE_URL": redis_url, "GRAM_WEIGHTS_DIR": str(weights), "GRAM_TORCH_THREADS": "1",
        "GRAM_CLAIM_IDLE_S": "1.5", "PYTHONUNBUFFERED": "1",
        # One CPU path for every process, as docker-compose pins it: the e2e tests compare answers across
        # processes, and auto may time its candidates differently in each. bf16 eager: no compilation.
        "GRAM_CPU_PATH": "bf16",
    }
    if weights == SHIPPED:  # one model per solve task, the first by name (as the service routes by task)
        names: dict[str, str] = {}
        for path in sorted(SHIPPED.glob("*.safetensors")):
            names.setdefault(_config_task(path), path.stem)
        env["GRAM_MODELS"] = ",".join(names[t] for t in SOLVE_TASKS)
    env.update(extra)
    return env


def _config_task(path: Path) -> str:
    from model.checkpoint import read_config

    try:
        return read_config(path)[0].task
    except Exception:
        return ""


def start_worker(tmp: Path, env: dict[str, str], name: str = "worker") -> Server:
    port = free_port()
    gram = str(Path(sys.executable).parent / "gram")
    return Server(name, [gram, "worker", "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
                         "--grace-s", "5", "--log-level", "info"],
                  tmp / f"{name}-{port}.log", env=env, port=port).start()


def start_api(tmp: Path, env: dict[str, str], name: str = "api") -> Server:
    port = free_port()
    gram = str(Path(sys.executable).parent / "gram")
    return Server(name, [gram, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                  tmp / f"{name}-{port}.log", env=env, port=port).start()


def wait_ready(api: Server, workers: list[Server], timeout_s: float = 90) -> None:
    """/readyz of the API says ready and every worker's /healthz answers."""
    for server in [api, *workers]:
        assert server.alive(), server.tail()
    for worker in workers:
        wait_until(lambda w=worker: httpx.get(f"http://127.0.0.1:{w.port}/healthz", timeout=2).status_code
                   == 200 or not w.alive(), timeout_s, f"{worker.name} /healthz")
        assert worker.alive(), worker.tail()
    url = f"http://127.0.0.1:{api.port}/readyz"
    wait_until(lambda: httpx.get(url, timeout=2).status_code == 200 or not api.alive(), timeout_s,
               "API /readyz")
    assert api.alive(), api.tail()
    # every worker registered (the API routes to them)
    import redis

    client = redis.Redis.from_url(api.env["GRAM_QUEUE_URL"])
    wait_until(lambda: len(list(client.scan_iter("gram:worker:*"))) >= len(workers), timeout_s,
               "worker registrations")


def test_redis_server_starts_answers_and_stops_by_pid(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        assert _redis_ping(server.port)
    finally:
        server.stop()
    assert not server.alive()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
