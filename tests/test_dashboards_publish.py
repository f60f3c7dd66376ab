"""`ticketflow dashboards publish` through grafana-client, against a FAKE Grafana.

+-------------------------------------------------------------------------------------------------------+
| THIS IS A FAKE. No Grafana server can run on this machine, so these tests talk real HTTP to a minimal |
| stand-in on 127.0.0.1. It implements ONLY the endpoints the publisher uses, with the status codes and |
| response shapes Grafana documents for them (HTTP API reference, Grafana 11/12):                       |
|   GET  /api/folders, GET /api/folders/{uid}, POST /api/folders                                        |
|   GET  /api/datasources/uid/{uid}, POST /api/datasources, PUT /api/datasources/uid/{uid}              |
|   GET  /api/dashboards/uid/{uid}, POST /api/dashboards/db                                             |
| and answers 401 to a wrong bearer token or basic-auth pair. Anything else is a 404. Passing here      |
| shows what the publisher sends and how it reads answers; it does not show a real Grafana accepts it.  |
+-------------------------------------------------------------------------------------------------------+

Every request is recorded (method, path, JSON body, Authorization header) so the tests can assert the exact
conversation, including that a second run against a current Grafana only reads.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from grafana_client.api import GrafanaApi
from typer.testing import CliRunner

import dashboards
from dashboards.publish import (
    PublishError,
    load_dashboards,
    postgres_datasource,
    prometheus_datasource,
    publish,
)
from starter.dashboards_cli import dashboards_app

TOKEN = "glsa_test-token"
JSON = dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    body: Any
    authorization: str | None


@dataclass
class FakeGrafana:
    """State and request log of the fake; the handler below is its HTTP face."""

    token: str = TOKEN
    basic: tuple[str, str] | None = None
    folders: dict[str, JSON] = field(default_factory=dict)
    datasources: dict[str, JSON] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # secureJsonData, never returned
    dashboards: dict[str, JSON] = field(default_factory=dict)  # uid -> {"dashboard": ..., "folderUid": ...}
    requests: list[Request] = field(default_factory=list)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def authorized(self, header: str | None) -> bool:
        if header == f"Bearer {self.token}":
            return True
        if self.basic is not None and header is not None and header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return (user, password) == self.basic
        return False

    # -- endpoints: (status, body) as Grafana documents them --------------------------------------------

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:1] != ["api"]:
            return 404, {"message": "Not found"}
        parts = parts[1:]
        match method, parts:
            case "GET", ["folders"]:
                return 200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]} for f in self.folders.values()]
            case "GET", ["folders", uid]:
                if uid not in self.folders:
                    return 404, {"message": "folder not found", "status": "not-found"}
                return 200, self.folders[uid]
            case "POST", ["folders"]:
                uid, title = body.get("uid"), body.get("title")
                if not title:
                    return 400, {"message": "folder title cannot be empty"}
                if uid in self.folders:
                    return 409, {"message": "a folder with the same uid already exists"}
                folder = {"id": self._id(), "uid": uid, "title": title, "url": f"/dashboards/f/{uid}/", "version": 1}
                self.folders[uid] = folder
                return 200, folder
            case "GET", ["datasources", "uid", uid]:
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                return 200, self.datasources[uid]
            case "POST", ["datasources"]:
                uid = body.get("uid")
                if uid in self.datasources or any(d["name"] == body.get("name") for d in self.datasources.values()):
                    return 409, {"message": "data source with the same name already exists"}
                stored = self._store_datasource(body, self._id(), version=1)
                return 200, {
                    "datasource": stored,
                    "id": stored["id"],
                    "message": "Datasource added",
                    "name": stored["name"],
                }
            case "PUT", ["datasources", "uid", uid]:
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                old = self.datasources[uid]
                if old.get("readOnly"):
                    return 403, {"message": "Cannot update read-only data source"}
                stored = self._store_datasource({**body, "uid": uid}, old["id"], version=old["version"] + 1)
                return 200, {
                    "datasource": stored,
                    "id": stored["id"],
                    "message": "Datasource updated",
                    "name": stored["name"],
                }
            case "GET", ["dashboards", "uid", uid]:
                if uid not in self.dashboards:
                    return 404, {"message": "Dashboard not found"}
                saved = self.dashboards[uid]
                folder = self.folders.get(saved["folderUid"], {})
                meta = {
                    "type": "db",
                    "slug": saved["dashboard"]["title"].lower().replace(" ", "-"),
                    "url": f"/d/{uid}/",
                    "folderUid": saved["folderUid"],
                    "folderId": folder.get("id", 0),
                    "folderTitle": folder.get("title", "General"),
                    "version": saved["dashboard"]["version"],
                    "provisioned": False,
                }
                return 200, {"dashboard": saved["dashboard"], "meta": meta}
            case "POST", ["dashboards", "db"]:
                return self._save_dashboard(body)
        return 404, {"message": "Not found"}

    def _store_datasource(self, body: JSON, ds_id: int, *, version: int) -> JSON:
        uid = body["uid"]
        secrets = {**self.secrets.get(uid, {}), **(body.get("secureJsonData") or {})}  # Grafana keeps unsent ones
        self.secrets[uid] = secrets
        stored = {
            "id": ds_id,
            "uid": uid,
            "orgId": 1,
            "name": body["name"],
            "type": body["type"],
            "typeLogoUrl": f"public/plugins/{body['type']}/img/logo.svg",
            "access": body.get("access", "proxy"),
            "url": body.get("url", ""),
            "user": body.get("user", ""),
            "database": body.get("database", ""),
            "basicAuth": body.get("basicAuth", False),
            "basicAuthUser": "",
            "withCredentials": False,
            "isDefault": body.get("isDefault", False),
            "jsonData": body.get("jsonData") or {},
            "secureJsonFields": {k: True for k in secrets},
            "version": version,
            "readOnly": False,
        }
        self.datasources[uid] = stored
        return stored

    def _save_dashboard(self, body: JSON) -> tuple[int, Any]:
        dashboard = copy.deepcopy(body.get("dashboard") or {})
        folder_uid = body.get("folderUid", "")
        if not dashboard.get("title"):
            return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
        if folder_uid and folder_uid not in self.folders:
            return 400, {"message": "folder not found", "status": "folder-not-found"}
        uid = str(dashboard.get("uid") or f"generated{self._id()}")
        existing = self.dashboards.get(uid)
        if existing is not None and not body.get("overwrite"):
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        dashboard["id"] = existing["dashboard"]["id"] if existing else self._id()
        dashboard["version"] = existing["dashboard"]["version"] + 1 if existing else 1
        self.dashboards[uid] = {"dashboard": dashboard, "folderUid": folder_uid}
        return 200, {
            "id": dashboard["id"],
            "uid": uid,
            "url": f"/d/{uid}/",
            "status": "success",
            "version": dashboard["version"],
            "slug": dashboard["title"].lower().replace(" ", "-"),
            "folderUid": folder_uid,
        }


def _handler(fake: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            auth = self.headers.get("Authorization")
            with fake.lock:
                fake.requests.append(Request(self.command, self.path, body, auth))
                if fake.authorized(auth):
                    status, answer = fake.handle(self.command, self.path, body)
                else:
                    status, answer = 401, {"message": "invalid API key", "traceID": ""}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _dashboard(uid: str, title: str, expr: str = "sum(ticketflow_tickets_opened_total)") -> JSON:
    return {
        "uid": uid,
        "title": title,
        "tags": ["ticketflow"],
        "schemaVersion": 41,
        "version": 1,
        "panels": [
            {
                "id": 1,
                "type": "timeseries",
                "title": "Opened",
                "datasource": {"type": "prometheus", "uid": "prometheus"},
                "targets": [{"refId": "A", "expr": expr}],
            }
        ],
    }


@pytest.fixture
def dash_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "dashboards"
    directory.mkdir()
    for name, model in {
        "a-ops.json": _dashboard("tf-ops", "ticketflow / Operations"),
        "b-sla.json": _dashboard("tf-sla", "ticketflow / SLA", "sum(ticketflow_sla_breaches_total)"),
    }.items():
        (directory / name).write_text(json.dumps(model, indent=2), "utf-8")
    return directory


def _cli(grafana_url: str, directory: Path, *extra: str, token: str = TOKEN) -> list[str]:
    return ["publish", "--url", grafana_url, "--token", token, "--dir", str(directory), *extra]


FULL = ("--create-folder", "--datasources", "--postgres-password", "s3cret", "--prometheus-url", "http://prom:9090")

runner = CliRunner()

FIRST_RUN = [
    ("GET", "/api/folders/ticketflow"),
    ("POST", "/api/folders"),
    ("GET", "/api/datasources/uid/prometheus"),
    ("POST", "/api/datasources"),
    ("GET", "/api/datasources/uid/ticketflow-postgres"),
    ("POST", "/api/datasources"),
    ("GET", "/api/dashboards/uid/tf-ops"),
    ("POST", "/api/dashboards/db"),
    ("GET", "/api/dashboards/uid/tf-sla"),
    ("POST", "/api/dashboards/db"),
]
SECOND_RUN = [
    ("GET", "/api/folders/ticketflow"),
    ("GET", "/api/datasources/uid/prometheus"),
    ("GET", "/api/datasources/uid/ticketflow-postgres"),
    ("GET", "/api/dashboards/uid/tf-ops"),
    ("GET", "/api/dashboards/uid/tf-sla"),
]


def test_first_publish_creates_folder_datasources_and_dashboards(grafana: FakeGrafana, dash_dir: Path) -> None:
    result = runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL))
    assert result.exit_code == 0, result.output

    assert grafana.calls() == FIRST_RUN
    assert {r.authorization for r in grafana.requests} == {f"Bearer {TOKEN}"}

    writes = grafana.writes()
    assert writes[0].body == {"uid": "ticketflow", "title": "ticketflow"}
    assert writes[1].body == {
        "uid": "prometheus",
        "name": "Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": "http://prom:9090",
        "isDefault": True,
        "jsonData": {"timeInterval": "15s"},
    }
    assert writes[2].body == {
        "uid": "ticketflow-postgres",
        "name": "ticketflow-postgres",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "url": "postgres:5432",
        "user": "ticketflow",
        "isDefault": False,
        "jsonData": {"database": "ticketflow", "sslmode": "disable", "postgresVersion": 1600, "timescaledb": False},
        "secureJsonData": {"password": "s3cret"},
    }
    expected_ops = {**_dashboard("tf-ops", "ticketflow / Operations"), "id": None}
    assert writes[3].body == {
        "dashboard": expected_ops,
        "folderUid": "ticketflow",
        "overwrite": True,
        "message": "ticketflow publish",
    }
    assert writes[4].body["dashboard"]["uid"] == "tf-sla"
    assert writes[4].body["folderUid"] == "ticketflow"
    assert writes[4].body["overwrite"] is True

    assert grafana.secrets["ticketflow-postgres"] == {"password": "s3cret"}
    assert grafana.dashboards["tf-ops"]["folderUid"] == "ticketflow"
    assert result.output.count("created") == 5
    assert "5 changed, 0 unchanged" in result.output


def test_second_identical_publish_only_reads(grafana: FakeGrafana, dash_dir: Path) -> None:
    assert runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL)).exit_code == 0
    grafana.requests.clear()

    result = runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL))
    assert result.exit_code == 0, result.output
    assert grafana.calls() == SECOND_RUN
    assert grafana.writes() == []
    assert "0 changed, 5 unchanged" in result.output

    # The same through the function: every object reported unchanged.
    grafana.requests.clear()
    api = GrafanaApi.from_url(grafana.url, credential=TOKEN)
    report = publish(
        api,
        load_dashboards(dash_dir),
        create_folder=True,
        datasources=[prometheus_datasource("http://prom:9090"), postgres_datasource(password="s3cret")],
    )
    assert [(c.kind, c.uid, c.action) for c in report.changes] == [
        ("folder", "ticketflow", "unchanged"),
        ("datasource", "prometheus", "unchanged"),
        ("datasource", "ticketflow-postgres", "unchanged"),
        ("dashboard", "tf-ops", "unchanged"),
        ("dashboard", "tf-sla", "unchanged"),
    ]
    assert report.changed == 0
    assert grafana.writes() == []


def test_a_changed_dashboard_is_the_only_write(grafana: FakeGrafana, dash_dir: Path) -> None:
    assert runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL)).exit_code == 0
    changed = _dashboard("tf-sla", "ticketflow / SLA", "sum(rate(ticketflow_sla_breaches_total[5m]))")
    (dash_dir / "b-sla.json").write_text(json.dumps(changed), "utf-8")
    grafana.requests.clear()

    api = GrafanaApi.from_url(grafana.url, credential=TOKEN)
    report = publish(api, load_dashboards(dash_dir))
    assert [(c.uid, c.action) for c in report.changes] == [
        ("ticketflow", "unchanged"),
        ("tf-ops", "unchanged"),
        ("tf-sla", "updated"),
    ]
    assert [(w.method, w.path) for w in grafana.writes()] == [("POST", "/api/dashboards/db")]
    assert grafana.writes()[0].body["dashboard"] == {**changed, "id": None}
    assert grafana.dashboards["tf-sla"]["dashboard"]["version"] == 2
    assert grafana.dashboards["tf-ops"]["dashboard"]["version"] == 1


def test_a_dashboard_in_another_folder_is_moved(grafana: FakeGrafana, dash_dir: Path) -> None:
    api = GrafanaApi.from_url(grafana.url, credential=TOKEN)
    publish(api, load_dashboards(dash_dir), create_folder=True)
    grafana.dashboards["tf-ops"]["folderUid"] = ""  # someone moved it to General
    grafana.requests.clear()
    report = publish(api, load_dashboards(dash_dir))
    assert [(c.uid, c.action) for c in report.changes][1:] == [("tf-ops", "updated"), ("tf-sla", "unchanged")]
    assert grafana.dashboards["tf-ops"]["folderUid"] == "ticketflow"


def test_a_drifted_datasource_is_updated_and_the_password_resent(grafana: FakeGrafana, dash_dir: Path) -> None:
    assert runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL)).exit_code == 0
    grafana.datasources["prometheus"]["url"] = "http://elsewhere:9090"
    grafana.datasources["prometheus"]["jsonData"]["httpMethod"] = "POST"  # not ours: kept
    grafana.requests.clear()

    result = runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL))
    assert result.exit_code == 0, result.output
    assert [(w.method, w.path) for w in grafana.writes()] == [("PUT", "/api/datasources/uid/prometheus")]
    put = grafana.writes()[0].body
    assert put["url"] == "http://prom:9090"
    assert put["jsonData"] == {"timeInterval": "15s", "httpMethod": "POST"}

    # A new password alone is invisible (Grafana never returns it) ...
    grafana.requests.clear()
    other = (*FULL[:2], "--postgres-password", "rotated", *FULL[4:])
    assert runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *other)).exit_code == 0
    assert grafana.writes() == []
    # ... so --force-datasources re-sends it.
    assert runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *other, "--force-datasources")).exit_code == 0
    assert [(w.method, w.path) for w in grafana.writes()] == [
        ("PUT", "/api/datasources/uid/prometheus"),
        ("PUT", "/api/datasources/uid/ticketflow-postgres"),
    ]
    assert grafana.secrets["ticketflow-postgres"] == {"password": "rotated"}


def test_missing_folder_without_create_folder_is_a_clear_error_and_writes_nothing(
    grafana: FakeGrafana, dash_dir: Path
) -> None:
    api = GrafanaApi.from_url(grafana.url, credential=TOKEN)
    with pytest.raises(PublishError, match="--create-folder") as err:
        publish(api, load_dashboards(dash_dir), datasources=[prometheus_datasource()])
    assert "'ticketflow' does not exist" in str(err.value)
    assert grafana.url in str(err.value)
    assert grafana.calls() == [("GET", "/api/folders/ticketflow")]

    result = runner.invoke(dashboards_app, _cli(grafana.url, dash_dir))
    assert result.exit_code == 1
    assert "pass --create-folder" in result.output
    assert "Traceback" not in result.output
    assert grafana.writes() == []


def test_wrong_token_exits_1_naming_url_and_401(grafana: FakeGrafana, dash_dir: Path) -> None:
    result = runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, *FULL, token="wrong"))
    assert result.exit_code == 1
    assert f"Grafana answered 401 to GET {grafana.url}/api/folders/ticketflow" in result.output
    assert "Unauthorized" in result.output
    assert "Traceback" not in result.output
    assert grafana.calls() == [("GET", "/api/folders/ticketflow")]
    assert grafana.requests[0].authorization == "Bearer wrong"


def test_basic_auth_is_sent_as_basic(grafana: FakeGrafana, dash_dir: Path) -> None:
    grafana.basic = ("admin", "pw:with:colons")
    args = ["publish", "--url", grafana.url, "--basic-auth", "admin:pw:with:colons", "--dir", str(dash_dir)]
    result = runner.invoke(dashboards_app, [*args, "--create-folder"], env={"TICKETFLOW_GRAFANA_TOKEN": ""})
    assert result.exit_code == 0, result.output
    expected = "Basic " + base64.b64encode(b"admin:pw:with:colons").decode()
    assert {r.authorization for r in grafana.requests} == {expected}


def test_unreachable_grafana_is_a_clear_message(dash_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = runner.invoke(dashboards_app, _cli(url, dash_dir, "--create-folder"))
    assert result.exit_code == 1
    assert f"cannot reach Grafana: GET {url}/api/folders/ticketflow failed: Connection refused" in result.output
    assert "Traceback" not in result.output


def test_invalid_json_is_named_before_any_request(grafana: FakeGrafana, dash_dir: Path) -> None:
    bad = dash_dir / "c-broken.json"
    bad.write_text('{"uid": "x", "title": "y",}', "utf-8")
    with pytest.raises(PublishError, match=r"c-broken\.json: invalid JSON at line 1"):
        load_dashboards(dash_dir)

    result = runner.invoke(dashboards_app, _cli(grafana.url, dash_dir, "--create-folder"))
    assert result.exit_code == 1
    assert str(bad) in result.output
    assert grafana.requests == []


def test_dashboard_without_uid_or_duplicate_uid_is_named(dash_dir: Path) -> None:
    (dash_dir / "c-nouid.json").write_text(json.dumps({"title": "t"}), "utf-8")
    with pytest.raises(PublishError, match=r'c-nouid\.json: the dashboard has no "uid"'):
        load_dashboards(dash_dir)
    (dash_dir / "c-nouid.json").write_text(json.dumps(_dashboard("tf-ops", "again")), "utf-8")
    with pytest.raises(PublishError, match=r"c-nouid\.json: uid 'tf-ops' is also the uid of .*a-ops\.json"):
        load_dashboards(dash_dir)


def test_load_dashboards_sorted_by_file_name(dash_dir: Path) -> None:
    assert [d["uid"] for d in load_dashboards(dash_dir)] == ["tf-ops", "tf-sla"]


def test_default_dir_is_the_packaged_dashboards() -> None:
    """The checked-in dashboards load, and their panels only use the data sources the publisher manages."""
    models = load_dashboards(Path(dashboards.__file__).parent)
    assert models, "no dashboards checked in"
    managed = {prometheus_datasource()["uid"], postgres_datasource()["uid"]}

    def uids(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict) and isinstance(ds.get("uid"), str) and not ds["uid"].startswith("$"):
                yield ds["uid"]
            for value in node.values():
                yield from uids(value)
        elif isinstance(node, list):
            for value in node:
                yield from uids(value)

    used = {u for m in models for u in uids(m)}
    assert used and used <= managed, used
