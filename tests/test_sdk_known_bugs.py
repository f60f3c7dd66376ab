"""A history the Temporal SDK wrote itself and cannot replay: a canary for an SDK Core bug.

How the history came about (dev server, temporalio 1.35.0, a worker with a small workflow cache):
  1. `open_ticket` completed (event 9) while the ticket was not in the worker's cache, and its workflow task
     (event 10) waited in the queue.
  2. A state query arrived. Core answered it by replaying the history up to event 10, and in doing so it ran
     the workflow past the activity result, which no workflow task had delivered yet: the query saw the
     ticket `open`, and the workflow had already produced its next commands.
  3. The client, having seen `open`, sent `agent_reply`. The update reached the worker in that same workflow
     task (sequenced at event 10) and was handed to the workflow in an activation of its own, after the
     commands of step 2. The task completed with [upsert, timer, notify, update accepted, record_event].
  4. On replay Core hands over the update and the activity result in one activation. The SDK runs updates
     first, so the acceptance comes before the upsert, and replay fails at event 13. The ticket's workflow
     tasks then fail on every retry, and the update's caller waits for ever.

No workflow code can change where Core puts the acceptance, so this test asserts that the bug is still
there. When an SDK upgrade replays this history, the test fails: delete it and the "Known SDK issue"
paragraph in the README. Until then the exposure is a query and an update arriving for an uncached
ticket while its workflow task waits. Keep the workflow cache above the number of open tickets per worker
(`TICKETFLOW_WORKFLOW_CACHE`), and alert on `temporal_workflow_task_execution_failed` with
failure_reason="NonDeterminismError" (tests/test_core_logs.py checks that label). tests/test_dashboards.py
avoids the combination on purpose."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from ticketflow.temporal import DATA_CONVERTER
from worker import WORKFLOWS, sandbox_runner

HISTORY = Path(__file__).parent / "histories" / "sdk-bugs" / "update-after-query-on-uncached-run.json"


def test_the_history_has_the_shape_that_triggers_the_bug() -> None:
    """The update was sequenced at the task that also carried the activity result, and accepted after that
    result's commands: the order replay cannot reproduce."""
    events = json.loads(HISTORY.read_text("utf-8"))["events"]
    kinds = [e["eventType"].removeprefix("EVENT_TYPE_") for e in events]
    assert kinds[8:16] == [
        "ACTIVITY_TASK_COMPLETED",
        "WORKFLOW_TASK_SCHEDULED",
        "WORKFLOW_TASK_STARTED",
        "WORKFLOW_TASK_COMPLETED",
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",
        "TIMER_STARTED",
        "ACTIVITY_TASK_SCHEDULED",
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
    ]
    accepted = events[15]["workflowExecutionUpdateAcceptedEventAttributes"]
    assert accepted["acceptedRequestSequencingEventId"] == "10"
    assert accepted["acceptedRequest"]["input"]["name"] == "agent_reply"
    assert "WORKFLOW_TASK_FAILED" in kinds  # what the worker did with it, for ever


async def test_sdk_still_cannot_replay_a_history_it_wrote() -> None:
    history = WorkflowHistory.from_json("ticket-sdk-bug", HISTORY.read_text("utf-8"))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=sandbox_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None, (
        "the SDK now replays this history: the Core bug is fixed. Delete this test and the README's"
        " 'Known SDK issue' paragraph, and let tests/test_dashboards.py use a small cache during the load again."
    )
    assert "Update machine does not handle this event: HistoryEvent(id: 13, UpsertWorkflowSearchAttributes)" in str(
        result.replay_failure
    )
