"""A real Prometheus scrapes a running service (Redis mode: `gram serve` + `gram worker` + redis-server)
under a short load, with the shipped scrape jobs and alert rules; every PromQL expression of the Grafana
dashboard and of the alert rules is evaluated through Prometheus' HTTP API and must return data.

Alert rules are "<signal> <comparison> <threshold>": the signal must return data (the rule itself fires
only under trouble), and every rule must evaluate without error inside Prometheus."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.test_redis_harness import (
    ROOT,
    Server,
    free_port,
    gram_env,
    need,
    start_api,
    start_redis,
    start_worker,
    wait_ready,
    wait_until,
    weights_dir,
)

pytestmark = pytest.mark.timeout(180)

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "gram.json"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
COMPARISON = re.compile(r"\s(>=|<=|==|!=|>|<)\s")


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(variable, value) for e in exprs]
    assert not [e for e in exprs if "$" in e], "a dashboard variable the test does not substitute"
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def signal_of(expr: str) -> str:
    """The left side of the last comparison outside brackets and quotes: what the rule thresholds."""
    depth, quoted, cut = 0, False, None
    for i, ch in enumerate(expr):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and COMPARISON.match(expr, i):
            cut = i
    assert cut is not None, f"alert expression is not '<signal> <comparison> <threshold>': {expr}"
    return expr[:cut].strip()


def test_signal_of_splits_at_the_top_level_comparison() -> None:
    assert signal_of('(sum(x{a=">"}) or vector(0)) < 1') == '(sum(x{a=">"}) or vector(0))'
    assert signal_of("histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 20") == (
        "histogram_quantile(0.99, sum by (le) (rate(h[5m])))"
    )
    with pytest.raises(AssertionError):
        signal_of("sum(rate(x[5m]))")


def prometheus_config(api: Server, worker: Server, prom_port: int) -> dict[str, Any]:
    """The shipped config, with the compose DNS discovery replaced by the test's loopback targets and 1 s
    intervals (so a short load yields rates)."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    targets = {"gram-api": api.port, "gram-worker": worker.port, "prometheus": prom_port}
    for job in config["scrape_configs"]:
        assert job["job_name"] in targets, f"unexpected scrape job {job['job_name']}"
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
    return config


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loaded service scraped by Prometheus; yields Prometheus' base URL."""
    tmp = tmp_path_factory.mktemp("prometheus")
    prometheus_bin = need("prometheus")
    servers: list[Server] = []
    try:
        rds = start_redis(tmp)
        servers.append(rds)
        env = gram_env(f"redis://127.0.0.1:{rds.port}/0", weights_dir(tmp))
        worker = start_worker(tmp, env)
        api = start_api(tmp, env)
        servers += [worker, api]
        prom_port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(api, worker, prom_port)))
        prom = Server("prometheus", [prometheus_bin, f"--config.file={config}",
                                     f"--storage.tsdb.path={tmp / 'tsdb'}",
                                     f"--web.listen-address=127.0.0.1:{prom_port}"],
                      tmp / "prometheus.log", port=prom_port).start()
        servers.append(prom)
        base = f"http://127.0.0.1:{prom_port}"
        wait_ready(api, [worker])
        wait_until(lambda: _targets_up(base) == 3 or not prom.alive(), 30, "Prometheus scraping 3 targets")
        assert prom.alive(), prom.tail()
        asyncio.run(_load(f"http://127.0.0.1:{api.port}"))
        stop = threading.Event()
        trickle = threading.Thread(target=_trickle, args=(f"http://127.0.0.1:{api.port}", stop), daemon=True)
        trickle.start()
        yield base
        stop.set()
        trickle.join(30)
    finally:
        for server in reversed(servers):
            server.stop()


def _targets_up(base: str) -> int:
    targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return sum(t["health"] == "up" for t in targets)


async def _load(api: str) -> None:
    """A short mixed load: every task, seeded repeats (cache hits), unseeded, and invalid requests."""
    rng = random.Random(3)
    bodies: list[dict[str, Any]] = []
    for i in range(30):
        common = {"num_trajectories": 4, "max_steps": 3, "seed": i % 10}
        if i % 3 == 0:
            bodies.append({"task": "nqueens", "n": 4 + i % 5, "queens": [], **common})
        elif i % 3 == 1:
            n = 5 + i % 4
            bodies.append({"task": "graph_coloring", "num_nodes": n, "num_colors": 3,
                           "edges": [[v, (v + 1) % n] for v in range(n)], **common})
        else:
            grid = "".join(str((r * 3 + r // 3 + c) % 9 + 1) for r in range(9) for c in range(9))
            cells = list(grid)
            for j in rng.sample(range(81), 12):
                cells[j] = "."
            bodies.append({"task": "sudoku", "puzzle": "".join(cells), **common})
    bodies += [{"task": "nqueens", "n": 4, "queens": [], "num_trajectories": 2}] * 3  # unseeded
    bodies += [{"task": "nqueens", "n": 99}, {"task": "sudoku", "puzzle": "12"}]  # 422s
    async with httpx.AsyncClient(timeout=120) as client:
        sem = asyncio.Semaphore(8)

        async def post(body: dict[str, Any]) -> int:
            async with sem:
                return (await client.post(f"{api}/solve", json=body)).status_code

        codes = await asyncio.gather(*[post(b) for b in bodies])
        codes += await asyncio.gather(*[post(b) for b in bodies[:10]])  # seeded repeats: cache hits
    assert codes.count(422) == 2 and codes.count(200) == len(codes) - 2, codes


def _trickle(api: str, stop: threading.Event) -> None:
    """Keep a little traffic going while the tests query, so every rate window holds fresh samples however
    slowly the tests run (a quantile over a window without observations is NaN, not data)."""
    bodies = [{"task": "nqueens", "n": 5, "queens": [], "num_trajectories": 2, "max_steps": 2, "seed": 7},
              {"task": "graph_coloring", "num_nodes": 4, "num_colors": 3, "edges": [[0, 1], [1, 2]],
               "num_trajectories": 2, "max_steps": 2},
              {"task": "sudoku", "puzzle": "." * 81, "num_trajectories": 2, "max_steps": 2}]
    with httpx.Client(timeout=60) as client:
        while not stop.wait(0.5):
            for body in bodies:
                client.post(f"{api}/solve", json=body)


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert reply["status"] == "success", f"{expr}: {reply}"
    return reply["data"]["result"]


def _has_data(base: str, expr: str) -> bool:
    """At least one series with a finite value (a NaN from 0/0 or an empty histogram is not data)."""
    return any(math.isfinite(float(s["value"][1])) for s in _query(base, expr))


def _all_have_data(base: str, exprs: list[str]) -> list[str]:
    return [e for e in exprs if not _has_data(base, e)]


def test_every_dashboard_expression_returns_data(observed: str) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    try:
        wait_until(lambda: not _all_have_data(observed, exprs), 30, "every dashboard query to return data",
                   every_s=1.0)
    except AssertionError:
        pass
    assert _all_have_data(observed, exprs) == []


def test_every_alert_signal_returns_data_and_every_rule_evaluates(observed: str) -> None:
    rules = alert_rules()
    assert len(rules) >= 4
    signals = [signal_of(r["expr"]) for r in rules]
    try:
        wait_until(lambda: not _all_have_data(observed, signals), 30, "every alert signal to return data",
                   every_s=1.0)
    except AssertionError:
        pass
    assert _all_have_data(observed, signals) == []
    for rule in rules:
        _query(observed, rule["expr"])  # parses and evaluates
    groups = httpx.get(f"{observed}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in rules}
    wait_until(lambda: all(r["health"] == "ok" for g in httpx.get(f"{observed}/api/v1/rules", timeout=10)
                           .json()["data"]["groups"] for r in g["rules"]), 10, "every rule evaluated ok")
    # the service is healthy: no alert fires (GramNoWorkers would, were the worker not scraped)
    firing = [a for a in httpx.get(f"{observed}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
              if a["state"] == "firing"]
    assert firing == []


def test_workers_and_cache_hits_are_visible(observed: str) -> None:
    (workers,) = _query(observed, "sum(gram_workers)")
    assert float(workers["value"][1]) == 1.0
    (hits,) = _query(observed, "sum(gram_cache_hits_total)")
    assert float(hits["value"][1]) >= 10
