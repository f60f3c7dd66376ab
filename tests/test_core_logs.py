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
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from starter.devstack import TemporalDevServer, free_port
from tests.conftest import EXPECTED_NONDETERMINISM, failing_on_nondeterminism
from ticketflow.temporal import CORE_LOG, connect

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


@workflow.defn(name="Changed", sandboxed=False)
class ChangedBefore:
    """First deployed: waits on a timer."""

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(hours=1))

    @workflow.signal
    def poke(self) -> None:
        pass

    @workflow.query
    def started(self) -> bool:
        """Answered once the first workflow task (the one that starts the timer) has run."""
        return True


@workflow.defn(name="Changed", sandboxed=False)
class ChangedAfter:
    """The same workflow changed without a patch: it now starts with an activity, where history has a timer."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity("nothing", start_to_close_timeout=timedelta(seconds=5))

    @workflow.signal
    def poke(self) -> None:
        pass


async def test_the_suite_fails_a_test_whose_workflow_task_fails_for_nondeterminism(
    dev_server: TemporalDevServer,
) -> None:
    """The guard every test runs under (tests/conftest.py) sees a real nondeterminism error: a running workflow
    meets a worker whose code changed without a patch, and the guard fails the test naming the run. The SDK
    counts it under the label the README's alert uses."""
    sdk_port = free_port()
    dev_client = await connect(dev_server.address, sdk_metrics_bind=f"127.0.0.1:{sdk_port}")
    queue = f"nde-{uuid.uuid4().hex[:8]}"
    runner = UnsandboxedWorkflowRunner()
    async with Worker(dev_client, task_queue=queue, workflows=[ChangedBefore], workflow_runner=runner):
        handle = await dev_client.start_workflow(ChangedBefore.run, id=f"nde-{uuid.uuid4()}", task_queue=queue)
        assert await handle.query(ChangedBefore.started)  # the timer is in the history

    assert handle.result_run_id is not None
    EXPECTED_NONDETERMINISM.add(handle.result_run_id)  # for every other test's guard, now and later
    try:
        with pytest.raises(pytest.fail.Exception) as failed, failing_on_nondeterminism(ignoring=set()) as seen:
            async with Worker(dev_client, task_queue=queue, workflows=[ChangedAfter], workflow_runner=runner):
                await handle.signal(ChangedBefore.poke)  # a new workflow task: the new worker replays, diverges
                assert await asyncio.to_thread(seen.seen.wait, 20), "Core reported no nondeterminism"
    finally:
        await handle.terminate("test over")
    assert "failed for nondeterminism" in str(failed.value)
    assert handle.result_run_id in str(failed.value)
    async with httpx.AsyncClient(timeout=5) as web:
        text = (await web.get(f"http://127.0.0.1:{sdk_port}/metrics")).text
    failures = {
        s.labels.get("failure_reason"): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "temporal_workflow_task_execution_failed"
        for s in f.samples
        if s.labels.get("task_queue") == queue and not s.name.endswith("_created")
    }
    assert failures.get("NonDeterminismError", 0) >= 1, failures
