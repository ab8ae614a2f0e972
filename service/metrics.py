"""The single definition of every ``gram_*`` Prometheus metric (dashboards and alerts query these names).

Engine metrics are module-level objects on the default registry, so an engine in the API process and an
engine in a ``gram worker`` process export the same series. HTTP RED metrics come from
prometheus-fastapi-instrumentator (``http_requests_total``, ``http_request_duration_seconds``, ...),
wired in service/app.py.

| name | type | labels | meaning |
|---|---|---|---|
| gram_queue_depth | gauge | model | jobs accepted but none of whose trajectories has started |
| gram_queue_wait_seconds | histogram | model | accept -> first trajectory admitted |
| gram_active_slots | gauge | model | slots running a trajectory |
| gram_slots_total | gauge | model | slots of the engine |
| gram_batch_occupancy | histogram | model | active slots / slots, once per iteration |
| gram_step_duration_seconds | histogram | model | one supervision step of the batch, incl. verify |
| gram_job_duration_seconds | histogram | task, outcome | accept -> result (complete/partial/aborted/error) |
| gram_trajectories_total | counter | model, outcome | valid/invalid/halted/stalled/exhausted/aborted |
| gram_distinct_solutions | histogram | task | distinct solutions per finished solve job |
| gram_rejected_total | counter | reason | queue_full / deadline / body_too_large / invalid_input / no_model |
| gram_jobs_total | counter | task, outcome | finished jobs |
| gram_cache_hits_total | counter | task | result-cache hits (incremented by the cache) |
| gram_cache_requests_total | counter | task | result-cache lookups (incremented by the cache) |
| gram_workers | gauge | | engine workers serving (1 in embedded mode; set by workers with Redis) |
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds buckets spanning a single CPU step (~10 ms) to a long wide job (minutes).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
_COUNT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)

QUEUE_DEPTH = Gauge("gram_queue_depth", "Jobs accepted and not yet started", ["model"])
QUEUE_WAIT = Histogram(
    "gram_queue_wait_seconds", "Accept to first trajectory admitted", ["model"], buckets=_LATENCY_BUCKETS
)
ACTIVE_SLOTS = Gauge("gram_active_slots", "Slots running a trajectory", ["model"])
SLOTS_TOTAL = Gauge("gram_slots_total", "Trajectory slots of the engine", ["model"])
BATCH_OCCUPANCY = Histogram(
    "gram_batch_occupancy", "Active slots / slots per iteration", ["model"], buckets=_RATIO_BUCKETS
)
STEP_DURATION = Histogram(
    "gram_step_duration_seconds",
    "One supervision step of the batch, including verification",
    ["model"],
    buckets=_STEP_BUCKETS,
)
JOB_DURATION = Histogram(
    "gram_job_duration_seconds", "Accept to result", ["task", "outcome"], buckets=_LATENCY_BUCKETS
)
TRAJECTORIES = Counter("gram_trajectories_total", "Retired trajectories by outcome", ["model", "outcome"])
DISTINCT_SOLUTIONS = Histogram(
    "gram_distinct_solutions", "Distinct valid solutions per solve job", ["task"], buckets=_COUNT_BUCKETS
)
REJECTED = Counter("gram_rejected_total", "Requests refused before reaching an engine", ["reason"])
JOBS = Counter("gram_jobs_total", "Finished jobs", ["task", "outcome"])
CACHE_HITS = Counter("gram_cache_hits_total", "Result-cache hits", ["task"])
CACHE_REQUESTS = Counter("gram_cache_requests_total", "Result-cache lookups", ["task"])
CACHE_BYPASSED = Counter(
    "gram_cache_bypassed_total",
    "Seeded jobs that skipped the result cache: the live workers serving their model disagree on its weights "
    "or answer settings, so no one key names the answer",
    ["model"],
)
WORKERS = Gauge("gram_workers", "Engine workers serving")

JOB_OUTCOMES = ("complete", "partial", "aborted", "error")
TRAJECTORY_OUTCOMES = ("valid", "invalid", "halted", "stalled", "exhausted", "aborted")
REJECT_REASONS = ("queue_full", "body_too_large", "invalid_input", "no_model")


def init_model_series(model: str, task: str, slots: int) -> None:
    """Create every labelled series of one model at 0, so dashboards and rate() see them before traffic."""
    QUEUE_DEPTH.labels(model=model).set(0)
    ACTIVE_SLOTS.labels(model=model).set(0)
    SLOTS_TOTAL.labels(model=model).set(slots)
    QUEUE_WAIT.labels(model=model)
    BATCH_OCCUPANCY.labels(model=model)
    STEP_DURATION.labels(model=model)
    for outcome in TRAJECTORY_OUTCOMES:
        TRAJECTORIES.labels(model=model, outcome=outcome)
    for outcome in JOB_OUTCOMES:
        JOBS.labels(task=task, outcome=outcome)
        JOB_DURATION.labels(task=task, outcome=outcome)
    DISTINCT_SOLUTIONS.labels(task=task)
    CACHE_HITS.labels(task=task)
    CACHE_REQUESTS.labels(task=task)
    for reason in REJECT_REASONS:
        REJECTED.labels(reason=reason)
