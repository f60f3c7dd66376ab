"""The SDK's Core warnings reach the worker's own log, not a stdout apart from it.

Core printed its warnings to stdout by default; the benchmark's parent read a worker's stdout only until
`ready`, the pipe filled during a wave of slow workflow tasks, and the worker froze mid-write with every slot
held. Here a workflow task fails for real on the dev server, and Core's warning about it must arrive as a
Python log record on `temporalio.core` (with the run it concerns), and nothing on stdout."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from ticketflow.temporal import CORE_LOG

pytestmark = pytest.mark.e2e


@workflow.defn(sandboxed=False)
class BrokenTaskWorkflow:
    """Raises a plain exception, which fails the workflow task (retried) rather than the workflow."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("broken on purpose")


class FailingTaskRecords(logging.Handler):
    """Collects Core's records; `seen` is set by the first about a failing workflow task (it arrives on a
    Core thread)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if "Failing workflow task" in record.getMessage():
            self.seen.set()


async def test_core_warnings_go_to_python_logging_not_stdout(
    dev_client: Client, capfd: pytest.CaptureFixture[str]
) -> None:
    queue = f"core-logs-{uuid.uuid4().hex[:8]}"
    handler, level = FailingTaskRecords(), CORE_LOG.level
    CORE_LOG.addHandler(handler)
    CORE_LOG.setLevel(logging.WARNING)
    try:
        async with Worker(
            dev_client, task_queue=queue, workflows=[BrokenTaskWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
        ):
            handle = await dev_client.start_workflow(
                BrokenTaskWorkflow.run, id=f"broken-{uuid.uuid4()}", task_queue=queue
            )
            try:
                await asyncio.to_thread(handler.seen.wait, 10)
            finally:
                await handle.terminate("test over")
    finally:
        CORE_LOG.removeHandler(handler)
        CORE_LOG.setLevel(level)
    failing = [r for r in handler.records if "Failing workflow task" in r.getMessage()]
    assert failing, f"no Core warning forwarded; records: {[r.getMessage() for r in handler.records]}"
    assert failing[0].name == CORE_LOG.name and failing[0].levelno == logging.WARNING
    assert handle.result_run_id and handle.result_run_id in failing[0].getMessage()
    assert "Failing workflow task" not in capfd.readouterr().out
