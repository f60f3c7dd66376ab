"""The worker's probes and its behaviour at the edges of its life: /healthz and /readyz, clear
startup errors when Temporal or PostgreSQL cannot be reached, and a clean drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from activities.health import Health, serve
from starter.devstack import TemporalDevServer, free_port

CLI = [sys.executable, "-m", "starter.cli"]


def test_probes_follow_the_workers_life_and_the_database(migrated: str) -> None:
    registry = CollectorRegistry()
    Counter("probe_test_total", "a metric on the same port", registry=registry).inc()
    health = Health(migrated, db_check_ttl=0)
    port = free_port()
    server = serve("127.0.0.1", port, registry, health)
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{base}/healthz").json() == {"alive": True}
        starting = httpx.get(f"{base}/readyz")
        assert starting.status_code == 503 and starting.json()["problems"] == ["the worker is not polling yet"]
        health.polling = True
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert "probe_test_total 1.0" in httpx.get(f"{base}/metrics").text
        health.draining = True
        draining = httpx.get(f"{base}/readyz")
        assert draining.status_code == 503 and "draining" in draining.json()["problems"][0]
        health.draining = False
        health.database_url = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
        no_db = httpx.get(f"{base}/readyz")
        assert no_db.status_code == 503 and no_db.json()["problems"][0].startswith("PostgreSQL: ")
        assert httpx.get(f"{base}/healthz").status_code == 200  # alive, just not ready
    finally:
        server.shutdown()


def worker_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TICKETFLOW_SURVEY_SECRET": "probe-test", "TICKETFLOW_SDK_METRICS_PORT": "0", **extra}
    return env


@pytest.mark.e2e
def test_unreachable_temporal_or_postgres_is_a_clear_startup_error(
    dev_server: TemporalDevServer, migrated: str
) -> None:
    no_temporal = subprocess.run(
        [*CLI, "worker"],
        env=worker_env(
            DATABASE_URL=migrated, TICKETFLOW_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", TICKETFLOW_METRICS_PORT="0"
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_temporal.returncode == 1
    assert "worker cannot start: cannot reach Temporal at 127.0.0.1:" in no_temporal.stderr
    assert "Traceback" not in no_temporal.stderr

    no_db = subprocess.run(
        [*CLI, "worker"],
        env=worker_env(
            DATABASE_URL=f"postgresql://ticketflow@127.0.0.1:{free_port()}/ticketflow?connect_timeout=2",
            TICKETFLOW_TEMPORAL_ADDRESS=dev_server.address,
            TICKETFLOW_METRICS_PORT="0",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_db.returncode == 1
    assert "worker cannot start: cannot prepare PostgreSQL at DATABASE_URL" in no_db.stderr
    assert "Traceback" not in no_db.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("loop", [None, "asyncio"])
def test_sigterm_drains_and_exits_cleanly(
    dev_server: TemporalDevServer, migrated: str, tmp_path: Path, loop: str | None
) -> None:
    """On uvloop, the default, and on asyncio's own loop (TICKETFLOW_EVENT_LOOP): each must hear SIGTERM."""
    port = free_port()
    log = tmp_path / "worker.log"
    env = worker_env(
        DATABASE_URL=migrated,
        TICKETFLOW_TEMPORAL_ADDRESS=dev_server.address,
        TICKETFLOW_TASK_QUEUE=f"tq-probe-{port}",
        TICKETFLOW_METRICS_PORT=str(port),
    )
    env.pop("TICKETFLOW_EVENT_LOOP", None)
    if loop:
        env["TICKETFLOW_EVENT_LOOP"] = loop
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(45) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "stopping: draining in-flight work" in text and "Traceback" not in text
    assert f"(event loop: {loop or 'uvloop'})" in text, text


def test_an_invalid_policy_file_is_named_field_by_field_without_a_traceback(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('organisation = 3\ndefault_department = "billing"\n', "utf-8")
    result = subprocess.run(
        [*CLI, "worker"],
        env=worker_env(DATABASE_URL="postgresql://unused@127.0.0.1:1/x", TICKETFLOW_CONFIG_FILE=str(policy)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"the policy file {policy} is invalid" in result.stderr
    assert (
        "organisation\n  Input should be a valid string" in result.stderr
        and "departments\n  Field required" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_bad_setting_is_named_by_its_variable_without_a_traceback() -> None:
    for command in (["worker"], ["list"]):
        result = subprocess.run(
            [*CLI, *command],
            env=worker_env(TICKETFLOW_WORKFLOW_CACHE="lots", TICKETFLOW_SMTP_PORT="-1x", TICKETFLOW_EVENT_LOOP="libuv"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "invalid settings:" in result.stderr
        assert "TICKETFLOW_WORKFLOW_CACHE: Input should be a valid integer" in result.stderr
        assert "(got 'lots')" in result.stderr and "TICKETFLOW_SMTP_PORT" in result.stderr
        assert "TICKETFLOW_EVENT_LOOP: Input should be 'uvloop' or 'asyncio' (got 'libuv')" in result.stderr
        assert "Traceback" not in result.stderr
