"""The floor: an empty workflow. Started with the same input and the same number of starts as the pipeline,
it is the most the Temporal server and a worker can do on this machine, and the pipeline's yardstick."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

FLOOR_WORKFLOW = "BenchFloorWorkflow"


@workflow.defn(name=FLOOR_WORKFLOW)
class BenchFloorWorkflow:
    @workflow.run
    async def run(self, ticket: dict[str, Any] | None = None) -> None:
        return None
