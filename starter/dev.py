"""`ticketflow dev`: the whole product on one machine, from PyPI packages only.

Temporal dev server (file-backed), PostgreSQL (embedded unless DATABASE_URL is set), an SMTP sink
that keeps mail as .eml files, the worker and its metrics. State lives under one folder, so a
second start finds the tickets of the first. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.panel import Panel

from starter.client import TicketClient
from starter.demo import run_demo
from starter.devstack import EmbeddedPostgres, TemporalDevServer, port_open, state_dir, wait_for_temporal
from starter.http_intake import HttpIntakeServer
from starter.mail_intake import MailIntakeServer
from starter.smtp_sink import SmtpSink
from starter.survey_pages import SurveyServer
from ticketflow.config import Settings
from worker import run_worker


def survey_secret(root: Path) -> SecretStr:
    """The key of survey links, made once and kept with the state so links survive a restart."""
    path = root / "survey_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32), "utf-8")
        os.chmod(path, 0o600)
    return SecretStr(path.read_text("utf-8").strip())


async def run_dev(settings: Settings, console: Console, *, demo: int, seed: int, ui_port: int) -> None:
    root = state_dir(settings.state_dir)
    host, _, port = settings.temporal_address.rpartition(":")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    pg: EmbeddedPostgres | None = None
    sink: SmtpSink | None = None
    temporal: TemporalDevServer | None = None
    worker_task: asyncio.Task[None] | None = None
    intake: MailIntakeServer | None = None
    http: HttpIntakeServer | None = None
    survey_pages: SurveyServer | None = None
    if settings.survey_secret is None:
        settings.survey_secret = survey_secret(root)
    try:
        with console.status("starting PostgreSQL, SMTP sink and Temporal..."):
            if not settings.database_url:
                pg = EmbeddedPostgres(root / "pgdata")
                settings.database_url = await asyncio.to_thread(pg.start)
            if port_open(settings.smtp_host, settings.smtp_port):
                raise RuntimeError(
                    f"SMTP port {settings.smtp_host}:{settings.smtp_port} is in use; set TICKETFLOW_SMTP_PORT"
                )
            sink = SmtpSink(settings.smtp_host, settings.smtp_port, folder=root / "mail").start()
            temporal = TemporalDevServer(
                host=host or "127.0.0.1",
                port=int(port),
                ui_port=ui_port,
                db_file=root / "temporal.db",
                log_file=root / "temporal.log",
            )
            await asyncio.to_thread(temporal.start)
            await wait_for_temporal(temporal.address)
        worker_task = asyncio.create_task(run_worker(settings, stop))
        if settings.intake_smtp_port:
            intake_client = await TicketClient.connect(
                temporal.address, settings.temporal_namespace, settings.task_queue
            )
            intake = await MailIntakeServer(intake_client, settings.intake_smtp_host, settings.intake_smtp_port).start()
        if settings.intake_http_port:
            http_client = await TicketClient.connect(temporal.address, settings.temporal_namespace, settings.task_queue)
            http = await HttpIntakeServer(http_client, settings.intake_http_host, settings.intake_http_port).start()
        if settings.survey_http_port:
            survey_client = await TicketClient.connect(
                temporal.address, settings.temporal_namespace, settings.task_queue
            )
            secret = settings.survey_secret.get_secret_value().encode("utf-8")
            survey_pages = await SurveyServer(
                survey_client, secret, settings.policy().csat, settings.survey_http_host, settings.survey_http_port
            ).start()

        metrics = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics" if settings.metrics_port else "off"
        sdk = (
            f"http://{settings.metrics_host}:{settings.sdk_metrics_port}/metrics"
            if settings.sdk_metrics_port
            else "off"
        )
        console.print(
            Panel.fit(
                f"[bold]Temporal UI[/]     {temporal.ui_url}\n"
                f"[bold]Temporal gRPC[/]   {temporal.address} (namespace {settings.temporal_namespace}, "
                f"task queue {settings.task_queue})\n"
                f"[bold]PostgreSQL[/]      {settings.database_url}\n"
                f"[bold]Mail (SMTP sink)[/] smtp://{settings.smtp_host}:{settings.smtp_port} -> {root / 'mail'}/*.eml\n"
                f"[bold]Mail intake[/]     "
                + (
                    f"smtp://{settings.intake_smtp_host}:{settings.intake_smtp_port} (send mail here to open tickets)\n"
                    if settings.intake_smtp_port
                    else "off\n"
                )
                + "[bold]HTTP intake[/]     "
                + (
                    f"POST http://{settings.intake_http_host}:{settings.intake_http_port}/tickets\n"
                    if settings.intake_http_port
                    else "off\n"
                )
                + "[bold]Survey pages[/]    "
                + (f"{settings.survey_url}/survey/...\n" if settings.survey_http_port else "off\n")
                + f"[bold]Metrics[/]         {metrics}  (Temporal SDK: {sdk})\n"
                f"[bold]State[/]           {root}\n\n"
                "Try: [cyan].venv/bin/ticketflow list[/]   [cyan].venv/bin/ticketflow show TICKET[/]   "
                "Ctrl-C stops everything.",
                title="ticketflow dev",
                border_style="green",
            )
        )
        if demo > 0:
            client = await TicketClient.connect(temporal.address, settings.temporal_namespace, settings.task_queue)
            demo_task = asyncio.create_task(run_demo(client, demo, console, seed=seed))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({demo_task, stopper, worker_task}, return_when=asyncio.FIRST_COMPLETED)
            if not demo_task.done():
                demo_task.cancel()
            elif demo_task.exception() is None:
                console.print("[green]demo submitted.[/] Watch the tickets in the Temporal UI; Ctrl-C to stop.")
            stopper.cancel()
            if demo_task.done() and not demo_task.cancelled() and demo_task.exception():
                raise demo_task.exception()  # type: ignore[misc]
        await asyncio.wait({worker_task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await worker_task
    finally:
        console.print("stopping...")
        stop.set()
        if worker_task and not worker_task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker_task, 40)
        if intake:
            await intake.stop()
        if http:
            await http.stop()
        if survey_pages:
            await survey_pages.stop()
        if temporal:
            await asyncio.to_thread(temporal.stop)
        if sink:
            sink.stop()
        if pg:
            await asyncio.to_thread(pg.stop)
        console.print("stopped; state kept in " + str(root))
