"""Encryption of every payload Temporal stores: AES-256-GCM with a key id, so keys can be rotated.

Ticket payloads carry customer names, addresses and message bodies; without a codec they sit in
plaintext in every workflow history (and in the UI). The codec runs in the client and the worker,
outside the workflow sandbox, so the Temporal server only ever sees ciphertext.

Keys: TICKETFLOW_CODEC_KEYS = "id1:base64key,id2:base64key" (32-byte keys). The FIRST key encrypts;
every listed key decrypts. To rotate, put a new key first and keep the old ones until no running
ticket's history (nor any history you may still replay) was written with them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import secrets
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

from ticketflow.converter import DATA_CONVERTER

ENV_VAR = "TICKETFLOW_CODEC_KEYS"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # the GCM standard nonce; random per payload
TAG_BYTES = 16
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # goes into metadata and error messages: keep it plain
_AAD_PREFIX = b"ticketflow-codec-v1:"  # the key id is authenticated: a payload cannot be re-labelled


class CodecKeyError(ValueError):
    """TICKETFLOW_CODEC_KEYS is malformed (the message names the entry, never the key bytes)."""


class CodecDecodeError(Exception):
    """An encrypted payload cannot be decrypted: unknown key id, tampering, or a wrong key."""


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """Parse `id:base64key,...` in order; the first entry is the encrypting key."""
    entries = spec.split(",")
    if not spec.strip():
        raise CodecKeyError(f"{ENV_VAR} is empty: give at least one 'keyid:base64key'")
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for n, raw in enumerate(entries, start=1):
        entry = raw.strip()
        where = f"{ENV_VAR} entry {n}"
        if not entry:
            raise CodecKeyError(f"{where} is empty (a stray comma?)")
        if ":" not in entry:
            # the whole entry may be a key: do not echo it
            raise CodecKeyError(f"{where} has no key id: write it as 'keyid:base64key'")
        key_id, _, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not key_id:
            raise CodecKeyError(f"{where} has an empty key id")
        if not _KEY_ID.match(key_id):
            raise CodecKeyError(f"{where}: key id must be 1-64 characters from A-Z a-z 0-9 . _ -")
        where = f"{ENV_VAR} entry {n} (key id {key_id!r})"
        if key_id in seen:
            raise CodecKeyError(f"{where}: duplicate key id")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise CodecKeyError(f"{where}: the key is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise CodecKeyError(f"{where}: the key is {len(key)} bytes, AES-256-GCM needs {KEY_BYTES}")
        seen.add(key_id)
        keys.append((key_id, key))
    return keys


def generate_key() -> str:
    """A fresh random key, base64, for a new `keyid:key` entry."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _aad(key_id: str) -> bytes:
    return _AAD_PREFIX + key_id.encode("ascii")


class AesGcmCodec(PayloadCodec):
    """Encrypts each serialized Payload with the first key; decrypts with whichever key id it names."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise CodecKeyError("at least one key is needed")
        ids = [key_id for key_id, _ in keys]
        if len(set(ids)) != len(ids):
            raise CodecKeyError("duplicate key ids")
        for key_id, key in keys:
            if not _KEY_ID.match(key_id):
                raise CodecKeyError(f"key id {key_id!r} must be 1-64 characters from A-Z a-z 0-9 . _ -")
            if len(key) != KEY_BYTES:
                raise CodecKeyError(f"key {key_id!r} is {len(key)} bytes, AES-256-GCM needs {KEY_BYTES}")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}
        self.encrypting_key_id = ids[0]
        self.key_ids: tuple[str, ...] = tuple(ids)

    @classmethod
    def from_spec(cls, spec: str) -> AesGcmCodec:
        return cls(parse_keys(spec))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AesGcmCodec | None:
        """The codec of TICKETFLOW_CODEC_KEYS, or None when it is unset or blank."""
        spec = (os.environ if environ is None else environ).get(ENV_VAR, "")
        return cls.from_spec(spec) if spec.strip() else None

    def __repr__(self) -> str:  # never the keys
        return f"AesGcmCodec(encrypting={self.encrypting_key_id!r}, keys={list(self.key_ids)!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.encrypting_key_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), _aad(key_id))
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode("ascii")},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """Unencrypted payloads pass through: histories from before encryption must still replay."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if raw_id is None:
            raise CodecDecodeError(f"encrypted payload without {KEY_ID_METADATA!r} metadata")
        key_id = raw_id.decode("utf-8", errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecDecodeError(
                f"payload encrypted with unknown key id {key_id!r}; {ENV_VAR} has {list(self.key_ids)}"
                " (keep retired keys listed while histories still need them)"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise CodecDecodeError(f"encrypted payload (key id {key_id!r}) is truncated")
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(key_id))
        except InvalidTag:
            raise CodecDecodeError(
                f"payload with key id {key_id!r} failed authentication: tampered, or a different key under that id"
            ) from None
        return Payload.FromString(plain)


def data_converter(codec: PayloadCodec) -> DataConverter:
    """The pydantic converter with the codec, and failure messages/stack traces moved into an
    encoded (so encrypted) payload: exception text can quote customer data."""
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
