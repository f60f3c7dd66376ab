"""A real Prometheus server for tests (the Debian `prometheus` package, installed by .ci/run), and
Grafana's template expansion for the queries of the checked-in dashboards.

No Grafana runs here, so `$variables` and macros are expanded the way Grafana documents them:
multi-value variables as a regex alternation in PromQL and as a quoted list in SQL.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from starter.devstack import free_port


class PrometheusServer:
    def __init__(self, folder: Path, targets: dict[str, str], scrape_seconds: int = 1) -> None:
        self.folder, self.targets, self.scrape_seconds = folder, targets, scrape_seconds
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        config = {
            "global": {"scrape_interval": f"{self.scrape_seconds}s", "scrape_timeout": f"{self.scrape_seconds}s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in self.targets.items()
            ],
        }
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config), "utf-8")
        self.log = open(self.folder / "prometheus.log", "ab")  # closed in stop()
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(self.folder / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.log.close()

    async def query_range(self, expr: str, start: datetime, end: datetime, step: str = "2s") -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.get(
                f"{self.url}/api/v1/query_range",
                params={"query": expr, "start": start.timestamp(), "end": end.timestamp(), "step": step},
            )
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def label_values(self, label: str, match: str) -> list[str]:
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match})
        values: list[str] = r.json()["data"]
        return values

    async def value(self, expr: str) -> float | None:
        """An instant query's one value, None while it has none (a series not scraped yet)."""
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.get(f"{self.url}/api/v1/query", params={"query": expr})
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    async def last_scrape(self, job: str) -> float | None:
        """When Prometheus last scraped the job (Unix seconds), None before its first scrape."""
        return await self.value(f'max(timestamp(up{{job="{job}"}}))')

    async def scraped(self) -> set[str]:
        """Jobs with at least one successful scrape stored."""
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.get(f"{self.url}/api/v1/query", params={"query": "up == 1"})
        return {s["metric"]["job"] for s in r.json()["data"]["result"]}

    async def targets_up(self) -> dict[str, str]:
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.get(f"{self.url}/api/v1/targets")
        return {t["labels"]["job"]: t["health"] for t in r.json()["data"]["activeTargets"]}


def has_data(result: list[dict[str, Any]]) -> bool:
    """A panel shows something: some series has a finite value."""
    return any(v[1] not in ("NaN", "+Inf", "-Inf") for series in result for v in series["values"])


LABEL_VALUES = re.compile(r"label_values\((?P<metric>[^,]+),\s*(?P<label>\w+)\)")


def _grafana_regex_escape(value: str) -> str:
    """As Grafana escapes a multi-value variable for a PromQL regex (a backslash doubled inside the string)."""
    return re.sub(r"([\\^$*+?.()|\[\]{}])", r"\\\\\1", value)


def expand_promql(expr: str, variables: dict[str, list[str]], range_: str, rate_interval: str) -> str:
    out = expr.replace("$__range", range_).replace("$__rate_interval", rate_interval)
    for name, values in variables.items():
        out = out.replace(f"${name}", "(" + "|".join(_grafana_regex_escape(v) for v in values) + ")")
    if "$" in out:
        raise AssertionError(f"unexpanded template in {out!r}")
    return out


def expand_sql(text: str, variables: dict[str, list[str]], start: datetime, end: datetime) -> str:
    out = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'", text)
    out = out.replace("$__timeFrom()", f"'{start.isoformat()}'").replace("$__timeTo()", f"'{end.isoformat()}'")
    # Only Grafana's `sqlstring` format is accepted: it quotes every value and doubles its quotes. A bare
    # `$name` of a single-value variable is pasted raw by Grafana, so a crafted dashboard link could inject SQL.
    for name, values in variables.items():
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        out = out.replace(f"${{{name}:sqlstring}}", quoted)
    if "$" in out:
        raise AssertionError(f"unexpanded template in {out!r}")
    return out


def sdk_metric(port: int, name: str, *, absent: float | None = None) -> float:
    """One metric of the worker's SDK endpoint, summed over its series (Core exports a counter only once it
    has counted: `absent` is the value to read then, or the metric must be there)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    # The parser names a counter's samples <family>_total (and <family>_created): match on the family
    families = text_string_to_metric_families(text)
    values = [s.value for f in families if f.name == name for s in f.samples if not s.name.endswith("_created")]
    if not values and absent is not None:
        return absent
    assert values, f"no {name} in the worker's SDK metrics"
    return sum(values)
