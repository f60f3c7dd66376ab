"""One benchmark worker process: the product's worker (`worker.build_worker`: the ticket workflow and its
activities, sandboxed as in production) and/or a worker for the floor workflow, on the task queues given.
Prints `ready` once polling; drains and exits on SIGTERM. The driver reads its CPU time and memory from /proc
its Temporal SDK metrics (sticky cache size and evictions) from --sdk-metrics-port, and its pauses for the cycle
collector (the product's own `ticketflow_worker_gc_pause_seconds`) from --gc-metrics-port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

from prometheus_client import REGISTRY, start_http_server
from temporalio import activity
from temporalio.worker import Worker

import worker
from activities.db import open_pool
from activities.gc_pauses import GC_PAUSES
from activities.mail import SmtpSettings
from activities.tickets import SurveyLinks, TicketActivities
from bench.floor import (
    BenchActivityShapedFloorWorkflow,
    BenchFloorWorkflow,
    BenchIoShapedFloorWorkflow,
    BenchShapedFloorWorkflow,
    bench_noop,
)
from bench.floor_io import RowAndMail
from ticketflow import contract, event_loop
from ticketflow.config import DEFAULT_SANDBOX, Config, WorkflowSandbox, default_config
from ticketflow.models import OpenRequest, OpenResult
from ticketflow.temporal import connect

SURVEY_LINKS = SurveyLinks("http://survey.bench.invalid", b"bench-survey-secret-not-for-production")
DRAIN = timedelta(seconds=2)


class AckApart(TicketActivities):
    """The opening step of a worker from before "ack-in-open-step": the workflow then sends the acknowledgement
    through `notify`, one more activity and workflow task, everything else the same."""

    @activity.defn(name=contract.OPEN_TICKET)
    async def open_ticket(self, req: OpenRequest) -> OpenResult:
        return await super().open_ticket(req.model_copy(update={"acknowledge": None}))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--temporal", required=True, help="Temporal frontend host:port")
    p.add_argument("--database", required=True, help="PostgreSQL URL")
    p.add_argument("--smtp-port", type=int, required=True)
    p.add_argument("--task-queue", help="serve the ticket workflow and its activities here")
    p.add_argument("--floor-queue", help="serve the empty floor workflow here")
    p.add_argument("--config", type=Path, help="policy as JSON (Config.model_dump_json); default policy if absent")
    p.add_argument("--max-cached", type=int, default=1000, help="max_cached_workflows (the SDK default is 1000)")
    p.add_argument("--pool", type=int, default=10, help="database pool size (TICKETFLOW_DB_POOL_MAX default)")
    p.add_argument("--sdk-metrics-port", type=int, default=0)
    p.add_argument(
        "--gc-metrics-port", type=int, default=0, help="serve the worker's collector pauses (and counters) here"
    )
    p.add_argument(
        "--ack-apart",
        action="store_true",
        help="the opening step ignores the acknowledgement it is asked for, so `notify` sends it in a workflow task"
        " of its own, as a worker from before patch ack-in-open-step runs it",
    )
    p.add_argument(
        "--sandbox",
        choices=get_args(WorkflowSandbox),
        default=DEFAULT_SANDBOX,
        help="the ticket workflow's sandbox (TICKETFLOW_WORKFLOW_SANDBOX, default %(default)s)",
    )
    p.add_argument(
        "--event-loop",
        choices=get_args(event_loop.EventLoop),
        default=event_loop.DEFAULT_EVENT_LOOP,
        help="the process's event loop (TICKETFLOW_EVENT_LOOP, default %(default)s)",
    )
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    bind = f"127.0.0.1:{args.sdk_metrics_port}" if args.sdk_metrics_port else None
    client = await connect(args.temporal, sdk_metrics_bind=bind)
    sandbox: WorkflowSandbox = args.sandbox
    # the floors run as the ticket workflow does: with the default, no sandbox, which makes them the fastest
    floor_runner = worker.sandbox_runner(sandbox)
    config = Config.model_validate_json(args.config.read_text("utf-8")) if args.config else default_config()
    options: dict[str, Any] = {"max_cached_workflows": args.max_cached, "graceful_shutdown_timeout": DRAIN}
    # Experiments with the SDK's worker options, e.g. BENCH_WORKER_OPTIONS='{"max_concurrent_workflow_tasks": 20}'
    for key, value in json.loads(os.environ.get("BENCH_WORKER_OPTIONS", "{}")).items():
        options[key] = timedelta(seconds=value) if key.endswith("_timeout") else value
    # Experiments with the cycle collector's thresholds, e.g. BENCH_GC='{"threshold": [10000, 10, 10]}'
    collector = json.loads(os.environ.get("BENCH_GC", "{}"))
    if "threshold" in collector:
        gc.set_threshold(*collector["threshold"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.gc_metrics_port:
        GC_PAUSES.export(REGISTRY)  # as worker.metrics_registry does
        start_http_server(args.gc_metrics_port, addr="127.0.0.1")
    pool = await open_pool(args.database, args.pool)
    try:
        async with contextlib.AsyncExitStack() as workers:
            if args.task_queue:
                smtp = SmtpSettings(host="127.0.0.1", port=args.smtp_port)
                acts = (AckApart if args.ack_apart else TicketActivities)(pool, config, smtp, survey_links=SURVEY_LINKS)
                await workers.enter_async_context(
                    worker.build_worker(
                        client,
                        args.task_queue,
                        pool,
                        config,
                        smtp,
                        activities=acts,
                        sandbox=sandbox,
                        **options,
                    )
                )
            if args.floor_queue:
                row_and_mail = RowAndMail(pool, args.smtp_port)
                await row_and_mail.create_table()
                floor = Worker(
                    client,
                    task_queue=args.floor_queue,
                    workflows=[
                        BenchFloorWorkflow,
                        BenchShapedFloorWorkflow,
                        BenchActivityShapedFloorWorkflow,
                        BenchIoShapedFloorWorkflow,
                    ],
                    activities=[bench_noop, row_and_mail.bench_row_and_mail],
                    workflow_runner=floor_runner,
                    **options,
                )
                await workers.enter_async_context(floor)
            print("ready", flush=True)
            await stop.wait()
    finally:
        await pool.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse()
    event_loop.run(run(args), args.event_loop)


if __name__ == "__main__":
    main()
