"""Property-based requests generated from /openapi.json (schemathesis): no input may cause a 5xx.

In-process over ASGI on tiny random models with small caps, bounded to a few dozen examples per operation
so it stays in seconds.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from model.gram import tiny_model
from model.tasks.registry import get_task
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings

SETTINGS = Settings(slots=16, max_trajectories=8, max_steps_cap=4, max_timeout_ms=2000, max_queue=64)
RUNTIME = Runtime.from_models(
    SETTINGS, {t: (tiny_model(t), get_task(t)) for t in ("sudoku", "nqueens", "graph_coloring", "mnist")}
)
APP = create_app(SETTINGS, runtime=RUNTIME)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
