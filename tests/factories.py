"""Ticket payloads for tests."""

from __future__ import annotations

import uuid
from typing import Any


def ticket(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subject": "Cannot log in to the dashboard",
        "body": "Since this morning I cannot log in. The page shows error 502. Please help.",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "type": "regular", "region": "EU"},
        "channel": "email",
        "external_message_id": f"<{uuid.uuid4().hex}@mail.example.com>",
    }
    for key, value in overrides.items():
        if key == "customer":
            base["customer"] = {**base["customer"], **value}
        else:
            base[key] = value
    return base
