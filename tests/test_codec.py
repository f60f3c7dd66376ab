"""Payload encryption: the AES-GCM codec on its own, on the real Temporal dev server (no customer
data in a raw history), and the codec server the Temporal UI and CLI call."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError

from starter.client import TicketClient
from starter.codec_server import MAX_REQUEST_BYTES, CodecServer, create_app, parse_tokens
from starter.devstack import TemporalDevServer, free_port
from tests.conftest import WorkerFactory, terminate_leftovers
from tests.factories import ticket
from ticketflow import contract
from ticketflow.codec import (
    ENCODING,
    KEY_ID_METADATA,
    AesGcmCodec,
    CodecDecodeError,
    CodecKeyError,
    data_converter,
    generate_key,
    parse_keys,
)
from ticketflow.ids import ticket_id_for, workflow_id
from ticketflow.models import Status, TicketState, TicketWorkflowInput
from ticketflow.temporal import DATA_CONVERTER, connect, converter_for

OLD_KEY = generate_key()
NEW_KEY = generate_key()
TOKEN = "test-codec-token-" + secrets.token_hex(8)
UI_ORIGIN = "http://127.0.0.1:8233"
MARKER = "zorblax"  # in every piece of customer data below, and nowhere else


def payloads(*values: Any) -> list[Payload]:
    return DATA_CONVERTER.payload_converter.to_payloads(list(values))


CUSTOMER_VALUE = {"name": "Quentin Zorblax", "email": "quentin.zorblax@example.com", "body": "my Zorblax order"}


# --- the codec --------------------------------------------------------------------------------------


async def test_round_trip_encrypts_with_key_id_and_hides_the_content() -> None:
    codec = AesGcmCodec.from_spec(f"k1:{OLD_KEY}")
    plain = payloads(CUSTOMER_VALUE, "second")
    encrypted = await codec.encode(plain)
    assert len(encrypted) == 2
    for p in encrypted:
        assert p.metadata["encoding"] == ENCODING and p.metadata[KEY_ID_METADATA] == b"k1"
        assert MARKER not in p.SerializeToString().lower().decode("latin-1")
    assert await codec.decode(encrypted) == plain
    converter = data_converter(codec)
    assert await converter.decode(await converter.encode([CUSTOMER_VALUE])) == [CUSTOMER_VALUE]


async def test_every_encryption_uses_a_fresh_nonce() -> None:
    codec = AesGcmCodec.from_spec(f"k1:{OLD_KEY}")
    (p,) = payloads(CUSTOMER_VALUE)
    first, second = await codec.encode([p, p])
    assert first.data[:12] != second.data[:12] and first.data != second.data
    assert await codec.decode([first, second]) == [p, p]


async def test_tampered_ciphertext_fails_authentication() -> None:
    codec = AesGcmCodec.from_spec(f"k1:{OLD_KEY}")
    (sealed,) = await codec.encode(payloads(CUSTOMER_VALUE))
    for index in (0, 12, len(sealed.data) - 1):  # nonce, ciphertext, tag
        tampered = Payload()
        tampered.CopyFrom(sealed)
        data = bytearray(sealed.data)
        data[index] ^= 0x01
        tampered.data = bytes(data)
        with pytest.raises(CodecDecodeError, match="key id 'k1' failed authentication"):
            await codec.decode([tampered])
    truncated = Payload()
    truncated.CopyFrom(sealed)
    truncated.data = sealed.data[:20]
    with pytest.raises(CodecDecodeError, match="truncated"):
        await codec.decode([truncated])


async def test_key_id_is_bound_to_the_ciphertext() -> None:
    # The same key bytes under two ids: only the authenticated key id stops a re-labelled payload.
    codec = AesGcmCodec.from_spec(f"a:{OLD_KEY},b:{OLD_KEY}")
    (sealed,) = await codec.encode(payloads(CUSTOMER_VALUE))
    assert sealed.metadata[KEY_ID_METADATA] == b"a"
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_METADATA] = b"b"
    with pytest.raises(CodecDecodeError, match="key id 'b' failed authentication"):
        await codec.decode([relabelled])
    del relabelled.metadata[KEY_ID_METADATA]
    with pytest.raises(CodecDecodeError, match="without 'encryption-key-id'"):
        await codec.decode([relabelled])


async def test_unknown_key_id_is_named() -> None:
    (sealed,) = await AesGcmCodec.from_spec(f"retired-2023:{OLD_KEY}").encode(payloads("x"))
    with pytest.raises(CodecDecodeError, match=r"unknown key id 'retired-2023'.*\['current'\]"):
        await AesGcmCodec.from_spec(f"current:{NEW_KEY}").decode([sealed])


async def test_rotation_new_key_first_old_keys_still_decrypt() -> None:
    before = AesGcmCodec.from_spec(f"old:{OLD_KEY}")
    old_payloads = await before.encode(payloads(CUSTOMER_VALUE))
    after = AesGcmCodec.from_spec(f"new:{NEW_KEY}, old:{OLD_KEY}")
    assert after.encrypting_key_id == "new" and after.key_ids == ("new", "old")
    assert await after.decode(old_payloads) == payloads(CUSTOMER_VALUE)
    new_payloads = await after.encode(payloads(CUSTOMER_VALUE))
    assert new_payloads[0].metadata[KEY_ID_METADATA] == b"new"
    assert await after.decode(new_payloads) == payloads(CUSTOMER_VALUE)
    with pytest.raises(CodecDecodeError, match="unknown key id 'new'"):  # a worker not yet given the new key
        await before.decode(new_payloads)


async def test_unencrypted_payloads_pass_through() -> None:
    codec = AesGcmCodec.from_spec(f"k1:{OLD_KEY}")
    plain = payloads(CUSTOMER_VALUE, None, 42)
    assert await codec.decode(plain) == plain
    binary = Payload(metadata={"encoding": b"binary/plain"}, data=b"\x00\x01")
    assert await codec.decode([binary]) == [binary]


async def test_failure_messages_are_encrypted_too() -> None:
    converter = data_converter(AesGcmCodec.from_spec(f"k1:{OLD_KEY}"))
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    failure = Failure()
    await converter.encode_failure(ApplicationError("no account for Quentin Zorblax", type="Lookup"), failure)
    assert failure.message == "Encoded failure"
    assert MARKER not in failure.SerializeToString().lower().decode("latin-1")
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError) and decoded.message == "no account for Quentin Zorblax"


def b64(n: int) -> str:
    return base64.b64encode(secrets.token_bytes(n)).decode()


SHORT_KEY = b64(16)


@pytest.mark.parametrize(
    ("spec", "message", "secret"),
    [
        ("", "TICKETFLOW_CODEC_KEYS is empty", ""),
        (f"a:{OLD_KEY},", "entry 2 is empty", OLD_KEY),
        (OLD_KEY, "entry 1 has no key id", OLD_KEY),
        (f":{OLD_KEY}", "entry 1 has an empty key id", OLD_KEY),
        (f"has space:{OLD_KEY}", "entry 1: key id must be 1-64 characters", OLD_KEY),
        ("a:not*base64*at-all", "entry 1 (key id 'a'): the key is not valid base64", "not*base64*at-all"),
        (f"a:{OLD_KEY},b:{SHORT_KEY}", "entry 2 (key id 'b'): the key is 16 bytes, AES-256-GCM needs 32", SHORT_KEY),
        (f"a:{OLD_KEY},a:{NEW_KEY}", "entry 2 (key id 'a'): duplicate key id", NEW_KEY),
    ],
    ids=["empty", "stray-comma", "no-id", "empty-id", "bad-id", "bad-base64", "wrong-length", "duplicate"],
)
def test_bad_key_lists_are_named_without_key_material(spec: str, message: str, secret: str) -> None:
    with pytest.raises(CodecKeyError) as info:
        parse_keys(spec)
    text = str(info.value)
    assert message in text
    assert OLD_KEY not in text and NEW_KEY not in text and (not secret or secret not in text)


def test_keys_come_from_the_environment_and_blank_means_off() -> None:
    assert AesGcmCodec.from_env({}) is None
    assert AesGcmCodec.from_env({"TICKETFLOW_CODEC_KEYS": "  "}) is None
    codec = AesGcmCodec.from_env({"TICKETFLOW_CODEC_KEYS": f"k9:{OLD_KEY}"})
    assert codec is not None and codec.encrypting_key_id == "k9"
    assert OLD_KEY not in repr(codec)
    assert converter_for(None) is DATA_CONVERTER and converter_for("") is DATA_CONVERTER
    assert isinstance(converter_for(f"k9:{OLD_KEY}").payload_codec, AesGcmCodec)


# --- on the real Temporal dev server ----------------------------------------------------------------


def history_bytes(history: WorkflowHistory) -> bytes:
    """Everything the server stores for the workflow: every event's proto bytes and its JSON."""
    raw = b"".join(event.SerializeToString() for event in history.events)
    return raw + history.to_json().encode("utf-8")


@pytest_asyncio.fixture(loop_scope="session")
async def clients(dev_client: Client, dev_server: TemporalDevServer) -> AsyncIterator[tuple[Client, Client]]:
    """(encrypting client, client without the codec) on the dev server (dev_client waited for it)."""
    codec = AesGcmCodec.from_spec(f"e2e:{NEW_KEY}")
    encrypted = await Client.connect(dev_server.address, data_converter=data_converter(codec))
    plain = await Client.connect(dev_server.address, data_converter=DATA_CONVERTER)
    yield encrypted, plain


@pytest.mark.e2e
async def test_connect_picks_the_encrypting_converter(
    dev_server: TemporalDevServer, dev_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TICKETFLOW_CODEC_KEYS", raising=False)
    assert (await connect(dev_server.address)).data_converter is DATA_CONVERTER
    given = await connect(dev_server.address, codec_keys=f"given:{OLD_KEY}")
    assert isinstance(given.data_converter.payload_codec, AesGcmCodec)
    assert given.data_converter.payload_codec.encrypting_key_id == "given"
    assert given.data_converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    monkeypatch.setenv("TICKETFLOW_CODEC_KEYS", f"fromenv:{OLD_KEY}")
    from_env = await connect(dev_server.address)
    assert isinstance(from_env.data_converter.payload_codec, AesGcmCodec)
    assert from_env.data_converter.payload_codec.encrypting_key_id == "fromenv"
    with pytest.raises(CodecKeyError, match="entry 1"):
        await connect(dev_server.address, codec_keys="broken")


@pytest.mark.e2e
async def test_ticket_history_holds_no_customer_data(
    clients: tuple[Client, Client], make_worker: WorkerFactory, task_queue: str
) -> None:
    encrypted, plain = clients
    tickets = TicketClient(encrypted, task_queue)
    payload = ticket(
        subject="Zorblax invoice charged twice",
        body="Hello, I am Quentin Zorblax and you charged my card twice for invoice ZORBLAX-881.",
        customer={"name": "Quentin Zorblax", "email": "quentin.zorblax@example.com", "phone": "+44 20 7946 0958"},
    )
    wid = ""
    try:
        async with make_worker(encrypted, task_queue):
            opened = await tickets.open(payload)
            wid = opened.workflow_id
            state = await tickets.wait_for(opened.ticket_id, Status.OPEN)
            agent = state.assignee or "james"
            await tickets.reply(opened.ticket_id, agent=agent, body="Dear Mr Zorblax, the refund is on its way.")
            await tickets.customer_reply(opened.ticket_id, "Thanks, Zorblax family says hi.")
            state = await tickets.resolve(opened.ticket_id, agent=agent, resolution="refunded Zorblax")
            assert state.status == Status.RESOLVED and state.messages == 3  # the codec client reads the state

            history = await plain.get_workflow_handle(wid).fetch_history()
            stored = history_bytes(history)
            assert len(history.events) > 20
            for secret in (MARKER, "quentin", "+44 20 7946 0958", "charged twice", "refund is on its way"):
                assert secret.encode() not in stored.lower(), f"{secret!r} is in the raw history"
            assert ENCODING in stored and b"e2e" in stored  # encrypted payloads, labelled with the key id

            # what the server holds is the real ticket, readable only with the key
            started = history.events[0].workflow_execution_started_event_attributes
            (arg,) = await encrypted.data_converter.decode(started.input.payloads, [TicketWorkflowInput])
            assert arg.ticket["customer"]["email"] == "quentin.zorblax@example.com"
            with pytest.raises(Exception, match="binary/encrypted"):
                await plain.get_workflow_handle(wid).query(contract.STATE_QUERY, result_type=TicketState)
    finally:
        await terminate_leftovers(encrypted, [wid] if wid else [])


@pytest.mark.e2e
@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plain-control"])
async def test_failure_messages_with_customer_text_are_encrypted(
    clients: tuple[Client, Client], make_worker: WorkerFactory, task_queue: str, encrypt: bool
) -> None:
    """An invalid ticket fails in the intake activity with the field's path in the message. The plain run
    shows the check would catch a plaintext message; neither repeats the unknown field's own name."""
    encrypted, plain = clients
    client = encrypted if encrypt else plain
    bad_field = "quentin_zorblax_private_note"
    raw = ticket(customer={bad_field: "call me"})
    wid = workflow_id(ticket_id_for(None))
    async with make_worker(client, task_queue):
        handle = await client.start_workflow(
            contract.WORKFLOW_TYPE, TicketWorkflowInput(ticket=raw), id=wid, task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == contract.INVALID_TICKET
    assert "customer.(unknown field): Extra inputs are not permitted" in cause.message  # decoded for the key holder
    assert bad_field not in cause.message  # a name the client chose is never repeated

    history = await plain.get_workflow_handle(wid).fetch_history()
    failures = (
        [  # the intake's failure: a local activity's marker (patch open-as-local-step; an activity event before)
            e.marker_recorded_event_attributes.failure
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and e.marker_recorded_event_attributes.HasField("failure")
        ]
        + [
            e.activity_task_failed_event_attributes.failure
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        ]
        + [
            e.workflow_execution_failed_event_attributes.failure
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
        ]
    )
    assert len(failures) == 2
    stored = history_bytes(history)
    if encrypt:
        for failure in failures:
            assert failure.message == "Encoded failure"
            assert MARKER.encode() not in failure.SerializeToString().lower()
        assert MARKER.encode() not in stored.lower()
    else:
        assert all("customer.(unknown field)" in failure.message for failure in failures)
        assert b"customer.(unknown field)" in stored
    assert bad_field.encode() not in b"".join(f.SerializeToString() for f in failures)


# --- the codec server -------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(AesGcmCodec.from_spec(f"srv:{NEW_KEY},old:{OLD_KEY}"), [TOKEN], UI_ORIGIN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as client:
        yield client


def proto_json(values: list[Payload]) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(p) for p in values]}


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_codec_server_requires_a_valid_token(http: httpx.AsyncClient) -> None:
    body = proto_json(payloads(CUSTOMER_VALUE))
    assert (await http.get("/healthz")).json() == {"ok": True}
    for path in ("/decode", "/encode"):
        missing = await http.post(path, json=body)
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        basic = await http.post(path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        wrong = await http.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 403 and wrong.json() == {"error": "this token may not use the codec"}
        prefix = await http.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN[:-1]}"})
        assert prefix.status_code == 403
    assert (await http.get("/decode")).status_code == 405


async def test_codec_server_decode_of_encode_is_identity(http: httpx.AsyncClient) -> None:
    original = proto_json(payloads(CUSTOMER_VALUE, "x", None))
    encoded = await http.post("/encode", json=original, headers={**AUTH, "X-Namespace": "default"})
    assert encoded.status_code == 200, encoded.text
    sealed = encoded.json()["payloads"]
    assert len(sealed) == 3
    assert {base64.b64decode(p["metadata"]["encoding"]) for p in sealed} == {ENCODING}
    assert MARKER not in encoded.text.lower()
    decoded = await http.post("/decode", json=encoded.json(), headers=AUTH)
    assert decoded.status_code == 200 and decoded.json() == original
    assert decoded.headers["cache-control"] == "no-store"

    old = await AesGcmCodec.from_spec(f"old:{OLD_KEY}").encode(payloads(CUSTOMER_VALUE))
    assert (await http.post("/decode", json=proto_json(old), headers=AUTH)).json() == proto_json(
        payloads(CUSTOMER_VALUE)
    )
    unknown = await AesGcmCodec.from_spec(f"gone:{OLD_KEY}").encode(payloads("x"))
    refused = await http.post("/decode", json=proto_json(unknown), headers=AUTH)
    assert refused.status_code == 422 and "unknown key id 'gone'" in refused.json()["error"]
    assert (await http.post("/decode", json={"payloads": []}, headers=AUTH)).json() == {"payloads": []}
    bad = await http.post("/decode", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert bad.status_code == 400
    assert (await http.post("/decode", json={"payloads": "nope"}, headers=AUTH)).status_code == 400


async def test_codec_server_cors_only_for_the_ui_origin(http: httpx.AsyncClient) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"}
    ok = await http.options("/decode", headers={"Origin": UI_ORIGIN, **ask})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == UI_ORIGIN
    assert ok.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip() for h in ok.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-namespace", "authorization"} <= allowed
    assert "POST" in ok.headers["access-control-allow-methods"]

    for origin in ("http://evil.example", "http://localhost:8233", "null"):
        refused = await http.options("/decode", headers={"Origin": origin, **ask})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers

    body = proto_json(payloads("x"))
    from_ui = await http.post("/encode", json=body, headers={**AUTH, "Origin": UI_ORIGIN})
    assert from_ui.headers["access-control-allow-origin"] == UI_ORIGIN
    denied = await http.post("/decode", json=body, headers={"Origin": UI_ORIGIN})  # the UI can read the 401
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == UI_ORIGIN
    other = await http.post("/encode", json=body, headers={**AUTH, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_codec_server_refuses_huge_bodies(http: httpx.AsyncClient) -> None:
    huge = b'{"payloads": [{"data": "' + b"A" * MAX_REQUEST_BYTES + b'"}]}'
    declared = await http.post("/decode", content=huge, headers={**AUTH, "content-type": "application/json"})
    assert declared.status_code == 413 and "over" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(5):
            yield b" " * (1024 * 1024)

    streamed = await http.post("/encode", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    unauthorised = await http.post("/decode", content=huge)  # refused before the body is read
    assert unauthorised.status_code == 401


def test_codec_server_tokens_are_checked() -> None:
    codec = AesGcmCodec.from_spec(f"k:{OLD_KEY}")
    with pytest.raises(ValueError, match="at least one"):
        create_app(codec, [], UI_ORIGIN)
    assert parse_tokens(f" {TOKEN} ,{TOKEN}2") == [TOKEN, f"{TOKEN}2"]
    for spec, message in [
        (None, "TICKETFLOW_CODEC_TOKENS is not set"),
        ("", "not set"),
        (f"{TOKEN},", "entry 2 is empty"),
        ("short", "entry 1 must be at least 16 characters"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_tokens(spec)


async def test_codec_server_serves_over_http() -> None:
    port = free_port()
    server = await CodecServer(AesGcmCodec.from_spec(f"k:{OLD_KEY}"), [TOKEN], UI_ORIGIN, port=port).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            body = proto_json(payloads(CUSTOMER_VALUE))
            sealed = await client.post("/encode", json=body, headers=AUTH)
            assert sealed.status_code == 200
            assert (await client.post("/decode", json=sealed.json(), headers=AUTH)).json() == body
            assert (await client.post("/decode", json=sealed.json())).status_code == 401
    finally:
        await server.stop()
