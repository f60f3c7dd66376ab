"""The ticketflow worker: registers the ticket workflow and activities on one task queue,
serves /metrics, and drains on SIGTERM/SIGINT (in-flight activities finish, polling stops)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import TicketActivities, clocks, metrics
from activities.backlog import BacklogCollector
from activities.db import migrate, open_pool
from activities.gc_pauses import GC_PAUSES
from activities.health import Health, serve
from activities.mail import SmtpSettings
from activities.tickets import SurveyLinks
from ticketflow import event_loop
from ticketflow.config import Config, Settings, WorkflowSandbox, settings_problems
from ticketflow.temporal import connect
from workflows import TicketWorkflow

log = logging.getLogger("ticketflow.worker")

WORKFLOWS: Sequence[type] = (TicketWorkflow,)
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
PASSTHROUGH = ("ticketflow", "pydantic", "pydantic_core", "annotated_types", "email_validator")


def sandbox_runner(sandbox: WorkflowSandbox = "strict") -> WorkflowRunner:
    """`strict`: the SDK's default, which imports the workflow module anew for every workflow it creates, so
    a clock, randomness or I/O reached through any import fails the workflow task; the tests run it. `shared`:
    the module is imported once and shared; built-ins such as `open` are still refused, but a `datetime.now()`
    through a module import is not. Each strict workflow carries its own copy of the module, which the cycle
    collector walks in every full collection: shared makes those pauses a third as long. `off` (the worker
    process's default, ticketflow.config.DEFAULT_SANDBOX): no sandbox, so nothing is refused at run time, and
    no activation, workflow creation or payload pays for entering one. What guards the code is what runs
    before a release: the tests run `strict`, `tests/test_workflow_code.py` refuses clocks, randomness, I/O,
    `open` and module-level state in the source, and `tests/test_replay.py` replays recorded histories under
    all three."""
    if sandbox == "off":
        return UnsandboxedWorkflowRunner()
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    if sandbox == "shared":
        restrictions = restrictions.with_passthrough_all_modules()
    return SandboxedWorkflowRunner(restrictions=restrictions)


def activity_list(acts: TicketActivities) -> list[Any]:
    return [
        acts.open_ticket,
        acts.intake,
        acts.categorise,
        acts.load_policy,
        acts.route,
        acts.record_event,
        acts.record_rating,
        acts.notify,
        acts.record_and_notify,
    ]


def build_worker(
    client: Client,
    task_queue: str,
    pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]],
    config: Config,
    smtp: SmtpSettings,
    activities: TicketActivities | None = None,
    model_dir: Path | None = None,
    survey_links: SurveyLinks | None = None,
    sandbox: WorkflowSandbox = "strict",
    **worker_options: Any,
) -> Worker:
    classifier = None
    if model_dir is not None:
        from activities.classifier import TicketClassifier  # scikit-learn only where a model is configured

        classifier = TicketClassifier.load(model_dir)
        log.info("categorisation uses the model in %s after the rules", model_dir)
    acts = activities or TicketActivities(pool, config, smtp, classifier=classifier, survey_links=survey_links)
    metrics.initialise(config, acts.templates.names())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=activity_list(acts),
        workflow_runner=sandbox_runner(sandbox),
        graceful_shutdown_timeout=worker_options.pop("graceful_shutdown_timeout", GRACEFUL_SHUTDOWN),
        **worker_options,
    )


def metrics_registry(backlog: BacklogCollector) -> CollectorRegistry:
    """The business counters plus the backlog gauges and this process's collector pauses. With
    PROMETHEUS_MULTIPROC_DIR set (several worker processes behind one port, or counters that must outlive a
    killed process) the counters are read from prometheus-client's per-process files instead of this process's
    memory, and the process metrics (`process_*`, `python_gc_*`, the pauses) are left out: no single
    process's figures stand for the others'."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
        GC_PAUSES.export(registry)
    registry.register(backlog)
    return registry


def survey_links(settings: Settings) -> SurveyLinks:
    if settings.survey_secret is None or not settings.survey_secret.get_secret_value():
        raise SystemExit(
            "TICKETFLOW_SURVEY_SECRET is not set: survey links are signed with it (use a long random value, "
            "the same for every worker and the survey pages; `ticketflow dev` makes one for you)"
        )
    return SurveyLinks(settings.survey_url, settings.survey_secret.get_secret_value().encode("utf-8"))


def smtp_settings(settings: Settings) -> SmtpSettings:
    return SmtpSettings(
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
    )


async def reconcile_clocks(conninfo: str, config: Config) -> None:
    """A database that is away for a moment, or a deadlock with an audit step (PostgreSQL aborts one of the two),
    is the next round's business, not a reason to stop the worker."""
    try:
        rebuilt = await clocks.reconcile(conninfo, config)
    except (psycopg.Error, OSError) as err:
        log.warning("SLA clocks not reconciled this time: %s", err)
        return
    if rebuilt:
        log.info("%d SLA clock rows rebuilt from events that a worker before migration 0009 wrote", rebuilt)


async def keep_clocks_reconciled(conninfo: str, config: Config, every: float) -> None:
    """A rolling upgrade past 0009 runs old workers beside this one for a while: catch their clocks up."""
    while True:
        await asyncio.sleep(every)
        await reconcile_clocks(conninfo, config)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives; then drain and return."""
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: point it at PostgreSQL (or use `ticketflow dev`)")
    config = settings.policy()
    links = survey_links(settings)
    sdk_bind = f"{settings.metrics_host}:{settings.sdk_metrics_port}" if settings.sdk_metrics_port else None
    keys = settings.codec_keys.get_secret_value() if settings.codec_keys else None
    client = await connect(settings.temporal_address, settings.temporal_namespace, sdk_bind, codec_keys=keys)
    try:
        applied = await migrate(settings.database_url)
    except Exception as err:
        raise ConnectionError(f"cannot prepare PostgreSQL at DATABASE_URL: {err}") from err
    if applied:
        log.info("database migrations applied: %s", ", ".join(applied))
    filled = await clocks.fill_dues(settings.database_url, config)
    if filled:
        log.info("due instants given to %d business-hours SLA clocks carried over by migration 0009", filled)
    await reconcile_clocks(settings.database_url, config)
    health = Health(settings.database_url)
    http = None
    if settings.metrics_port:
        registry = metrics_registry(BacklogCollector(settings.database_url, config))
        # the multiprocess files are read by whichever process serves: no one process sees every scrape
        first_scrape = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else metrics.FIRST_SCRAPE
        http = serve(settings.metrics_host, settings.metrics_port, registry, health, first_scrape)
        log.info(
            "business metrics on http://%s:%s/metrics, probes on /healthz and /readyz",
            settings.metrics_host,
            settings.metrics_port,
        )
    pool = await open_pool(settings.database_url, settings.db_pool_max)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        worker = build_worker(
            client,
            settings.task_queue,
            pool,
            config,
            smtp_settings(settings),
            model_dir=settings.model_dir,
            survey_links=links,
            sandbox=settings.workflow_sandbox,
            max_cached_workflows=settings.workflow_cache,
        )
        async with worker, asyncio.TaskGroup() as tasks:
            reconciling = tasks.create_task(
                keep_clocks_reconciled(settings.database_url, config, settings.clock_reconcile_seconds)
            )
            health.polling = True
            log.info(
                "worker polling task queue %r on %s (event loop: %s)",
                settings.task_queue,
                settings.temporal_address,
                event_loop.running_loop(),
            )
            await stop.wait()
            health.draining = True
            log.info("stopping: draining in-flight work")
            reconciling.cancel()
    finally:
        await pool.close()
        if http is not None:  # no HTTP thread may outlive the worker: it would race interpreter shutdown
            await asyncio.to_thread(http.shutdown)
            http.server_close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
    except ValidationError as err:
        print(settings_problems(err), file=sys.stderr)
        raise SystemExit(2) from None
    try:
        event_loop.run(run_worker(settings), settings.event_loop)
    except event_loop.EventLoopUnavailable as err:
        print(f"worker cannot start: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
