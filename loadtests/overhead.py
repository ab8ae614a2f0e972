"""Service overhead at light load: end-to-end latency of one request at a time against the engine's own
time for the same request (the sum of its supervision-step durations, model step + batched verify, read
from the service's gram_step_duration_seconds histogram before and after the request).

    python -m loadtests.overhead --widths 1,16,64 --requests 10 --out loadtests/results/overhead

overhead = end-to-end latency - engine step time: HTTP, JSON, validation, tokenising, queueing,
scheduling, encoding and formatting. With one request in flight the step-time delta is that request's.

The client is a lean one, so that its own cost is not counted as the service's: the stdlib's
http.client on one keep-alive connection, the body encoded before the clock starts (an httpx.Client
costs ~1.6 ms more a request here, 10 % of a 16 ms request). What the client and the loopback still cost
is shown, not subtracted: ``client_floor_s`` is the median latency of GET /healthz on the same
connection right after each request (a round trip through the server that does no work).
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
import urllib.parse
from pathlib import Path
from typing import Annotated

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


FLOOR_PROBES = 5  # GET /healthz round trips per request for client_floor_s (their median)


class LeanClient:
    """One keep-alive HTTP/1.1 connection (stdlib http.client): about the least a client can add."""

    def __init__(self, base_url: str, timeout_s: float = 300.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._conn = conn_class(parts.hostname, parts.port, timeout=timeout_s)
        self._prefix = parts.path.rstrip("/")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body). Reconnects once if the server had closed the idle connection."""
        headers = {"content-type": "application/json"} if body is not None else {}
        for attempt in range(2):
            try:
                self._conn.request(method, self._prefix + path, body, headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._conn.close()  # http.client opens a fresh connection on the next request
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._conn.close()


def _scrape(client: LeanClient) -> promscrape.Snapshot:
    status, text = client.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics: HTTP {status}")
    return promscrape.parse_metrics(text.decode())


def _client_floor(client: LeanClient) -> float:
    """Median latency of GET /healthz: what the client, loopback and HTTP server take for no work."""
    times = []
    for _ in range(FLOOR_PROBES):
        t0 = time.perf_counter()
        client.request("GET", "/healthz")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(
    base_url: str, workload: str, width: int, count: int, seed: int, pause_s: float
) -> list[dict[str, float]]:
    """One request at a time; per request: latency, engine step time, iterations, server elapsed, and
    the client floor (reported, not subtracted)."""
    rows = []
    client = LeanClient(base_url)
    try:
        for req in make_requests(workload, width, count, seed):
            payload = json.dumps(req.body).encode()  # encoded before the clock starts
            before = _scrape(client)
            t0 = time.perf_counter()
            status, raw = client.request("POST", req.path, payload)
            latency = time.perf_counter() - t0
            after = _scrape(client)
            if status != 200:
                raise RuntimeError(f"{req.kind}: HTTP {status}: {raw[:300].decode(errors='replace')}")
            body = json.loads(raw)
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
                    "client_floor_s": _client_floor(client),
                }
            )
            time.sleep(pause_s)
    finally:
        client.close()
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
        "median_client_floor_s": statistics.median(r["client_floor_s"] for r in rows),
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
    columns = ("width", "median e2e ms", "median engine ms", "median overhead ms", "overhead %", "iters",
               "client floor ms")
    for col in columns:
        table.add_column(col, justify="right")
    for w, s in summary.items():
        table.add_row(
            str(w),
            f"{1000 * s['median_latency_s']:.1f}",
            f"{1000 * s['median_engine_step_s']:.1f}",
            f"{1000 * s['median_overhead_s']:.1f}",
            f"{100 * s['median_overhead_ratio']:.1f}",
            f"{s['mean_iterations']:.1f}",
            f"{1000 * s['median_client_floor_s']:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
