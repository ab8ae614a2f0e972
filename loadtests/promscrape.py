"""Read the service's own engine figures from /metrics, as differences between two scrapes.

A histogram's ``_sum`` and ``_count`` only grow, so (sum_after - sum_before) / (count_after -
count_before) is the mean of the observations made between the two scrapes: the batch occupancy during
one load point, not since the server started.
"""

from __future__ import annotations

from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Engine metric names the service exports (service/metrics.py; docs/ARCHITECTURE.md, "Metrics").
BATCH_OCCUPANCY = "gram_batch_occupancy"
STEP_DURATION = "gram_step_duration_seconds"
QUEUE_WAIT = "gram_queue_wait_seconds"
TRAJECTORIES = "gram_trajectories_total"

Snapshot = dict[str, float]  # sample name (e.g. "gram_batch_occupancy_sum") -> value summed over labels


def parse_metrics(text: str, label_filter: dict[str, str] | None = None) -> Snapshot:
    """Sum every sample over its label sets (optionally only those matching ``label_filter``)."""
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if label_filter and any(sample.labels.get(k) != v for k, v in label_filter.items()):
                continue
            totals[sample.name] += sample.value
            # Per-outcome counters are worth keeping apart (e.g. trajectories by outcome).
            if "outcome" in sample.labels:
                totals[f"{sample.name}{{outcome={sample.labels['outcome']}}}"] += sample.value
    return dict(totals)


async def scrape(client: httpx.AsyncClient, base_url: str) -> Snapshot:
    """One scrape of /metrics; an empty snapshot when the service has no /metrics (yet)."""
    try:
        resp = await client.get(f"{base_url}/metrics", timeout=10.0)
    except httpx.HTTPError:
        return {}
    if resp.status_code != 200:
        return {}
    return parse_metrics(resp.text)


def delta(before: Snapshot, after: Snapshot, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def histogram_mean(before: Snapshot, after: Snapshot, metric: str) -> float:
    """Mean of the observations between two scrapes; NaN when there were none."""
    count = delta(before, after, f"{metric}_count")
    if count <= 0:
        return float("nan")
    return delta(before, after, f"{metric}_sum") / count


def in_flight(snapshot: Snapshot) -> float:
    """Work the engine still holds: queue depth plus active slots (gauges); 0 when not exported."""
    return sum(
        value
        for name, value in snapshot.items()
        if "{" not in name and ("queue_depth" in name or "active_slots" in name)
    )
