"""The processes the chaos run (loadtests/chaos.py) starts and breaks, all on loopback: a redis-server with
an append-only file, one `gram serve` in Redis mode, `gram worker`s. Each is stopped by its own pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loadtests.server import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
GRAM = str(Path(sys.executable).parent / "gram")


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
            self.proc = subprocess.Popen(self.args, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int, wait_s: float = 10.0) -> None:
        if self.alive():
            os.kill(self.pid, sig)
            try:
                self.proc.wait(wait_s)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)  # type: ignore[union-attr]

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


class Stack:
    """``Stack(folder, env).start(workers=2)``; the fault helpers kill and restart its parts in place."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.redis_port = free_port()
        queue = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {"GRAM_QUEUE_URL": queue, "PYTHONUNBUFFERED": "1", **env}
        self.redis: Proc | None = None
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self._count = 0

    @property
    def url(self) -> str:
        assert self.api is not None
        return f"http://127.0.0.1:{self.api.port}"

    def start(self, workers: int) -> Stack:
        self.start_redis()
        self.workers = [self.start_worker() for _ in range(workers)]
        self.start_api()
        wait_for(lambda: httpx.get(self.url + "/readyz", timeout=2).status_code == 200, 300, "/readyz")
        return self

    def start_redis(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        args = [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.folder)]
        self.redis = Proc("redis", args, self.folder / "redis.log", self.redis_port).start()
        import redis as redis_py

        wait_for(lambda: redis_py.Redis(port=self.redis_port, socket_timeout=1).ping(), 20, "redis-server")

    def start_worker(self) -> Proc:
        self._count += 1
        port = free_port()
        return Proc(f"worker{self._count}", [GRAM, "worker", "--metrics-host", "127.0.0.1", "--metrics-port",
                                             str(port), "--grace-s", "5"],
                    self.folder / f"worker{self._count}.log", port, self.env).start()

    def start_api(self, port: int | None = None) -> None:
        port = port or free_port()
        self.api = Proc("api", [GRAM, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level",
                                "warning"], self.folder / "api.log", port, self.env).start()
        wait_for(lambda: httpx.get(self.url + "/healthz", timeout=2).status_code == 200, 60, "the API")

    def stop(self) -> None:
        for proc in [self.api, *self.workers, self.redis]:
            if proc is not None:
                proc.signal(signal.SIGTERM)
