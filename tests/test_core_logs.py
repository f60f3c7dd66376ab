"""The SDK's Core warnings reach the worker's own log, not a stdout apart from it.

Core printed its warnings to stdout by default; the benchmark's parent read a worker's stdout only until
`ready`, the pipe filled during a wave of slow workflow tasks, and the worker froze mid-write with every slot
held. Here a workflow task fails for real on the dev server, and Core's warning about it must arrive as a
Python log record on `temporalio.core` (with the run it concerns), and nothing on stdout."""

from __future__ import annotations

import asyncio
import logging
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


async def test_core_warnings_go_to_python_logging_not_stdout(
    dev_client: Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    queue = f"core-logs-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.WARNING, logger=CORE_LOG.name)
    async with Worker(
        dev_client, task_queue=queue, workflows=[BrokenTaskWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        handle = await dev_client.start_workflow(BrokenTaskWorkflow.run, id=f"broken-{uuid.uuid4()}", task_queue=queue)
        try:
            for _ in range(100):
                records = [r for r in caplog.records if r.name == CORE_LOG.name]
                if any("Failing workflow task" in r.getMessage() for r in records):
                    break
                await asyncio.sleep(0.1)
        finally:
            await handle.terminate("test over")
    failing = [r for r in records if "Failing workflow task" in r.getMessage()]
    assert failing, f"no Core warning forwarded; records: {[r.getMessage() for r in caplog.records]}"
    assert failing[0].levelno == logging.WARNING
    assert handle.result_run_id and handle.result_run_id in failing[0].getMessage()
    assert "Failing workflow task" not in capfd.readouterr().out
