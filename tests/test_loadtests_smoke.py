"""A smoke sweep (seconds, tiny load) through the real service in every batching mode, so the load-test
harness keeps working: starts `gram serve` on a random loopback port per mode, offers two small Poisson
loads, reads the engine's batch occupancy from /metrics, writes the CSV, ratios and plots, stops the
service by pid. Uses the shipped N-Queens checkpoint, or a tiny random one while none has shipped."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import time
from pathlib import Path

import httpx
import pytest

from loadtests.loadgen import LoadSpec, run_load_point
from loadtests.server import ServiceProcess
from loadtests.sweep import SweepConfig, sweep_mode, write_outputs

SHIPPED = Path(__file__).resolve().parent.parent / "model" / "weights" / "nqueens.safetensors"



@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if SHIPPED.exists():
        return SHIPPED.parent
    from model.checkpoint import save_checkpoint
    from model.gram import tiny_model

    folder = tmp_path_factory.mktemp("weights")
    save_checkpoint(tiny_model("nqueens"), folder / "nqueens.safetensors")
    return folder


def _service(mode: str, weights_dir: Path) -> ServiceProcess:
    # Small engine and short queue: the smoke load must fit, not stress.
    # fp32 eager: GRAM_CPU_PATH=auto would time and compile the model at every start (past the 120 s
    # below on a busy machine); the CPU path choice has its own tests (test_kernels_step.py)
    env = {"GRAM_MODELS": "nqueens", "GRAM_SLOTS": "16", "GRAM_TORCH_THREADS": "1", "GRAM_CPU_PATH": "fp32"}
    return ServiceProcess(mode, weights_dir=weights_dir, env=env, ready_timeout_s=120.0)


def test_smoke_sweep_in_every_mode_writes_csv_ratios_and_plots(weights_dir: Path, tmp_path: Path) -> None:
    cfg = SweepConfig(
        workload="nqueens8", width=2, rates=[1.0, 2.0], duration_s=1.5, cv=1.0, slo_s=30.0,
        p99_cap_s=60.0, past_saturation=1, request_timeout_s=60.0, seed=0,
    )  # fmt: skip
    summaries = []
    for mode in ("continuous", "request", "serial"):
        with _service(mode, weights_dir) as svc:
            points = sweep_mode(svc.url, mode, cfg, deadline=time.monotonic() + 120)
            pid = svc.proc.pid if svc.proc else -1
        assert svc.proc is not None and svc.proc.poll() is not None, "service left running"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert len(points) == 2
        for p in points:
            assert p.sent >= 1 and p.ok == p.sent, f"{mode}: {p}"  # every request answered 200
            assert p.rate_429 == 0 and p.rate_error == 0
            assert p.throughput_rps > 0 and p.p99_s >= p.p50_s > 0
            # The engine's own occupancy histogram moved during the point: a fraction of the slots.
            assert 0 < p.mean_batch_occupancy <= 1, f"{mode}: occupancy {p.mean_batch_occupancy}"
            assert p.steps_per_s > 0
        summaries += points
    ratios = write_outputs(summaries, tmp_path, "smoke", cfg.slo_s)
    with (tmp_path / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["mode"] for r in rows} == {"continuous", "request", "serial"} and len(rows) == 6
    for name in ("throughput_vs_p99.png", "latency_vs_load.png", "goodput_occupancy.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "ratios.json").read_text())
    assert saved == pytest.approx(ratios, nan_ok=True)
    assert not math.isnan(ratios["continuous_over_serial_at_equal_p99"])


def test_overload_is_reported_as_429_or_latency_not_lost(weights_dir: Path) -> None:
    """A burst far above capacity against a queue bound of 2: every request is accounted for, either
    answered or shed with 429, none silently dropped."""
    env = {"GRAM_MODELS": "nqueens", "GRAM_SLOTS": "4", "GRAM_MAX_QUEUE": "2", "GRAM_TORCH_THREADS": "1"}
    with ServiceProcess("serial", weights_dir=weights_dir, env=env) as svc:
        spec = LoadSpec("nqueens8", 4, rate=80.0, duration_s=0.5, cv=3.0, seed=3, slo_s=30.0,
                        request_timeout_s=60.0)  # fmt: skip
        summary, records = asyncio.run(run_load_point(svc.url, spec, mode="serial"))
        assert httpx.get(f"{svc.url}/healthz", timeout=5).status_code == 200
    assert summary.sent == len(records) >= 5
    assert all(r.status in (200, 429) for r in records), {r.status: r.error for r in records}
    assert summary.rate_429 > 0
    assert summary.ok + round(summary.rate_429 * summary.sent) == summary.sent


def test_engine_saturation_reports_each_mode_and_the_ratio(
    weights_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The in-process saturation measurement runs each mode in its own process and prints the ratio."""
    from loadtests.engine_saturation import main

    monkeypatch.setenv("GRAM_CPU_PATH", "fp32")  # no compile: seconds, not a minute
    main(checkpoint=weights_dir / "nqueens.safetensors", modes="continuous,request", jobs=3, width=2,
         slots=4, threads=1, seeded=False)  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("jobs/s") == 2 and "trajectory-steps per answer" in out
    assert "request: " in out and "128.0 trajectory-steps" not in out  # width 2 x 8 steps = 16 at most
    assert "continuous / request: " in out
