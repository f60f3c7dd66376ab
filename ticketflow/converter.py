"""The data converter every ticketflow process uses: pydantic models as JSON (temporalio.contrib.pydantic),
with decoding errors that never quote the payload.

pydantic's own error text quotes the input (`input_value={'text': 'my new address is ...'}`), and the SDK
logs a payload that does not decode (an update sent as plain JSON by another SDK with a misnamed field,
say) with that text and returns it as the failure. Customer text stays out of logs, so a payload that does
not validate raises a ValueError naming each field and its problem, and never a value or an unknown
field's name (a client chose it; it can be anything).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

UNKNOWN_FIELD = "(unknown field)"


def safe_errors(err: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors without input values, and with an unknown field's name replaced."""
    out = []
    for e in err.errors(include_url=False, include_context=False, include_input=False):
        loc = [str(p) for p in e["loc"]]
        if e["type"] == "extra_forbidden" and loc:
            loc[-1] = UNKNOWN_FIELD
        out.append({"type": e["type"], "loc": loc, "msg": e["msg"]})
    return out


def describe_errors(err: ValidationError, whole: str = "(value)") -> str:
    """`body: Field required; (unknown field): Extra inputs are not permitted`: fields and problems only;
    `whole` names the value itself when it is not an object at all."""
    parts = [f"{'.'.join(e['loc']) or whole}: {e['msg']}" for e in safe_errors(err)]
    return "; ".join(dict.fromkeys(parts))


class _InputHidingJSONConverter(PydanticJSONPlainPayloadConverter):
    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except ValidationError as err:  # a ValueError too: callers that catch ValueError still do
            raise ValueError(f"invalid {err.title}: {describe_errors(err)}") from None


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default converters, with pydantic JSON in place of plain JSON."""

    def __init__(self) -> None:
        json_converter = _InputHidingJSONConverter()
        super().__init__(
            *(
                json_converter if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)
