"""Publish the checked-in dashboards (and optionally their data sources) to a running Grafana over its HTTP API.

Provisioning (deploy/grafana/provisioning) covers the docker-compose Grafana; this covers a Grafana someone else
runs. Every step looks before it writes, so a second run against a current Grafana only reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaException

JSON = dict[str, Any]
Action = Literal["created", "updated", "unchanged"]

# Keys Grafana sets on a dashboard itself when it stores one: never a difference in content.
GRAFANA_DASHBOARD_KEYS = frozenset({"id", "version"})
PUBLISH_MESSAGE = "ticketflow publish"

# Same uids as deploy/grafana/provisioning/datasources/datasources.yml and dashboards/builder.py, so the
# dashboards' panel data source references resolve whether Grafana was provisioned or published to.
PROMETHEUS_UID = "prometheus"
POSTGRES_UID = "ticketflow-postgres"


class PublishError(Exception):
    """One human-readable reason publishing stopped: what was asked of which URL, and what came back."""


@dataclass(frozen=True)
class Change:
    """What publishing did to one Grafana object."""

    kind: Literal["folder", "datasource", "dashboard"]
    uid: str
    title: str
    action: Action


@dataclass
class PublishReport:
    """Per object, in the order handled: what publishing did."""

    changes: list[Change] = field(default_factory=list)

    def add(self, kind: Literal["folder", "datasource", "dashboard"], uid: str, title: str, action: Action) -> None:
        self.changes.append(Change(kind, uid, title, action))

    @property
    def changed(self) -> int:
        """How many objects were written; 0 means Grafana was already current."""
        return sum(1 for c in self.changes if c.action != "unchanged")


# --- data sources we manage ------------------------------------------------------------------------------


def prometheus_datasource(url: str = "http://prometheus:9090") -> JSON:
    """The Prometheus data source as provisioned in docker-compose, pointing at `url`."""
    return {
        "uid": PROMETHEUS_UID,
        "name": "Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "isDefault": True,
        "jsonData": {"timeInterval": "15s"},
    }


def postgres_datasource(
    host: str = "postgres:5432",
    database: str = "ticketflow",
    user: str = "ticketflow",
    password: str | None = None,
    sslmode: str = "disable",
) -> JSON:
    """The PostgreSQL data source the SQL panels use; the password goes in secureJsonData (write-only in Grafana)."""
    ds: JSON = {
        "uid": POSTGRES_UID,
        "name": "ticketflow-postgres",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "url": host,
        "user": user,
        "isDefault": False,
        "jsonData": {"database": database, "sslmode": sslmode, "postgresVersion": 1600, "timescaledb": False},
    }
    if password is not None:
        ds["secureJsonData"] = {"password": password}
    return ds


# --- loading ---------------------------------------------------------------------------------------------


def load_dashboards(directory: Path) -> list[JSON]:
    """Every `*.json` dashboard model in `directory`, by file name; a broken file is named, not half-published."""
    if not directory.is_dir():
        raise PublishError(f"dashboard directory {directory} does not exist")
    dashboards: list[JSON] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            model = json.loads(path.read_text("utf-8"))
        except json.JSONDecodeError as err:
            raise PublishError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise PublishError(f"{path}: cannot read: {err}") from err
        if not isinstance(model, dict):
            raise PublishError(f"{path}: a dashboard must be a JSON object, not {type(model).__name__}")
        for key in ("uid", "title"):
            if not isinstance(model.get(key), str) or not model[key]:
                raise PublishError(f'{path}: the dashboard has no "{key}" (a non-empty string is required)')
        uid = model["uid"]
        if uid in seen:
            raise PublishError(f"{path}: uid {uid!r} is also the uid of {seen[uid]}")
        seen[uid] = path
        dashboards.append(model)
    return dashboards


# --- talking to Grafana ----------------------------------------------------------------------------------


def _root_cause(err: BaseException) -> str:
    """The innermost OS error's text ("Connection refused"), not urllib3's three nested reprs."""
    reason = str(err)
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        cause = cause.__cause__ or cause.__context__
    return reason


_STATUS_HINTS = {
    401: "Unauthorized: Grafana rejected the credentials (check --token or --basic-auth)",
    403: "Forbidden: the credentials lack the permission for this (folders and dashboards need Editor, "
    "data sources Admin; provisioned data sources are read-only)",
    404: "Not Found (is --url Grafana's root URL?)",
}


class _Grafana:
    """A typed face on grafana-client (untyped) that turns every failure into one PublishError naming the URL."""

    def __init__(self, api: GrafanaApi) -> None:
        self._api: Any = api
        self.base = str(self._api.client.url).removesuffix("/api")  # no credentials, unlike api.url

    def _call(self, method: str, path: str, send: Callable[[], object], *, missing_ok: bool = False) -> JSON | None:
        where = f"{method} {self.base}/api{path}"
        try:
            answer = send()
        except GrafanaException as err:
            status: int = err.status_code
            if missing_ok and status == 404:
                return None
            if status == 0:  # grafana-client's code for a timeout or a transport error
                raise PublishError(f"cannot reach Grafana: {where} failed: {err.message}") from err
            body = err.response
            detail = body.get("message") if isinstance(body, dict) else None
            text = _STATUS_HINTS.get(status, str(err.message))
            if detail and detail not in text:
                text += f"; Grafana said: {detail}"
            raise PublishError(f"Grafana answered {status} to {where}: {text}") from err
        except OSError as err:  # niquests' ConnectionError (an OSError) escapes grafana-client unwrapped
            raise PublishError(f"cannot reach Grafana: {where} failed: {_root_cause(err)}") from err
        if not isinstance(answer, dict):
            raise PublishError(f"{where} did not answer with Grafana's JSON (is --url a Grafana?)")
        return answer

    def folder(self, uid: str) -> JSON | None:
        return self._call("GET", f"/folders/{uid}", lambda: self._api.folder.get_folder(uid), missing_ok=True)

    def create_folder(self, uid: str, title: str) -> None:
        self._call("POST", "/folders", lambda: self._api.folder.create_folder(title, uid=uid))

    def datasource(self, uid: str) -> JSON | None:
        return self._call(
            "GET", f"/datasources/uid/{uid}", lambda: self._api.datasource.get_datasource_by_uid(uid), missing_ok=True
        )

    def create_datasource(self, body: JSON) -> None:
        self._call("POST", "/datasources", lambda: self._api.datasource.create_datasource(body))

    def update_datasource(self, uid: str, body: JSON) -> None:
        self._call("PUT", f"/datasources/uid/{uid}", lambda: self._api.datasource.update_datasource_by_uid(uid, body))

    def dashboard(self, uid: str) -> JSON | None:
        return self._call(
            "GET", f"/dashboards/uid/{uid}", lambda: self._api.dashboard.get_dashboard(uid), missing_ok=True
        )

    def save_dashboard(self, body: JSON) -> None:
        self._call("POST", "/dashboards/db", lambda: self._api.dashboard.update_dashboard(body))


# --- comparing -------------------------------------------------------------------------------------------


def _datasource_differs(ours: JSON, theirs: JSON) -> bool:
    """True when a field we manage differs. Keys Grafana adds (id, version, typeLogoUrl, ...) are not ours, and
    jsonData is compared only on our keys. A password cannot be compared (Grafana never returns it), only whether
    one is stored (secureJsonFields)."""
    for key, value in ours.items():
        if key == "jsonData":
            stored = theirs.get("jsonData") or {}
            if any(stored.get(k) != v for k, v in value.items()):
                return True
        elif key == "secureJsonData":
            stored_secrets = theirs.get("secureJsonFields") or {}
            if not all(stored_secrets.get(k) for k in value):
                return True
        elif theirs.get(key) != value:
            return True
    return False


def _content(dashboard: JSON) -> JSON:
    return {k: v for k, v in dashboard.items() if k not in GRAFANA_DASHBOARD_KEYS}


# --- publishing ------------------------------------------------------------------------------------------


def publish(
    api: GrafanaApi,
    dashboards: list[JSON],
    *,
    folder_uid: str = "ticketflow",
    folder_title: str = "ticketflow",
    create_folder: bool = False,
    datasources: list[JSON] | None = None,
    force_datasources: bool = False,
) -> PublishReport:
    """Make Grafana hold `dashboards` in the folder (and `datasources`, when given), writing only what differs.

    Order: folder (checked before any write, so a missing folder changes nothing), data sources, dashboards.
    A data source is updated (PUT, our fields over the stored jsonData, secrets re-sent) only when a managed field
    differs or Grafana has no password stored: a changed password alone is invisible, so `force_datasources` PUTs
    every given data source regardless — the way to rotate the PostgreSQL password.
    """
    grafana = _Grafana(api)
    report = PublishReport()

    folder = grafana.folder(folder_uid)
    if folder is None:
        if not create_folder:
            raise PublishError(
                f"folder {folder_uid!r} does not exist in Grafana at {grafana.base}; pass --create-folder to create it"
            )
        grafana.create_folder(folder_uid, folder_title)
        report.add("folder", folder_uid, folder_title, "created")
    else:
        report.add("folder", folder_uid, str(folder.get("title", folder_title)), "unchanged")

    for ds in datasources or []:
        uid, name = str(ds["uid"]), str(ds["name"])
        stored = grafana.datasource(uid)
        if stored is None:
            grafana.create_datasource(ds)
            report.add("datasource", uid, name, "created")
        elif force_datasources or _datasource_differs(ds, stored):
            body = {**ds, "jsonData": {**(stored.get("jsonData") or {}), **ds.get("jsonData", {})}}
            grafana.update_datasource(uid, body)
            report.add("datasource", uid, name, "updated")
        else:
            report.add("datasource", uid, name, "unchanged")

    for dashboard in dashboards:
        uid, title = str(dashboard["uid"]), str(dashboard["title"])
        stored = grafana.dashboard(uid)
        if stored is not None:
            meta = stored.get("meta") or {}
            same_folder = meta.get("folderUid") == folder_uid
            if same_folder and _content(stored.get("dashboard") or {}) == _content(dashboard):
                report.add("dashboard", uid, title, "unchanged")
                continue
        body = {"dashboard": {**dashboard, "id": None}, "folderUid": folder_uid, "overwrite": True}
        grafana.save_dashboard({**body, "message": PUBLISH_MESSAGE})
        report.add("dashboard", uid, title, "created" if stored is None else "updated")
    return report
