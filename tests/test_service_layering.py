"""The API side of Redis mode raises its errors (429, 503) without loading the model stack: no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_redis_queue_and_the_errors_import_no_torch() -> None:
    code = (
        "import sys, service.errors, service.queues, service.redis.queue\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('model'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_scheduler_does_not_import_the_settings() -> None:
    code = "import sys, service.scheduler\nassert 'service.settings' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
