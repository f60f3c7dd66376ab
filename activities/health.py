"""The worker's HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for orchestrators.

/healthz says the process is alive and serving. /readyz says it should receive work: the worker has
started polling, is not draining after SIGTERM, and PostgreSQL answers (Temporal's reachability is the
SDK's concern: a worker that lost it keeps retrying its polls and shows in the SDK metrics).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

import psycopg
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from activities.metrics import FirstScrape

StartResponse = Callable[..., Any]


class Health:
    """Set by the worker as it starts and drains; read by the HTTP threads."""

    def __init__(self, database_url: str, db_check_ttl: float = 5.0) -> None:
        self.database_url = database_url
        self.polling = False
        self.draining = False
        self._ttl = db_check_ttl
        self._db: tuple[float, str | None] = (0.0, "not checked yet")
        self._lock = threading.Lock()

    def database_problem(self) -> str | None:
        """None when PostgreSQL answered a query within the last few seconds."""
        with self._lock:
            checked_at, problem = self._db
            if time.monotonic() - checked_at < self._ttl:
                return problem
            try:
                with psycopg.connect(self.database_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                problem = None
            except psycopg.Error as err:
                problem = f"PostgreSQL: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
            self._db = (time.monotonic(), problem)
            return problem

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        if not self.polling:
            problems.append("the worker is not polling yet")
        if self.draining:
            problems.append("the worker is draining after a stop signal")
        if (db := self.database_problem()) is not None:
            problems.append(db)
        return not problems, {"ready": not problems, "problems": problems}


def wsgi_app(
    registry: CollectorRegistry, health: Health, first_scrape: FirstScrape | None = None
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, 200, {"alive": True})
        if path == "/readyz":
            ready, body = health.readiness()
            return _json(start_response, 200 if ready else 503, body)
        if first_scrape is None or environ.get("QUERY_STRING"):  # a filtered read (name[]=...) shows some series
            response: Iterable[bytes] = metrics(environ, start_response)
            return response
        number = first_scrape.scrape_begins()
        text = list(metrics(environ, start_response))  # built whole: an error here is no scrape
        first_scrape.scrape_ends(number)
        return text

    return app


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> list[bytes]:
    text = json.dumps(body).encode("utf-8")
    reason = {200: "OK", 503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(text)))])
    return [text]


class _Server(ThreadingWSGIServer):
    first_scrape: FirstScrape | None = None

    def shutdown(self) -> None:
        super().shutdown()
        if self.first_scrape is not None:  # nothing will scrape this process now: held counts apply
            self.first_scrape.stopped()
            self.first_scrape = None


def serve(
    host: str, port: int, registry: CollectorRegistry, health: Health, first_scrape: FirstScrape | None = None
) -> ThreadingWSGIServer:
    """Serve in a daemon thread, as prometheus-client's own start_http_server does. With `first_scrape`,
    counts on a series not yet scraped wait for the scrape that shows it at zero (metrics.FirstScrape)."""
    server = make_server(host, port, wsgi_app(registry, health, first_scrape), _Server, handler_class=_SilentHandler)
    if first_scrape is not None:
        first_scrape.serving()
        server.first_scrape = first_scrape
    threading.Thread(target=server.serve_forever, daemon=True, name="ticketflow-http").start()
    return server
