"""Web form, chat and API intake: a small ASGI app (Starlette) in front of the client SDK.

The same validation as every other entry point, with clear 4xx answers: 400 for a body that is not
JSON, 413 for a body over the limit, 415 for a wrong content type, 422 with field-level errors, 404
for an unknown ticket, 409 for an action the ticket's status does not allow. 201 means the ticket's
workflow exists in Temporal: nothing accepted is lost. Temporal unreachable answers 503 + Retry-After.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.service import RPCError

from activities import metrics
from starter.client import DuplicateMessage, InvalidTransition, TicketClient, TicketNotFound, TicketValidationError
from starter.serving import METRICS_ROUTE, AsgiServer
from ticketflow.models import MAX_BODY, Channel

log = logging.getLogger("ticketflow.http_intake")
MAX_REQUEST_BYTES = MAX_BODY + 64 * 1024  # a full body plus room for the rest of the ticket


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Outcome label of a refused request, by status (ticketflow_intake_requests_total{entry="http"}).
REFUSED = {400: "bad_json", 404: "not_found", 409: "conflict", 413: "too_large", 415: "wrong_type", 422: "invalid"}


OUTCOMES = ("opened", "duplicate", "reply", "unavailable", *REFUSED.values())


def _count(outcome: str) -> None:
    metrics.inc(metrics.INTAKE_REQUESTS, entry="http", outcome=outcome)


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if errors is not None:
        body["errors"] = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors]
    return JSONResponse(body, status_code=status)


def _over_limit(declared: str) -> bool:
    """A Content-Length over the limit. The header is the client's: '²' passes str.isdigit but not int(),
    and thousands of digits are over int()'s limit, so neither may reach int()."""
    if not (declared.isascii() and declared.isdigit()):
        return False  # not a length: the body is read and counted instead
    return len(declared.lstrip("0")) > len(str(MAX_REQUEST_BYTES)) or int(declared) > MAX_REQUEST_BYTES


async def _json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise BadRequest(415, "send the ticket as application/json")
    if _over_limit(request.headers.get("content-length", "")):
        raise BadRequest(413, f"request body over {MAX_REQUEST_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_REQUEST_BYTES:
            raise BadRequest(413, f"request body over {MAX_REQUEST_BYTES} bytes")
    try:
        data = json.loads(raw)
    except RecursionError:  # [[[[... deeper than the parser's stack
        raise BadRequest(400, "body is not JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, and a number of over 4300 digits
        raise BadRequest(400, f"body is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body must be a JSON object")
    return data


def create_app(tickets: TicketClient, default_channel: Channel = Channel.WEB_FORM) -> Starlette:
    for outcome in OUTCOMES:
        metrics.zero(metrics.INTAKE_REQUESTS, entry="http", outcome=outcome)

    async def open_ticket(request: Request) -> JSONResponse:
        data = await _json(request)
        data.setdefault("channel", default_channel.value)
        opened = await tickets.open(data)
        _count("duplicate" if opened.duplicate else "opened")
        return JSONResponse(opened.model_dump(), status_code=200 if opened.duplicate else 201)

    async def customer_reply(request: Request) -> JSONResponse:
        data = await _json(request)
        body, message_id = data.get("body"), data.get("external_message_id")
        if not isinstance(body, str) or (message_id is not None and not isinstance(message_id, str)):
            raise TicketValidationError("invalid reply", [{"loc": ("body",), "msg": "a text body is required"}])
        state = await tickets.customer_reply(request.path_params["ticket_id"], body, message_id)
        _count("reply")
        return JSONResponse({"ticket_id": state.ticket_id, "status": state.status})

    async def status(request: Request) -> JSONResponse:
        state = await tickets.get(request.path_params["ticket_id"])
        due = [c.due_at for c in state.clocks if c.due_at and not c.met_at and c.metric != "tier"]
        return JSONResponse(
            {
                "ticket_id": state.ticket_id,
                "status": state.status,
                "department": state.department,
                "priority": state.priority,
                "next_due_at": min(due).isoformat() if due else None,
            }
        )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    def refuse(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
        _count(REFUSED[status])
        return _error(status, message, errors)

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, BadRequest):
            return refuse(exc.status, str(exc))
        if isinstance(exc, TicketValidationError):
            return refuse(422, str(exc), exc.errors)
        if isinstance(exc, TicketNotFound):
            return refuse(404, str(exc))
        if isinstance(exc, InvalidTransition | DuplicateMessage):
            return refuse(409, str(exc))
        log.warning("intake failed: %s", exc)
        _count("unavailable")
        response = _error(503, "temporarily unable to accept the request, try again")
        response.headers["Retry-After"] = "5"
        return response

    routes = [
        Route("/tickets", open_ticket, methods=["POST"]),
        Route("/tickets/{ticket_id}", status, methods=["GET"]),
        Route("/tickets/{ticket_id}/replies", customer_reply, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        METRICS_ROUTE,
    ]
    handled = (
        BadRequest,
        TicketValidationError,
        TicketNotFound,
        InvalidTransition,
        DuplicateMessage,
        RPCError,
        ConnectionError,
        TimeoutError,
    )
    return Starlette(routes=routes, exception_handlers=dict.fromkeys(handled, handle))


class HttpIntakeServer(AsgiServer):
    def __init__(self, tickets: TicketClient, host: str = "127.0.0.1", port: int = 8088) -> None:
        super().__init__(create_app(tickets), host, port)
