"""Search attributes the workflow keeps current for ops (Temporal UI and `ticketflow list`)."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TICKET_STATUS = SearchAttributeKey.for_keyword("TicketStatus")
DEPARTMENT = SearchAttributeKey.for_keyword("Department")
TICKET_PRIORITY = SearchAttributeKey.for_keyword("TicketPriority")
TICKET_TIER = SearchAttributeKey.for_int("TicketTier")
SLA_BREACHED = SearchAttributeKey.for_bool("SlaBreached")
CHANNEL = SearchAttributeKey.for_keyword("Channel")
TICKET_CATEGORY = SearchAttributeKey.for_keyword("TicketCategory")
SLA_DUE_AT = SearchAttributeKey.for_datetime("SlaDueAt")

ALL = (TICKET_STATUS, DEPARTMENT, TICKET_PRIORITY, TICKET_TIER, SLA_BREACHED, CHANNEL, TICKET_CATEGORY, SLA_DUE_AT)

_CLI_TYPES = {
    "KEYWORD": "Keyword",
    "INT": "Int",
    "BOOL": "Bool",
    "DATETIME": "Datetime",
}


def cli_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type.name]}"]
    return flags
