"""Service overhead at light load: end-to-end latency of one request at a time against the engine's own
time for the same request (the sum of its supervision-step durations, model step + batched verify, read
from the service's gram_step_duration_seconds histogram before and after the request).

    python -m loadtests.overhead --widths 1,16,64 --requests 10 --out loadtests/results/overhead

overhead = end-to-end latency - engine step time: HTTP, JSON, validation, tokenising, queueing,
scheduling, encoding and formatting. With one request in flight the step-time delta is that request's.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated

import httpx
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from loadtests import promscrape  # noqa: E402
from loadtests.loadgen import write_csv  # noqa: E402
from loadtests.server import ServiceProcess  # noqa: E402
from loadtests.workloads import WORKLOADS, make_requests  # noqa: E402

console = Console(width=150)


def _scrape(client: httpx.Client, base_url: str) -> promscrape.Snapshot:
    return promscrape.parse_metrics(client.get(f"{base_url}/metrics", timeout=10.0).text)


def measure(
    base_url: str, workload: str, width: int, count: int, seed: int, pause_s: float
) -> list[dict[str, float]]:
    """One request at a time; per request: latency, engine step time, iterations, server elapsed."""
    rows = []
    with httpx.Client() as client:
        for req in make_requests(workload, width, count, seed):
            before = _scrape(client, base_url)
            t0 = time.perf_counter()
            resp = client.post(f"{base_url}{req.path}", json=req.body, timeout=300.0)
            latency = time.perf_counter() - t0
            after = _scrape(client, base_url)
            if resp.status_code != 200:
                raise RuntimeError(f"{req.kind}: HTTP {resp.status_code}: {resp.text[:300]}")
            body = resp.json()
            step_s = promscrape.delta(before, after, f"{promscrape.STEP_DURATION}_sum")
            rows.append(
                {
                    "width": float(width),
                    "latency_s": latency,
                    "engine_step_s": step_s,
                    "iterations": promscrape.delta(before, after, f"{promscrape.STEP_DURATION}_count"),
                    "queue_wait_s": promscrape.delta(before, after, f"{promscrape.QUEUE_WAIT}_sum"),
                    "server_elapsed_s": float(body.get("elapsed_ms", float("nan"))) / 1000,
                    "overhead_s": latency - step_s,
                    "overhead_ratio": (latency - step_s) / step_s if step_s > 0 else float("nan"),
                }
            )
            time.sleep(pause_s)
    return rows


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    lat = sum(r["latency_s"] for r in rows)
    step = sum(r["engine_step_s"] for r in rows)
    return {
        "requests": float(len(rows)),
        "median_latency_s": statistics.median(r["latency_s"] for r in rows),
        "median_engine_step_s": statistics.median(r["engine_step_s"] for r in rows),
        "median_overhead_s": statistics.median(r["overhead_s"] for r in rows),
        "median_overhead_ratio": statistics.median(r["overhead_ratio"] for r in rows),
        "aggregate_overhead_ratio": (lat - step) / step if step > 0 else float("nan"),
        "mean_iterations": statistics.fmean(r["iterations"] for r in rows),
    }


def plot(summary: dict[int, dict[str, float]], path: Path, title: str) -> None:
    widths = sorted(summary)
    labels = [str(w) for w in widths]
    step = [summary[w]["median_engine_step_s"] * 1000 for w in widths]
    over = [summary[w]["median_overhead_s"] * 1000 for w in widths]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.bar(labels, step, label="engine: supervision steps + verify")
    ax.bar(labels, over, bottom=step, label="service overhead (HTTP, queue, encode, format)")
    for i, w in enumerate(widths):
        ax.annotate(
            f"{100 * summary[w]['median_overhead_ratio']:.1f}%",
            (i, step[i] + over[i]),
            ha="center",
            va="bottom",
        )
    ax.set_xlabel("trajectories per request (width)")
    ax.set_ylabel("median end-to-end latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    workload: Annotated[str, typer.Option(help=f"one of {sorted(WORKLOADS)}")] = "nqueens8",
    widths: Annotated[str, typer.Option(help="comma-separated widths")] = "1,16,64",
    requests: Annotated[int, typer.Option(help="requests per width")] = 10,
    pause_ms: Annotated[float, typer.Option(help="idle time between requests")] = 200.0,
    mode: Annotated[str, typer.Option(help="batching mode of the service it starts")] = "continuous",
    weights_dir: Annotated[Path | None, typer.Option(help="GRAM_WEIGHTS_DIR")] = None,
    env: Annotated[list[str] | None, typer.Option(help="extra service env KEY=VALUE")] = None,
    url: Annotated[str, typer.Option(help="measure this running service instead")] = "",
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option()] = Path("loadtests/results/overhead"),
) -> None:
    """Light-load end-to-end latency vs the engine's own step time, per width."""
    width_list = [int(w) for w in widths.split(",")]
    extra_env = dict(item.split("=", 1) for item in (env or []))
    rows: list[dict[str, float]] = []

    def run(base_url: str) -> None:
        make_requests(workload, width_list[0], 1, seed + 99)  # validates the workload name early
        for w in width_list:
            measure(base_url, workload, w, 1, seed + 99, 0.0)  # warm-up, not recorded
            rows.extend(measure(base_url, workload, w, requests, seed, pause_ms / 1000))

    if url:
        run(url.rstrip("/"))
    else:
        with ServiceProcess(mode, weights_dir=weights_dir, env=extra_env) as svc:
            run(svc.url)
    summary = {w: summarise([r for r in rows if r["width"] == w]) for w in width_list}
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "overhead.csv", rows)
    (out / "summary.json").write_text(json.dumps({str(w): s for w, s in summary.items()}, indent=2) + "\n")
    plot(summary, out / "overhead.png", f"service overhead at light load ({workload}, {mode})")
    table = Table(title="service overhead at light load")
    for col in ("width", "median e2e ms", "median engine ms", "median overhead ms", "overhead %", "iters"):
        table.add_column(col, justify="right")
    for w, s in summary.items():
        table.add_row(
            str(w),
            f"{1000 * s['median_latency_s']:.1f}",
            f"{1000 * s['median_engine_step_s']:.1f}",
            f"{1000 * s['median_overhead_s']:.1f}",
            f"{100 * s['median_overhead_ratio']:.1f}",
            f"{s['mean_iterations']:.1f}",
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
