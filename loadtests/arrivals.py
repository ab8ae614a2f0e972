"""Open-loop arrival schedules: when each request is sent, fixed before the run starts.

The schedule never depends on how fast the server answers, so a stalled server shows up as latency and
queueing instead of being hidden by clients that wait for their previous answer (closed-loop bias).

Inter-arrival gaps are Gamma-distributed with mean 1/rate and coefficient of variation ``cv``:
``cv = 1`` is a Poisson process (exponential gaps); ``cv > 1`` is burstier (clusters of arrivals
separated by long gaps) at the same mean rate; ``cv < 1`` is more regular than Poisson.
"""

from __future__ import annotations

import numpy as np


def arrival_times(rate: float, duration_s: float, rng: np.random.Generator, cv: float = 1.0) -> np.ndarray:
    """Send offsets in seconds from the run's start, sorted, all in ``[0, duration_s)``.

    ``rate`` is the mean number of requests per second; ``cv`` the coefficient of variation of the gaps.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0 requests/s, got {rate}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if cv <= 0:
        raise ValueError(f"cv (burstiness) must be > 0, got {cv}")
    # Gamma(shape k, scale theta): mean k*theta = 1/rate, cv = 1/sqrt(k).
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    # Draw in chunks until the cumulative sum passes the horizon; the expected count is rate*duration.
    expected = rate * duration_s
    chunk = int(expected + 6.0 * np.sqrt(expected) * max(cv, 1.0) + 16)
    gaps = rng.gamma(shape, scale, size=chunk)
    times = np.cumsum(gaps)
    while times[-1] < duration_s:
        more = np.cumsum(rng.gamma(shape, scale, size=chunk)) + times[-1]
        times = np.concatenate([times, more])
    # The first arrival is at the first gap, not at 0, so the process is stationary from t = 0.
    return times[times < duration_s]
