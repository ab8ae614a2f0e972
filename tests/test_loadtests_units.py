"""The load-test harness without a server: arrival statistics, percentile maths, summaries, open-loop
sending, /metrics parsing, mode ratios and the workload generators."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from loadtests import compare, promscrape
from loadtests.arrivals import arrival_times
from loadtests.loadgen import run_schedule
from loadtests.stats import NO_RESPONSE, LoadPointSummary, RequestRecord, percentiles, summarise
from loadtests.workloads import (
    SUDOKU_GIVENS,
    Request,
    make_requests,
    nqueens_solutions,
    parse_max_solutions,
    sudoku_grid,
)

# ---- arrivals -----------------------------------------------------------------------------------------


def test_poisson_arrivals_have_the_offered_rate_and_exponential_gaps() -> None:
    rate, duration = 40.0, 250.0
    times = arrival_times(rate, duration, np.random.default_rng(1))
    n = len(times)
    expected = rate * duration  # Poisson count: sd = sqrt(10000) = 100
    assert abs(n - expected) < 4 * math.sqrt(expected)
    gaps = np.diff(times)
    assert abs(gaps.mean() - 1 / rate) < 0.03 / rate
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05  # exponential: CV = 1
    # Counts in 1 s windows of a Poisson process have variance = mean (index of dispersion 1).
    counts = np.bincount(times.astype(int), minlength=int(duration))
    assert abs(counts.var() / counts.mean() - 1.0) < 0.15
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] < duration


def test_bursty_arrivals_keep_the_mean_rate_but_cluster() -> None:
    rate, duration = 40.0, 250.0
    times = arrival_times(rate, duration, np.random.default_rng(2), cv=3.0)
    gaps = np.diff(times)
    assert abs(len(times) / duration - rate) / rate < 0.1
    assert gaps.std() / gaps.mean() > 2.5
    counts = np.bincount(times.astype(int), minlength=int(duration))
    assert counts.var() / counts.mean() > 3.0  # overdispersed: bursts and lulls


def test_arrivals_are_reproducible_and_reject_bad_parameters() -> None:
    a = arrival_times(5.0, 10.0, np.random.default_rng(7))
    b = arrival_times(5.0, 10.0, np.random.default_rng(7))
    assert np.array_equal(a, b)
    for kwargs in ({"rate": 0.0}, {"duration_s": -1.0}, {"cv": 0.0}):
        args = {"rate": 1.0, "duration_s": 1.0, "rng": np.random.default_rng(0), **kwargs}
        with pytest.raises(ValueError):
            arrival_times(**args)


# ---- stats --------------------------------------------------------------------------------------------


def test_percentiles_interpolate_linearly() -> None:
    values = list(range(1, 101))  # 1..100
    p50, p95, p99 = percentiles(values)
    assert p50 == pytest.approx(50.5)
    assert p95 == pytest.approx(95.05)
    assert p99 == pytest.approx(99.01)
    assert percentiles([3.0], (50, 99)) == [3.0, 3.0]
    assert all(math.isnan(v) for v in percentiles([]))


def _rec(
    latency: float | None, status: int, sent: float = 0.0, complete: bool | None = True
) -> RequestRecord:
    return RequestRecord(
        kind="k",
        scheduled_s=sent,
        sent_s=sent,
        done_s=None if latency is None else sent + latency,
        status=status,
        complete=complete if 200 <= status < 300 else None,
        num_solutions=2 if 200 <= status < 300 else None,
        server_steps=int(10 * latency) if latency is not None and 200 <= status < 300 else None,
    )


def test_summary_counts_rates_goodput_and_excludes_rejections_from_latency() -> None:
    records = [
        _rec(1.0, 200, sent=0.0),
        _rec(2.0, 200, sent=1.0),
        _rec(3.0, 200, sent=2.0, complete=False),
        _rec(10.0, 200, sent=3.0),  # finishes at 13 s: the makespan
        _rec(0.01, 429, sent=4.0),
        _rec(None, NO_RESPONSE, sent=5.0),
        _rec(0.02, 422, sent=6.0),
        _rec(0.02, 503, sent=7.0),
    ]
    s = summarise(records, mode="m", workload="w", offered_rps=1.0, duration_s=8.0, slo_s=5.0)
    assert (s.sent, s.ok) == (8, 4)
    assert s.makespan_s == pytest.approx(13.0)
    assert s.throughput_rps == pytest.approx(4 / 13)
    assert s.goodput_rps == pytest.approx(3 / 13)  # the 10 s answer misses the 5 s target
    assert s.rate_429 == pytest.approx(1 / 8)
    assert s.rate_error == pytest.approx(3 / 8)  # no answer, 422, 503
    assert s.rate_incomplete == pytest.approx(1 / 4)
    assert s.p50_s == pytest.approx(2.5)  # over 1, 2, 3, 10 only: the fast 429 is not a latency
    assert s.solutions_per_ok == pytest.approx(2.0)
    assert s.traj_steps_per_ok == pytest.approx((10 + 20 + 30 + 100) / 4)


def test_light_load_makespan_is_at_least_the_offered_window() -> None:
    s = summarise(
        [_rec(0.1, 200, sent=0.5)], mode="m", workload="w", offered_rps=0.1, duration_s=10.0, slo_s=1.0
    )
    assert s.throughput_rps == pytest.approx(0.1)


# ---- open-loop sending --------------------------------------------------------------------------------


def test_sends_on_schedule_while_earlier_requests_are_still_waiting() -> None:
    """A server that takes 0.6 s per answer must not delay later sends (open loop, no client-side queue)."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.6)
        body = {"solutions": [{}], "complete": True, "steps": 7, "elapsed_ms": 600.0}
        return httpx.Response(200, json=body)

    times = [0.05 * i for i in range(20)]  # 20 requests in 1 s, all in flight together
    reqs = [Request("/solve", {"task": "nqueens"}, "k")] * len(times)

    async def go() -> list[RequestRecord]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
            return await run_schedule(client, "http://test", reqs, times, timeout_s=5.0)

    records = asyncio.run(go())
    lags = [r.sent_s - r.scheduled_s for r in records]
    assert max(lags) < 0.1
    assert all(r.ok and r.latency_s is not None and 0.55 < r.latency_s < 1.0 for r in records)
    assert all(r.server_steps == 7 and r.num_solutions == 1 and r.complete for r in records)


def test_failures_are_recorded_not_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(429, headers={"Retry-After": "1"}, text="queue full")

    reqs = [Request("/solve", {}, "a"), Request("/boom", {}, "b")]

    async def go() -> list[RequestRecord]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await run_schedule(client, "http://test", reqs, [0.0, 0.0], timeout_s=1.0)

    shed, refused = asyncio.run(go())
    assert shed.status == 429 and "queue full" in shed.error
    assert refused.status == NO_RESPONSE and "ConnectError" in refused.error and refused.done_s is not None


# ---- /metrics -----------------------------------------------------------------------------------------

METRICS_BEFORE = """\
# HELP gram_batch_occupancy Fraction of slots in use per step.
# TYPE gram_batch_occupancy histogram
gram_batch_occupancy_bucket{model="nqueens",le="0.5"} 1.0
gram_batch_occupancy_bucket{model="nqueens",le="+Inf"} 2.0
gram_batch_occupancy_sum{model="nqueens"} 1.0
gram_batch_occupancy_count{model="nqueens"} 2.0
gram_batch_occupancy_sum{model="sudoku"} 0.5
gram_batch_occupancy_count{model="sudoku"} 1.0
# TYPE gram_trajectories_total counter
gram_trajectories_total{model="nqueens",outcome="valid"} 3.0
gram_trajectories_total{model="nqueens",outcome="halted"} 1.0
# TYPE gram_queue_depth gauge
gram_queue_depth{model="nqueens"} 0.0
"""

METRICS_AFTER = (
    METRICS_BEFORE.replace(
        'gram_batch_occupancy_sum{model="nqueens"} 1.0', 'gram_batch_occupancy_sum{model="nqueens"} 4.0'
    )
    .replace(
        'gram_batch_occupancy_count{model="nqueens"} 2.0', 'gram_batch_occupancy_count{model="nqueens"} 6.0'
    )
    .replace('gram_queue_depth{model="nqueens"} 0.0', 'gram_queue_depth{model="nqueens"} 3.0')
)


def test_histogram_mean_is_taken_between_two_scrapes_over_all_models() -> None:
    before = promscrape.parse_metrics(METRICS_BEFORE)
    after = promscrape.parse_metrics(METRICS_AFTER)
    assert before["gram_batch_occupancy_sum"] == pytest.approx(1.5)  # summed over models
    assert promscrape.histogram_mean(before, after, "gram_batch_occupancy") == pytest.approx(3.0 / 4.0)
    assert math.isnan(promscrape.histogram_mean(before, before, "gram_batch_occupancy"))
    assert before["gram_trajectories_total{outcome=valid}"] == 3.0
    assert promscrape.in_flight(before) == 0.0 and promscrape.in_flight(after) == 3.0
    only_sudoku = promscrape.parse_metrics(METRICS_BEFORE, {"model": "sudoku"})
    assert only_sudoku["gram_batch_occupancy_sum"] == pytest.approx(0.5)


# ---- mode comparison ----------------------------------------------------------------------------------


def _point(mode: str, offered: float, thru: float, p99: float, shed: float = 0.0) -> LoadPointSummary:
    return LoadPointSummary(
        mode=mode,
        workload="w",
        offered_rps=offered,
        arrived_rps=offered,
        duration_s=10,
        sent=100,
        ok=100,
        throughput_rps=thru,
        goodput_rps=thru,
        slo_s=5,
        p50_s=p99 / 2,
        p95_s=p99,
        p99_s=p99,
        mean_s=p99 / 2,
        rate_429=shed,
        rate_error=0.0,
        rate_incomplete=0.0,
        solutions_per_ok=1.0,
        traj_steps_per_ok=10.0,
        max_send_lag_s=0.0,
        makespan_s=10.0,
    )


def test_ratio_at_equal_p99_uses_the_best_point_within_target_and_ignores_shedding_points() -> None:
    sweep = [
        _point("continuous", 1, 1.0, 0.5),
        _point("continuous", 4, 3.9, 2.0),
        _point("continuous", 8, 7.5, 4.0),
        _point("continuous", 16, 9.0, 30.0),  # past saturation: over the target
        _point("request", 1, 1.0, 1.0),
        _point("request", 2, 1.5, 6.0),
        _point("request", 4, 2.5, 1.0, shed=0.5),  # fast only because half was rejected
        _point("serial", 1, 0.5, 9.0),
    ]
    assert compare.sustained_throughput([p for p in sweep if p.mode == "continuous"], 5.0) == 7.5
    assert compare.mode_ratio(sweep, "continuous", "request", 5.0) == pytest.approx(7.5)
    assert compare.mode_ratio(sweep, "continuous", "serial", 5.0) == math.inf
    assert math.isnan(compare.mode_ratio(sweep, "serial", "serial", 5.0))
    assert compare.saturated(sweep[3], p99_cap_s=20.0)  # p99 over the cap
    assert compare.saturated(_point("x", 10, 5.0, 1.0), p99_cap_s=20.0)  # half the offered load
    assert not compare.saturated(sweep[1], p99_cap_s=20.0)


def test_refinement_bisects_the_bracket_around_the_last_load_within_target() -> None:
    grid = [
        _point("c", 10, 10.0, 1.0),
        _point("c", 13, 13.0, 1.5),
        _point("c", 16.9, 16.0, 2.0, shed=0.05),  # within p99 but shedding: beyond the target
        _point("c", 22, 18.0, 9.0),
    ]
    assert compare.refinement_rate(grid, 5.0) == pytest.approx(math.sqrt(13 * 16.9), abs=1e-4)
    # a noisy pass above a failure moves the bracket's bottom up to it
    noisy = grid + [_point("c", 20, 19.0, 3.0)]
    assert compare.refinement_rate(noisy, 5.0) == pytest.approx(math.sqrt(20 * 22), abs=1e-4)
    assert compare.refinement_rate(grid[:2], 5.0) is None  # nothing above failed
    assert compare.refinement_rate(grid[2:], 5.0) is None  # nothing met the target
    assert compare.refinement_rate([_point("c", 13, 13, 1), _point("c", 13.1, 9, 9)], 5.0) is None  # close


def test_sweep_refines_toward_the_capacity_the_grid_straddles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake service that keeps p99 within target up to 27 req/s: the grid (10, 20, 40) says 20;
    three bisections place it at 25.9, and the points come back in load order."""
    from loadtests import sweep

    offered: list[float] = []

    def fake_point(base_url: str, mode: str, cfg: sweep.SweepConfig, rate: float) -> LoadPointSummary:
        offered.append(rate)
        return _point(mode, rate, min(rate, 27.0), 1.0 if rate <= 27 else 30.0)

    monkeypatch.setattr(sweep, "_load_point", fake_point)
    cfg = sweep.SweepConfig(
        workload="nqueens8", width=16, rates=[10, 20, 40], duration_s=0.0, cv=1.0, slo_s=5.0,
        p99_cap_s=20.0, past_saturation=0, request_timeout_s=1.0, seed=0, refine=3,
    )  # fmt: skip
    points = sweep.sweep_mode("http://unused", "continuous", cfg, deadline=math.inf)
    assert offered[:3] == [10, 20, 40]
    assert offered[3:] == pytest.approx([28.2843, 23.7842, 25.9368], abs=1e-3)
    assert [p.offered_rps for p in points] == sorted(offered)
    assert compare.sustained_throughput(points, 5.0) == pytest.approx(25.9368, abs=1e-3)
    no_refine = sweep.sweep_mode("http://unused", "continuous", replace(cfg, refine=0), deadline=math.inf)
    assert compare.sustained_throughput(no_refine, 5.0) == 20


# ---- workloads ----------------------------------------------------------------------------------------


def _attacks(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] == b[0] or a[1] == b[1] or abs(a[0] - b[0]) == abs(a[1] - b[1])


def test_nqueens_solutions_are_all_92_and_preplaced_queens_never_attack() -> None:
    sols = nqueens_solutions(8)
    assert len(sols) == 92 and len(set(sols)) == 92
    for req in make_requests("nqueens8", 16, 200, seed=3):
        queens = [tuple(q) for q in req.body["queens"]]
        assert 1 <= len(queens) <= 3 and req.body["n"] == 8 and req.body["num_trajectories"] == 16
        assert not any(_attacks(a, b) for a, b in itertools.combinations(queens, 2))
    ks = {len(r.body["queens"]) for r in make_requests("nqueens8", 16, 200, seed=3)}
    assert ks == {1, 2, 3}  # mixed numbers of pre-placed queens


def test_sudoku_grids_are_valid_and_difficulties_mixed() -> None:
    rng = random.Random(0)
    for _ in range(50):
        g = sudoku_grid(rng)
        units = [g[r] for r in range(9)] + [[g[r][c] for r in range(9)] for c in range(9)]
        units += [
            [g[r][c] for r in range(br, br + 3) for c in range(bc, bc + 3)]
            for br in (0, 3, 6)
            for bc in (0, 3, 6)
        ]
        assert all(sorted(u) == list(range(1, 10)) for u in units)
    reqs = make_requests("sudoku", 4, 60, seed=1)
    givens = {81 - r.body["puzzle"].count(".") for r in reqs}
    assert givens == set(SUDOKU_GIVENS.values())


def _colourable(n: int, edges: list[list[int]], k: int, fixed: dict[str, int]) -> bool:
    colours = [-1] * n
    earlier = {v: {a for a, b in edges if b == v} for v in range(n)}  # edges come as [u, v] with u < v

    def go(v: int) -> bool:
        if v == n:
            return True
        options = [fixed[str(v)]] if str(v) in fixed else range(k)
        for c in options:
            if all(colours[u] != c for u in earlier[v]):
                colours[v] = c
                if go(v + 1):
                    return True
        colours[v] = -1
        return False

    return go(0)


def test_colouring_instances_are_solvable_with_their_fixed_nodes() -> None:
    for req in make_requests("coloring", 8, 40, seed=5):
        b = req.body
        assert 6 <= b["num_nodes"] <= 12 and b["num_colors"] in (3, 4) and b["edges"]
        assert _colourable(b["num_nodes"], b["edges"], b["num_colors"], b.get("fixed", {}))


def test_mixes_are_deterministic_and_cover_their_families() -> None:
    a = make_requests("mix-sample", "mixed", 120, seed=9)
    assert a == make_requests("mix-sample", "mixed", 120, seed=9)
    assert {r.body.get("task", r.path) for r in a} == {"nqueens", "sudoku", "graph_coloring", "/sample"}
    widths = {r.body["num_trajectories"] for r in a if r.path == "/solve"}
    assert widths == {1, 4, 16, 64}
    with pytest.raises(ValueError):
        make_requests("nope", 1, 1, seed=0)


def test_max_solutions_sets_only_that_field_of_solve_requests() -> None:
    plain = make_requests("mix-sample", 16, 60, seed=4)
    one = make_requests("mix-sample", 16, 60, seed=4, max_solutions=1)
    mixed = make_requests("mix-sample", 16, 60, seed=4, max_solutions=parse_max_solutions("mixed"))
    for a, b, c in zip(plain, one, mixed, strict=True):
        if a.path == "/sample":
            assert a == b == c  # /sample has no max_solutions
            continue
        assert "max_solutions" not in a.body
        assert b.body == {**a.body, "max_solutions": 1} and b.kind == f"{a.kind}-s1"
        assert {k: v for k, v in c.body.items() if k != "max_solutions"} == a.body
    assert {r.body["max_solutions"] for r in mixed if r.path == "/solve"} == {1, 3, 10}
    assert parse_max_solutions("") is None and parse_max_solutions("4") == 4
    with pytest.raises(ValueError, match="max_solutions must be >= 1"):
        parse_max_solutions("0")


def test_unseeded_requests_are_the_seeded_ones_without_their_seed() -> None:
    seeded = make_requests("mix-sample", 16, 40, seed=4, max_solutions=1)
    unseeded = make_requests("mix-sample", 16, 40, seed=4, max_solutions=1, seeded=False)
    assert all("seed" in r.body for r in seeded)
    for a, b in zip(seeded, unseeded, strict=True):
        assert "seed" not in b.body and (b.path, b.kind) == (a.path, a.kind)
        assert b.body == {k: v for k, v in a.body.items() if k != "seed"}


def test_one_seed_at_two_rates_gives_the_same_arrivals_compressed() -> None:
    """Common random numbers across load points: the realised load grows with the offered one."""
    slow = arrival_times(2.0, 100.0, np.random.default_rng(0))
    fast = arrival_times(4.0, 100.0, np.random.default_rng(0))
    assert np.allclose(fast[: len(slow) // 2], slow[: len(slow) // 2] / 2)
    assert len(fast) > len(slow)


def test_sweep_outputs_round_trip_through_the_csv(tmp_path: Path) -> None:
    from loadtests.report import read_sweep
    from loadtests.sweep import write_outputs

    points = [_point("continuous", 1, 1.0, 0.5), _point("serial", 1, 0.5, 2.0)]
    points[0].extra["mean_step_s"] = 0.25
    ratios = write_outputs(points, tmp_path, "t", slo_s=5.0)
    assert ratios["continuous_over_serial_at_equal_p99"] == pytest.approx(2.0)
    back = read_sweep(tmp_path / "sweep.csv")
    assert [p.row() for p in back][1]["throughput_rps"] == 0.5
    assert back[0].mode == "continuous" and back[0].sent == 100 and back[0].extra["mean_step_s"] == 0.25
    assert (tmp_path / "throughput_vs_p99.png").stat().st_size > 1000


def test_targets_report_gives_each_modes_sustained_load_and_the_ratios_per_p99_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loadtests.report import targets
    from loadtests.sweep import write_outputs

    points = [
        _point("request", 2, 2.0, 0.8), _point("request", 4, 3.0, 3.0), _point("continuous", 2, 2.0, 0.3),
        _point("continuous", 4, 4.0, 0.9), _point("continuous", 8, 7.0, 4.0),
    ]  # fmt: skip
    write_outputs(points, tmp_path, "t", slo_s=5.0)
    targets(tmp_path, p99="1,5")
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1:] for r in rows] == [["2.00", "4.00", "2.00 |"], ["3.00", "7.00", "2.33 |"]]


def test_step_scaling_times_the_engine_step_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv

    from loadtests import step_scaling

    monkeypatch.setenv("GRAM_CPU_PATH", "bf16")  # the engine's path without a timing or a compilation
    out = tmp_path / "scaling.csv"
    assert step_scaling.main(["--batches", "1,3", "--repeats", "1", "--threads", "1", "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["batch"]) for r in rows] == [1, 3] and {r["path"] for r in rows} == {"cpu+bf16"}
    assert all(float(r["step_s"]) > 0 for r in rows)


def test_load_spec_label_names_width_answers_and_unseeded_traffic() -> None:
    from loadtests.loadgen import LoadSpec

    seeded = LoadSpec("nqueens8", 16, rate=1.0, duration_s=1.0, max_solutions=1)
    assert seeded.label == "nqueens8/w16/s1"
    assert LoadSpec("nqueens8", 16, rate=1.0, duration_s=1.0, max_solutions=1, seeded=False).label == (
        "nqueens8/w16/s1/unseeded"
    )
