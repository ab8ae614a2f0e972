"""Start the real service (`gram serve`) as a child process on a free loopback port, and stop it by pid.

The sweep and the smoke test use this so every batching mode is measured on the same machine, workload
and checkpoints, with nothing started by hand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


class ServiceStartError(RuntimeError):
    pass


def free_port() -> int:
    """A port the kernel says is free on 127.0.0.1 (bind to 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """``with ServiceProcess(mode="continuous", env={...}) as svc: httpx.get(svc.url + "/readyz")``."""

    def __init__(
        self,
        mode: str,
        *,
        weights_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 180.0,
        repo: Path | None = None,
    ) -> None:
        self.mode = mode
        self.repo = repo or REPO_ROOT  # the checkout whose code serves (e.g. a baseline worktree)
        self.weights_dir = weights_dir
        self.extra_env = dict(env or {})
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"gram-serve-{mode}-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)

    def start(self) -> ServiceProcess:
        env = dict(os.environ)
        env["GRAM_BATCHING"] = self.mode
        if self.weights_dir is not None:
            env["GRAM_WEIGHTS_DIR"] = str(self.weights_dir)
        env.update(self.extra_env)
        if self.repo != REPO_ROOT:
            env["PYTHONPATH"] = str(self.repo)
        # Import the CLI app directly: works whether or not the `gram` console script is installed.
        cmd = [
            sys.executable,
            "-c",
            "from service.cli import app; app()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, cwd=self.repo, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceStartError(
                    f"gram serve ({self.mode}) exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise ServiceStartError(
            f"gram serve ({self.mode}) not ready after {self.ready_timeout_s:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the child by pid, SIGKILL it if it has not exited after ``grace_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=grace_s)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._log.close()
        if exc_type is None:  # keep the server's log only when something went wrong
            self.log_path.unlink(missing_ok=True)
