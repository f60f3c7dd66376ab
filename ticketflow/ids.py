"""Ticket identifiers.

A ticket that carries an external message id (an email Message-ID, a chat message id) gets an id
derived from it, so the same message can never open two tickets: the workflow id is the same and
the start uses the use-existing conflict policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid

_ID = re.compile(r"^[a-z2-7]{4,32}$")
WORKFLOW_PREFIX = "ticket-"


def ticket_id_for(external_message_id: str | None) -> str:
    if external_message_id and external_message_id.strip():
        raw = hashlib.sha256(external_message_id.strip().encode("utf-8")).digest()
    else:
        raw = uuid.uuid4().bytes
    return base64.b32encode(raw).decode("ascii").lower().rstrip("=")[:12]


def workflow_id(ticket_id: str) -> str:
    return f"{WORKFLOW_PREFIX}{parse_ticket_id(ticket_id)}"


def parse_ticket_id(value: str) -> str:
    """Accept `abc123…` or `ticket-abc123…`; raise ValueError on anything else."""
    tid = value.strip().lower().removeprefix(WORKFLOW_PREFIX)
    if not _ID.match(tid):
        raise ValueError(f"not a ticket id: {value!r} (expected 4-32 characters from a-z and 2-7)")
    return tid
