"""A small builder for Grafana dashboard JSON: enough for ticketflow's panels, and readable in review.

Dashboards are written in Python (`dashboards/definitions.py`) and checked in as JSON, so Grafana
provisioning and `ticketflow dashboards publish` load the same files and a test can evaluate every
query in them against a real Prometheus and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "ticketflow-postgres"}
SCHEMA_VERSION = 41
GRID_WIDTH = 24

PanelType = Literal["timeseries", "stat", "bargauge", "table", "gauge"]


@dataclass
class Query:
    """One query of a panel: PromQL for Prometheus or SQL for PostgreSQL."""

    expr: str
    legend: str = ""
    sql: bool = False
    table: bool = False  # SQL: format as table (else time series); PromQL: instant query
    heatmap: bool = False  # PromQL buckets to be shown per bucket, not cumulatively

    def target(self, ref: str) -> dict[str, Any]:
        if self.sql:
            return {
                "refId": ref,
                "datasource": POSTGRES,
                "editorMode": "code",
                "rawQuery": True,
                "rawSql": self.expr,
                "format": "table" if self.table else "time_series",
            }
        out: dict[str, Any] = {
            "refId": ref,
            "datasource": PROMETHEUS,
            "editorMode": "code",
            "expr": self.expr,
            "legendFormat": self.legend or "__auto",
            "range": not self.table,
            "instant": self.table,
        }
        if self.heatmap:
            out["format"] = "heatmap"
        return out


@dataclass
class Panel:
    title: str
    kind: PanelType
    queries: list[Query]
    description: str = ""
    unit: str = "short"
    width: int = 8
    height: int = 8
    decimals: int | None = None
    thresholds: list[tuple[float | None, str]] | None = None  # (from value, colour); first from is None
    min: float | None = None
    max: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        sql = all(q.sql for q in self.queries)
        if not sql and any(q.sql for q in self.queries):
            raise ValueError(f"panel {self.title!r} mixes PromQL and SQL queries")
        defaults: dict[str, Any] = {"unit": self.unit}
        if self.decimals is not None:
            defaults["decimals"] = self.decimals
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"value": v, "color": c} for v, c in self.thresholds],
            }
        refs = "ABCDEFGHIJ"
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "datasource": POSTGRES if sql else PROMETHEUS,
            "targets": [q.target(refs[i]) for i, q in enumerate(self.queries)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self.options,
        }


@dataclass
class Row:
    title: str
    panels: list[Panel]


@dataclass
class Variable:
    """A dashboard variable. Multi-value ones with "All" are formatted by Grafana per data source: a
    regex alternation for PromQL (`department=~"$department"`), a quoted list for SQL (`IN ($department)`)."""

    name: str
    label: str
    query: str
    source: Literal["prometheus", "postgres", "custom"]
    multi: bool = True

    def to_json(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "multi": self.multi,
            "includeAll": self.multi,
            "hide": 0,
        }
        if self.source == "custom":
            values = [v.strip() for v in self.query.split(",")]
            pick = "$__all" if self.multi else values[0]
            return {
                **base,
                "type": "custom",
                "query": ",".join(values),
                "current": {"text": "All" if self.multi else pick, "value": pick},
                "options": [{"text": v, "value": v, "selected": v == pick} for v in values],
            }
        query: Any = (
            {"qryType": 1, "query": self.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"}
            if self.source == "prometheus"
            else self.query
        )
        return {
            **base,
            "type": "query",
            "datasource": PROMETHEUS if self.source == "prometheus" else POSTGRES,
            "definition": self.query,
            "query": query,
            "current": {"text": "All", "value": "$__all"},
            "refresh": 2,
            "sort": 1,
            "regex": "",
        }


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable] = field(default_factory=list)
    time_from: str = "now-24h"
    refresh: str = "30s"

    def to_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        next_id, y = 1, 0
        for row in self.rows:
            panels.append(
                {
                    "id": next_id,
                    "type": "row",
                    "title": row.title,
                    "collapsed": False,
                    "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1},
                    "panels": [],
                }
            )
            next_id, y, x, row_height = next_id + 1, y + 1, 0, 0
            for panel in row.panels:
                if x + panel.width > GRID_WIDTH:
                    x, y, row_height = 0, y + row_height, 0
                panels.append(panel.to_json(next_id, x, y))
                next_id, x, row_height = next_id + 1, x + panel.width, max(row_height, panel.height)
            y += row_height
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["ticketflow"],
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "annotations": {"list": []},
            "links": [
                {
                    "title": "ticketflow",
                    "type": "dashboards",
                    "tags": ["ticketflow"],
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "templating": {"list": [v.to_json() for v in self.variables]},
            "panels": panels,
        }


def queries_of(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of a dashboard JSON, for tests and reviews."""
    return [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])]
