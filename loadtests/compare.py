"""Ratios between batching modes from one sweep: throughput each mode sustains at the same p99."""

from __future__ import annotations

import math
from collections.abc import Sequence

from loadtests.stats import LoadPointSummary


def sustained_throughput(
    points: Sequence[LoadPointSummary], p99_target_s: float, max_rejected: float = 0.01
) -> float:
    """Best achieved throughput among load points whose p99 is within the target and that rejected or
    failed at most ``max_rejected`` of their requests (shedding load is not serving it). 0 if none."""
    ok = [
        p.throughput_rps
        for p in points
        if p.ok > 0 and p.p99_s <= p99_target_s and (p.rate_429 + p.rate_error) <= max_rejected
    ]
    return max(ok, default=0.0)


def saturated(point: LoadPointSummary, p99_cap_s: float) -> bool:
    """Past saturation: the service no longer keeps up with the offered load."""
    return (
        point.throughput_rps < 0.8 * point.arrived_rps
        or point.rate_429 + point.rate_error > 0.05
        or not point.p99_s <= p99_cap_s  # NaN (nothing answered) counts as saturated
    )


def mode_ratio(
    summaries: Sequence[LoadPointSummary], numerator: str, denominator: str, p99_target_s: float
) -> float:
    """throughput(numerator) / throughput(denominator) at equal p99; inf if only the numerator meets the
    target, NaN if neither does."""
    num = sustained_throughput([s for s in summaries if s.mode == numerator], p99_target_s)
    den = sustained_throughput([s for s in summaries if s.mode == denominator], p99_target_s)
    if den == 0.0:
        return math.inf if num > 0 else math.nan
    return num / den
