"""Ratios between batching modes from one sweep: throughput each mode sustains at the same p99."""

from __future__ import annotations

import math
from collections.abc import Sequence

from loadtests.stats import LoadPointSummary


def meets_target(point: LoadPointSummary, p99_target_s: float, max_rejected: float = 0.01) -> bool:
    """The point answered with p99 within the target and rejected or failed at most ``max_rejected`` of
    its requests (shedding load is not serving it)."""
    shed = point.rate_429 + point.rate_error
    return point.ok > 0 and point.p99_s <= p99_target_s and shed <= max_rejected


def sustained_throughput(
    points: Sequence[LoadPointSummary], p99_target_s: float, max_rejected: float = 0.01
) -> float:
    """Best achieved throughput among load points that meet the target (``meets_target``). 0 if none."""
    ok = [p.throughput_rps for p in points if meets_target(p, p99_target_s, max_rejected)]
    return max(ok, default=0.0)


def refinement_rate(
    points: Sequence[LoadPointSummary], p99_target_s: float, max_rejected: float = 0.01,
    min_ratio: float = 1.02,
) -> float | None:
    """The offered load to try next to place a mode's sustained throughput closer than its load grid
    does: the geometric midpoint of the bracket between the highest offered load that met the target
    and the lowest higher one that did not. None without such a bracket (nothing met the target, or
    nothing above failed) or once the bracket is narrower than ``min_ratio``."""
    passed = [p.offered_rps for p in points if meets_target(p, p99_target_s, max_rejected)]
    if not passed:
        return None
    lo = max(passed)
    above = [p for p in points if p.offered_rps > lo and not meets_target(p, p99_target_s, max_rejected)]
    if not above:
        return None
    hi = min(p.offered_rps for p in above)
    if hi / lo < min_ratio:
        return None
    return round(math.sqrt(lo * hi), 4)


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
