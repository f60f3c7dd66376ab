"""JSON Schemas of the workflow's contract, for integrations in any language.

The workflow's input, every update's argument and the state query's result are plain JSON; these
schemas (published in schemas/, checked against the code by the tests) say exactly what is accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ticketflow import contract
from ticketflow.models import (
    AgentReply,
    Assign,
    BounceReport,
    ChangePriority,
    CustomerReply,
    EscalateRequest,
    InternalNote,
    PendRequest,
    RateRequest,
    RefreshPolicy,
    ReopenRequest,
    ResolveRequest,
    TicketIn,
    TicketState,
    Transfer,
)

UPDATES: dict[str, type[BaseModel]] = {
    contract.AGENT_REPLY: AgentReply,
    contract.CUSTOMER_REPLY: CustomerReply,
    contract.NOTE: InternalNote,
    contract.ASSIGN: Assign,
    contract.REPORT_BOUNCE: BounceReport,
    contract.PEND: PendRequest,
    contract.RESOLVE: ResolveRequest,
    contract.REOPEN: ReopenRequest,
    contract.ESCALATE: EscalateRequest,
    contract.DEESCALATE: EscalateRequest,
    contract.RATE: RateRequest,
    contract.CHANGE_PRIORITY: ChangePriority,
    contract.TRANSFER: Transfer,
    contract.REFRESH_POLICY: RefreshPolicy,
}


def contract_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for the workflow input, each update and the state query."""
    ticket = TicketIn.model_json_schema()
    start = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{contract.WORKFLOW_TYPE} input",
        "description": "Start a ticket: workflow type TicketWorkflow, workflow id ticket-<id>.",
        "type": "object",
        "properties": {
            "ticket": {"$ref": "#/$defs/TicketIn"},
            "imported": {
                "type": "boolean",
                "default": False,
                "description": "migrated from another help desk: the customer is not acknowledged again",
            },
        },
        "required": ["ticket"],
        "additionalProperties": False,
        "$defs": {**ticket.pop("$defs", {}), "TicketIn": ticket},
    }
    out = {"workflow-input.json": start}
    for name, model in UPDATES.items():
        schema = model.model_json_schema()
        schema["title"] = f"update {name}"
        out[f"update-{name}.json"] = schema
    state = TicketState.model_json_schema(mode="serialization")
    state["title"] = f"query {contract.STATE_QUERY} (result)"
    out[f"query-{contract.STATE_QUERY}.json"] = state
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in contract_schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8")
        written.append(path)
    return written
