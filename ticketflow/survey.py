"""Signed survey links and form nonces (HMAC-SHA256), shared by the notify activity that writes the
links and the survey pages that check them.

A link names a ticket and one resolution of it and expires when that resolution's survey closes;
changing any part breaks the signature. Opening a link only shows a form: each form carries a
signed one-time nonce, and the ticket's workflow refuses a nonce it has seen, so a mail scanner
that fetches links records nothing and a replayed POST records nothing twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from ticketflow.ids import parse_ticket_id

_TOKEN_CONTEXT = b"ticketflow-survey-link\x00"
_NONCE_CONTEXT = b"ticketflow-survey-form\x00"
_MAC_BYTES = 16  # 128-bit tags: forging one is out of reach; links stay short


class InvalidToken(ValueError):
    """Tampered, truncated or signed with another key."""


class ExpiredToken(ValueError):
    """Genuine, but the survey it belongs to has closed."""


@dataclass(frozen=True)
class SurveyClaim:
    ticket_id: str
    resolution: int
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as err:
        raise InvalidToken("the link is damaged") from err


def _mac(secret: bytes, context: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, context + payload.encode("ascii"), hashlib.sha256).digest()[:_MAC_BYTES])


def sign(claim: SurveyClaim, secret: bytes) -> str:
    payload = f"{claim.ticket_id}.{claim.resolution}.{int(claim.expires_at.timestamp())}"
    return f"{payload}.{_mac(secret, _TOKEN_CONTEXT, payload)}"


def verify(token: str, secret: bytes, now: datetime | None = None) -> SurveyClaim:
    """The claim of a genuine, unexpired link; InvalidToken or ExpiredToken otherwise."""
    parts = token.split(".")
    if len(parts) != 4 or not token.isascii():
        raise InvalidToken("the link is damaged")
    ticket_id, resolution, expires, tag = parts
    if not hmac.compare_digest(tag, _mac(secret, _TOKEN_CONTEXT, ".".join(parts[:3]))):
        raise InvalidToken("the link is not valid")
    try:  # signed by us, so well formed; checked anyway in case a key was ever shared
        claim = SurveyClaim(parse_ticket_id(ticket_id), int(resolution), datetime.fromtimestamp(int(expires), UTC))
    except ValueError as err:
        raise InvalidToken("the link is damaged") from err
    if (now or datetime.now(UTC)) >= claim.expires_at:
        raise ExpiredToken(f"the survey closed on {claim.expires_at:%Y-%m-%d %H:%M} UTC")
    return claim


def new_nonce(token: str, secret: bytes) -> str:
    """A one-time value for one rendering of the form of `token`."""
    fresh = _b64(secrets.token_bytes(12))
    return f"{fresh}.{_mac(secret, _NONCE_CONTEXT, token + '.' + fresh)}"


def check_nonce(nonce: str, token: str, secret: bytes) -> str:
    """The nonce if this server issued it for this token; InvalidToken otherwise."""
    fresh, _, tag = nonce.partition(".")
    if not fresh or not tag or not nonce.isascii():
        raise InvalidToken("the form is damaged; open the link from the email again")
    if not hmac.compare_digest(tag, _mac(secret, _NONCE_CONTEXT, token + "." + fresh)):
        raise InvalidToken("the form is not valid; open the link from the email again")
    return nonce
