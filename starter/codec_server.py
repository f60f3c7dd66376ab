"""A codec server, so the Temporal UI and CLI can show encrypted ticket payloads to people allowed to.

Temporal's codec server protocol: POST /encode and POST /decode take and return
`{"payloads": [...]}` (proto-JSON of temporal.api.common.v1.Payloads). Decoding hands out customer
data, so both endpoints need `Authorization: Bearer <token>` with a token from
TICKETFLOW_CODEC_TOKENS (401 without one, 403 for a wrong one); encoding is guarded too, or anyone
could forge payloads that workers accept. CORS answers the UI's origin only. /healthz is open.

Point the UI at it with `temporal server start-dev --ui-codec-endpoint http://127.0.0.1:8234`, or
the CLI with `--codec-endpoint ... --codec-auth "Bearer <token>"`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from starter.serving import AsgiServer, run_until_signal
from ticketflow.codec import AesGcmCodec, CodecDecodeError, CodecKeyError
from ticketflow.config import Settings

log = logging.getLogger("ticketflow.codec_server")
TOKENS_ENV = "TICKETFLOW_CODEC_TOKENS"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MIN_TOKEN_LENGTH = 16  # a bearer token that guards customer data must not be guessable
DEFAULT_UI_ORIGIN = "http://127.0.0.1:8233"
DEFAULT_PORT = 8234
ALLOWED_HEADERS = "content-type, x-namespace, authorization"


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def parse_tokens(spec: str | None) -> list[str]:
    """Comma-separated bearer tokens; blank entries are refused rather than silently skipped."""
    if spec is None or not spec.strip():
        raise ValueError(f"{TOKENS_ENV} is not set: without tokens nobody could decode")
    tokens = []
    for n, raw in enumerate(spec.split(","), start=1):
        token = raw.strip()
        if not token:
            raise ValueError(f"{TOKENS_ENV} entry {n} is empty (a stray comma?)")
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ValueError(f"{TOKENS_ENV} entry {n} must be at least {MIN_TOKEN_LENGTH} characters without spaces")
        tokens.append(token)
    return tokens


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(codec: PayloadCodec, tokens: Iterable[str], ui_origin: str = DEFAULT_UI_ORIGIN) -> Starlette:
    """The codec server ASGI app; `tokens` may encode and decode, `ui_origin` is the only CORS origin."""
    allowed = [t.encode("utf-8") for t in tokens]
    if not allowed or any(not t for t in allowed):
        raise ValueError("the codec server needs at least one non-empty token")
    origin_allowed = ui_origin.rstrip("/")

    def cors(request: Request) -> dict[str, str]:
        if request.headers.get("origin") != origin_allowed:
            return {"Vary": "Origin"}
        return {
            "Access-Control-Allow-Origin": origin_allowed,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def authorise(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "send Authorization: Bearer <token>", {"WWW-Authenticate": 'Bearer realm="codec"'})
        presented = token.strip().encode("utf-8")
        ok = False
        for candidate in allowed:  # no early exit: every token is compared
            ok |= hmac.compare_digest(presented, candidate)
        if not ok:
            raise _Refused(403, "this token may not use the codec")

    async def payloads_of(request: Request) -> Payloads:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
            raise _Refused(413, f"request body over {MAX_REQUEST_BYTES} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_REQUEST_BYTES:
                raise _Refused(413, f"request body over {MAX_REQUEST_BYTES} bytes")
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            return json_format.ParseDict(data, Payloads())
        except (ValueError, json_format.ParseError) as err:  # JSONDecodeError is a ValueError
            raise _Refused(400, f'body must be {{"payloads": [...]}} in proto-JSON: {err}') from None

    def answer(payloads: Sequence[Any], request: Request) -> JSONResponse:
        body = json_format.MessageToDict(Payloads(payloads=payloads))
        body.setdefault("payloads", [])
        return JSONResponse(body, headers={**cors(request), "Cache-Control": "no-store"})

    async def preflight(request: Request) -> Response:
        headers = cors(request)
        if "Access-Control-Allow-Origin" not in headers:
            return _error(403, "origin not allowed", headers)
        headers |= {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        }
        return Response(status_code=204, headers=headers)

    async def run(request: Request, decode: bool) -> Response:
        if request.method == "OPTIONS":
            return await preflight(request)
        try:
            authorise(request)
            payloads = await payloads_of(request)
            if decode:
                out = await codec.decode(payloads.payloads)
            else:
                out = await codec.encode(payloads.payloads)
        except _Refused as err:
            return _error(err.status, str(err), {**cors(request), **err.headers})
        except CodecDecodeError as err:  # names a key id or says "tampered"; never payload content
            return _error(422, str(err), cors(request))
        log.info(
            "%s %d payloads for namespace %s",
            "decoded" if decode else "encoded",
            len(out),
            request.headers.get("x-namespace", "?"),
        )
        return answer(out, request)

    async def decode(request: Request) -> Response:
        return await run(request, decode=True)

    async def encode(request: Request) -> Response:
        return await run(request, decode=False)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/decode", decode, methods=["POST", "OPTIONS"]),
            Route("/encode", encode, methods=["POST", "OPTIONS"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


class CodecServer(AsgiServer):
    """The codec server on the caller's event loop (loopback by default: put TLS in front otherwise)."""

    def __init__(
        self,
        codec: PayloadCodec,
        tokens: Iterable[str],
        ui_origin: str = DEFAULT_UI_ORIGIN,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
    ) -> None:
        super().__init__(create_app(codec, tokens, ui_origin), host, port)


async def _serve(server: CodecServer) -> None:
    await run_until_signal(await server.start())


def codec_server(
    host: Annotated[str, typer.Option(help="Interface to bind; keep loopback unless TLS is in front.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of /encode and /decode.")] = DEFAULT_PORT,
    ui_origin: Annotated[
        str, typer.Option(help="The Temporal UI's origin, the only one CORS allows (localhost is another origin).")
    ] = DEFAULT_UI_ORIGIN,
) -> None:
    """Serve the codec server for the Temporal UI/CLI (keys: TICKETFLOW_CODEC_KEYS, tokens: TICKETFLOW_CODEC_TOKENS)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if settings.codec_keys is None or not settings.codec_keys.get_secret_value().strip():
        typer.echo("TICKETFLOW_CODEC_KEYS is not set: the codec server needs the workers' keys", err=True)
        raise typer.Exit(2)
    try:
        codec = AesGcmCodec.from_spec(settings.codec_keys.get_secret_value())
        tokens = parse_tokens(os.environ.get(TOKENS_ENV))
    except (CodecKeyError, ValueError) as err:
        typer.echo(f"codec server cannot start: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"codec server on http://{host}:{port} for UI origin {ui_origin}; Ctrl-C stops it")
    asyncio.run(_serve(CodecServer(codec, tokens, ui_origin, host, port)))  # uvicorn logs a bind failure and exits 1
