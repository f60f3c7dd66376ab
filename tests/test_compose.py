"""The production stack, checked statically: no Docker engine runs where this project is built, so
these tests validate what can be validated for real (the compose file, its mounts, pinned images,
no secrets, the Prometheus config with promtool, and the search attributes it registers)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            continue
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    base = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM "))
    assert re.match(r"FROM python:3\.\d+\.\d+-slim$", base), base


def test_every_mounted_file_exists() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_published_ports_bind_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_workers_are_replicated_and_wait_for_healthy_dependencies() -> None:
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] == 2
    conditions = {dep: spec["condition"] for dep, spec in worker["depends_on"].items()}
    assert conditions == {
        "postgres": "service_healthy",
        "temporal": "service_healthy",
        "search-attributes": "service_completed_successfully",
        "mailpit": "service_healthy",
    }
    for name in ("postgres", "temporal", "mailpit"):
        assert "healthcheck" in SERVICES[name], f"{name} has no healthcheck"


def test_no_secrets_in_the_compose_file_and_every_variable_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text("utf-8")
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = set(VARIABLE.findall(text))
    assert used <= example, f"missing from .env.example: {sorted(used - example)}"
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|PWD|SECRET|TOKEN", key):
                assert str(value).startswith("${"), f"{name}.{key} is a literal secret"


def test_prometheus_scrapes_both_worker_endpoints() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    ports = {sd["port"] for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])}
    env = SERVICES["worker"]["environment"]
    assert ports == {int(env["TICKETFLOW_METRICS_PORT"]), int(env["TICKETFLOW_SDK_METRICS_PORT"])}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: .ci/run installs Debian prometheus")
def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboards_mount() -> None:
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    assert mounts[path] == "./dashboards"
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/datasources.yml").read_text())
    assert {d["type"] for d in sources["datasources"]} == {"prometheus", "grafana-postgresql-datasource"}
