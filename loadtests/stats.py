"""What one load point measured: per-request records in, one summary row out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# status 0 = no HTTP answer at all (connection refused, reset, client timeout).
NO_RESPONSE = 0


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are seconds from the load point's start."""

    kind: str  # workload item label, e.g. "nqueens8-k2"
    scheduled_s: float  # when the open-loop schedule said to send it
    sent_s: float  # when it was actually sent (> scheduled_s if the generator fell behind)
    done_s: float | None = None  # when the answer (or the failure) arrived
    status: int = NO_RESPONSE
    error: str = ""
    complete: bool | None = None  # the service's "complete" flag on 200 (None for /sample or failures)
    num_solutions: int | None = None
    server_steps: int | None = None  # supervision steps the service says it ran for this request
    server_elapsed_ms: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.done_s is None else self.done_s - self.sent_s

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> list[float]:
    """Linear-interpolated percentiles (numpy's default); NaN for an empty sample."""
    if len(values) == 0:
        return [float("nan")] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=float), list(qs))]


@dataclass
class LoadPointSummary:
    mode: str
    workload: str
    offered_rps: float  # the schedule's mean rate
    arrived_rps: float  # requests the seeded schedule actually sent per second of the offered window
    duration_s: float
    sent: int
    ok: int
    throughput_rps: float  # successful answers per second of makespan
    goodput_rps: float  # successful answers within the latency target per second of makespan
    slo_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    mean_s: float
    rate_429: float  # fraction of sent requests answered 429 (overload, shed)
    rate_error: float  # fraction answered with any other non-2xx, or not answered at all
    rate_incomplete: float  # fraction of 200s with complete=false (deadline hit, partial result)
    solutions_per_ok: float  # mean distinct solutions per successful /solve
    # mean supervision steps per /solve of the trajectories its answer is made of (the response's `steps`);
    # continuous mode also runs trajectories past a job's answer (beyond a seeded job's reproducible
    # prefix, or still running when first-found completes it) that are not counted here
    traj_steps_per_ok: float
    max_send_lag_s: float  # how far the generator fell behind its own schedule
    makespan_s: float
    mean_batch_occupancy: float = float("nan")  # from the service's /metrics histogram, this point only
    steps_per_s: float = float("nan")  # engine supervision steps per second over the point
    extra: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


def summarise(
    records: Sequence[RequestRecord],
    *,
    mode: str,
    workload: str,
    offered_rps: float,
    duration_s: float,
    slo_s: float,
) -> LoadPointSummary:
    """Summarise one load point. Latency percentiles are over successful answers only: 429s return at
    once and would make an overloaded server look fast; they are counted in ``rate_429`` instead."""
    sent = len(records)
    ok = [r for r in records if r.ok]
    latencies = [r.latency_s for r in ok if r.latency_s is not None]
    n429 = sum(1 for r in records if r.status == 429)
    n_err = sum(1 for r in records if not r.ok and r.status != 429)
    if sent:
        start = min(r.sent_s for r in records)
        end = max((r.done_s for r in records if r.done_s is not None), default=start)
        # Never shorter than the offered window: a light load must not look faster than it was offered.
        makespan = max(end - start, duration_s)
    else:
        makespan = duration_s
    solve_ok = [r for r in ok if r.complete is not None]
    p50, p95, p99 = percentiles(latencies)
    return LoadPointSummary(
        mode=mode,
        workload=workload,
        offered_rps=offered_rps,
        arrived_rps=sent / duration_s,
        duration_s=duration_s,
        sent=sent,
        ok=len(ok),
        throughput_rps=len(ok) / makespan,
        goodput_rps=sum(1 for v in latencies if v <= slo_s) / makespan,
        slo_s=slo_s,
        p50_s=p50,
        p95_s=p95,
        p99_s=p99,
        mean_s=float(np.mean(latencies)) if latencies else float("nan"),
        rate_429=n429 / sent if sent else 0.0,
        rate_error=n_err / sent if sent else 0.0,
        rate_incomplete=(sum(1 for r in solve_ok if not r.complete) / len(solve_ok)) if solve_ok else 0.0,
        solutions_per_ok=(
            float(np.mean([r.num_solutions or 0 for r in solve_ok])) if solve_ok else float("nan")
        ),
        traj_steps_per_ok=(
            float(np.mean([r.server_steps for r in solve_ok if r.server_steps is not None]))
            if any(r.server_steps is not None for r in solve_ok)
            else float("nan")
        ),
        max_send_lag_s=max((r.sent_s - r.scheduled_s for r in records), default=0.0),
        makespan_s=makespan,
    )
