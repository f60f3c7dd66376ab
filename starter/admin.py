"""Cluster set-up for a Temporal server that ticketflow did not start itself (compose, production)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from ticketflow import search

_TYPES = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "INT": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "BOOL": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}


async def register_search_attributes(client: Client) -> list[str]:
    """Add ticketflow's search attributes that are missing; return their names. An attribute that exists
    with another type is an error: the workflow's upserts would fail its tasks forever."""
    wanted = {key.name: _TYPES[key.indexed_value_type.name] for key in search.ALL}
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        existing = dict(listed.custom_attributes)
    except RPCError as err:  # Temporal's Java test server cannot list: it starts with none registered
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = {}
    clashes = [
        f"{n} is {IndexedValueType.Name(existing[n])}" for n, t in wanted.items() if n in existing and existing[n] != t
    ]
    if clashes:
        raise ValueError(f"search attributes registered with other types: {', '.join(clashes)}")
    missing = {n: t for n, t in wanted.items() if n not in existing}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)
