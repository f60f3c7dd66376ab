"""Intake validation: every malformed ticket is rejected with a precise, field-level error.

Pure unit tests of the pydantic models; no servers.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from activities.tickets import format_validation_error
from ticketflow.models import MAX_ATTACHMENTS, MAX_BODY, MAX_SUBJECT, Channel, CustomerType, RateRequest, TicketIn

VALID: dict[str, Any] = {
    "subject": "Cannot log in to the dashboard",
    "body": "Since this morning I cannot log in. The page shows error 502.",
    "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "type": "regular", "region": "EU"},
    "channel": "email",
    "external_message_id": "<m-1@mail.example.com>",
}

ATTACHMENT: dict[str, Any] = {"filename": "screenshot.png", "content_type": "image/png", "size_bytes": 1024}


def payload(**overrides: Any) -> dict[str, Any]:
    """A valid payload with top-level overrides; `customer` overrides are merged into the customer;
    a value of `...` removes the key."""
    data = copy.deepcopy(VALID)
    for key, value in overrides.items():
        if key == "customer" and isinstance(value, dict):
            for ckey, cvalue in value.items():
                if cvalue is ...:
                    data["customer"].pop(ckey, None)
                else:
                    data["customer"][ckey] = cvalue
        elif value is ...:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def attachment(**overrides: Any) -> dict[str, Any]:
    return {**ATTACHMENT, **overrides}


# (payload, expected error location, fragment of the error message)
MALFORMED: list[Any] = [
    pytest.param(payload(subject=...), ("subject",), "Field required", id="missing-subject"),
    pytest.param(payload(subject=""), ("subject",), "at least 1 character", id="empty-subject"),
    pytest.param(payload(subject="   \t "), ("subject",), "at least 1 character", id="blank-subject"),
    pytest.param(
        payload(subject="Hello\nBcc: victim@example.com"),
        ("subject",),
        "subject must be a single line",
        id="subject-newline-header-injection",
    ),
    pytest.param(payload(subject="Hello\rWorld"), ("subject",), "subject must be a single line", id="subject-cr"),
    pytest.param(
        payload(subject="x" * (MAX_SUBJECT + 1)), ("subject",), "at most 500 characters", id="subject-too-long"
    ),
    pytest.param(payload(subject=42), ("subject",), "valid string", id="subject-not-a-string"),
    pytest.param(payload(body=""), ("body",), "at least 1 character", id="empty-body"),
    pytest.param(payload(body=None), ("body",), "valid string", id="null-body"),
    pytest.param(payload(body="x" * (MAX_BODY + 1)), ("body",), "at most 200000 characters", id="body-too-long"),
    pytest.param(payload(customer=...), ("customer",), "Field required", id="missing-customer"),
    pytest.param(payload(customer="ada@example.com"), ("customer",), "valid dictionary", id="customer-not-an-object"),
    pytest.param(payload(customer={"name": ""}), ("customer", "name"), "at least 1 character", id="empty-name"),
    pytest.param(
        payload(customer={"email": ...}), ("customer", "email"), "Field required", id="missing-customer-email"
    ),
    pytest.param(
        payload(customer={"email": "not-an-address"}),
        ("customer", "email"),
        "value is not a valid email address",
        id="bad-email",
    ),
    pytest.param(
        payload(customer={"email": "ada@"}), ("customer", "email"), "not a valid email address", id="email-no-domain"
    ),
    pytest.param(
        payload(customer={"phone": "call me maybe"}), ("customer", "phone"), "should match pattern", id="bad-phone"
    ),
    pytest.param(payload(customer={"phone": "123"}), ("customer", "phone"), "should match pattern", id="short-phone"),
    pytest.param(
        payload(customer={"type": "gold"}),
        ("customer", "type"),
        "Input should be 'regular', 'vip', 'partner' or 'reseller'",
        id="unknown-customer-type",
    ),
    pytest.param(
        payload(customer={"region": "MARS"}),
        ("customer", "region"),
        "Input should be 'NA', 'EU', 'APAC', 'LATAM' or 'MEA'",
        id="unknown-region",
    ),
    pytest.param(payload(customer={"language": "EN"}), ("customer", "language"), "^[a-z]{2}$", id="language-uppercase"),
    pytest.param(
        payload(customer={"language": "eng"}), ("customer", "language"), "^[a-z]{2}$", id="language-three-letters"
    ),
    pytest.param(
        payload(customer={"language": "en-GB"}), ("customer", "language"), "^[a-z]{2}$", id="language-with-region"
    ),
    pytest.param(payload(customer={"plan": "p" * 65}), ("customer", "plan"), "at most 64 characters", id="long-plan"),
    pytest.param(
        payload(customer={"vip": True}), ("customer", "vip"), "Extra inputs are not permitted", id="customer-extra"
    ),
    pytest.param(payload(channel=...), ("channel",), "Field required", id="missing-channel"),
    pytest.param(
        payload(channel="fax"),
        ("channel",),
        "Input should be 'email', 'web_form', 'chat', 'phone', 'social' or 'api'",
        id="unknown-channel",
    ),
    pytest.param(payload(priority="urgent"), ("priority",), "Extra inputs are not permitted", id="unknown-extra-field"),
    pytest.param(
        payload(external_message_id="  "), ("external_message_id",), "at least 1 character", id="blank-message-id"
    ),
    pytest.param(payload(attachments="file.pdf"), ("attachments",), "valid list", id="attachments-not-a-list"),
    pytest.param(
        payload(attachments=[attachment(size_bytes=-1)]),
        ("attachments", 0, "size_bytes"),
        "greater than or equal to 0",
        id="attachment-negative-size",
    ),
    pytest.param(
        payload(attachments=[attachment(), attachment(size_bytes=101 * 1024 * 1024)]),
        ("attachments", 1, "size_bytes"),
        "less than or equal to 104857600",
        id="attachment-too-big",
    ),
    pytest.param(
        payload(attachments=[attachment(content_type="png")]),
        ("attachments", 0, "content_type"),
        "should match pattern",
        id="attachment-bad-content-type",
    ),
    pytest.param(
        payload(attachments=[attachment(content_type="text/html; charset=utf-8")]),
        ("attachments", 0, "content_type"),
        "should match pattern",
        id="attachment-content-type-with-parameters",
    ),
    pytest.param(
        payload(attachments=[attachment(filename="")]),
        ("attachments", 0, "filename"),
        "at least 1 character",
        id="attachment-empty-filename",
    ),
    pytest.param(
        payload(attachments=[{"filename": "a.txt", "content_type": "text/plain"}]),
        ("attachments", 0, "size_bytes"),
        "Field required",
        id="attachment-missing-size",
    ),
    pytest.param(
        payload(attachments=[attachment()] * (MAX_ATTACHMENTS + 1)),
        ("attachments",),
        "at most 50 items",
        id="too-many-attachments",
    ),
    pytest.param(payload(tags=["billing", ""]), ("tags", 1), "at least 1 character", id="empty-tag"),
    pytest.param(payload(tags=["   "]), ("tags", 0), "at least 1 character", id="blank-tag"),
    pytest.param(payload(tags=["t" * 65]), ("tags", 0), "at most 64 characters", id="tag-too-long"),
    pytest.param(payload(tags=["t"] * 51), ("tags",), "at most 50 items", id="too-many-tags"),
]


@pytest.mark.parametrize(("data", "loc", "fragment"), MALFORMED)
def test_malformed_ticket_is_rejected_with_a_field_level_error(
    data: dict[str, Any], loc: tuple[str | int, ...], fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        TicketIn.model_validate(data)
    errors = caught.value.errors()
    # exactly one problem in each payload, reported exactly where it is
    assert [e["loc"] for e in errors] == [loc], errors
    assert fragment in errors[0]["msg"], errors[0]["msg"]


def test_every_problem_is_reported_at_once() -> None:
    data = payload(subject="", customer={"email": "nope", "type": "gold"}, channel="fax")
    with pytest.raises(ValidationError) as caught:
        TicketIn.model_validate(data)
    assert {e["loc"] for e in caught.value.errors()} == {
        ("subject",),
        ("customer", "email"),
        ("customer", "type"),
        ("channel",),
    }


def test_format_validation_error_is_one_loc_msg_pair_per_field() -> None:
    with pytest.raises(ValidationError) as caught:
        TicketIn.model_validate(payload(customer={"email": "not-an-address"}, channel="fax"))
    assert format_validation_error(caught.value) == (
        "customer.email: value is not a valid email address: An email address must have an @-sign.; "
        "channel: Input should be 'email', 'web_form', 'chat', 'phone', 'social' or 'api'"
    )


def test_format_validation_error_names_list_indexes() -> None:
    with pytest.raises(ValidationError) as caught:
        TicketIn.model_validate(payload(attachments=[attachment(), attachment(size_bytes=-5)]))
    assert format_validation_error(caught.value) == (
        "attachments.1.size_bytes: Input should be greater than or equal to 0"
    )


def test_format_validation_error_for_a_non_object_ticket() -> None:
    with pytest.raises(ValidationError) as caught:
        TicketIn.model_validate("not a ticket")
    assert format_validation_error(caught.value).startswith("(ticket): Input should be a valid dictionary")


# --- valid edge cases ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(payload(), id="baseline"),
        pytest.param(
            payload(external_message_id=..., customer={"type": ..., "region": ...}), id="optional-fields-absent"
        ),
        pytest.param(payload(customer={"name": "Zoë Ødegård-Łukasiewicz"}), id="unicode-name"),
        pytest.param(
            payload(
                subject="Η εφαρμογή δεν λειτουργεί",
                body="Γεια σας, η εφαρμογή δεν λειτουργεί από το πρωί.",
                customer={"name": "Ελένη Παπαδοπούλου", "language": "el"},
            ),
            id="greek",
        ),
        pytest.param(
            payload(
                subject="Сервис не работает",
                body="Здравствуйте, сервис не работает с утра.",
                customer={"name": "Дмитрий Иванов", "language": "ru", "region": "MEA"},
            ),
            id="russian",
        ),
        pytest.param(payload(subject="x" * MAX_SUBJECT), id="subject-at-limit"),
        pytest.param(payload(body="y" * MAX_BODY), id="body-at-limit"),
        pytest.param(payload(subject="  Padded subject\n"), id="surrounding-whitespace-is-stripped"),
        pytest.param(payload(customer={"phone": "+49 (30) 123-456.78"}), id="formatted-phone"),
        pytest.param(
            payload(attachments=[attachment(size_bytes=0, content_type="application/vnd.ms-excel")] * MAX_ATTACHMENTS),
            id="fifty-empty-attachments",
        ),
        pytest.param(payload(tags=[" vip ", "β-test"]), id="tags"),
        pytest.param(payload(channel="web_form", customer={"type": "partner", "region": "LATAM"}), id="web-form"),
    ],
)
def test_valid_ticket_is_accepted(data: dict[str, Any]) -> None:
    t = TicketIn.model_validate(data)
    assert t.customer.email == data["customer"]["email"]
    assert "\n" not in t.subject and t.subject == t.subject.strip()


def test_defaults_and_normalisation() -> None:
    t = TicketIn.model_validate(
        payload(
            subject="  Padded subject  ",
            external_message_id=...,
            customer={"type": ..., "region": ..., "name": "  Ada  "},
            tags=["  needs-triage "],
        )
    )
    assert t.subject == "Padded subject"
    assert t.customer.name == "Ada"
    assert t.customer.type is CustomerType.REGULAR
    assert t.customer.region is None and t.customer.language is None and t.customer.phone is None
    assert t.external_message_id is None
    assert t.attachments == [] and t.tags == ["needs-triage"]
    assert t.channel is Channel.EMAIL


def test_greek_and_russian_text_survive_a_json_round_trip() -> None:
    t = TicketIn.model_validate(
        payload(subject="Πρόβλημα — проблема", customer={"name": "Ελένη Смирнова", "language": "el"})
    )
    again = TicketIn.model_validate_json(t.model_dump_json())
    assert again == t
    assert again.subject == "Πρόβλημα — проблема"


# --- CSAT ratings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rating", "stored", "score"),
    [
        pytest.param(1, 1, 1, id="one"),
        pytest.param(3, 3, 3, id="three"),
        pytest.param(5, 5, 5, id="five"),
        pytest.param("good", "good", 5, id="good"),
        pytest.param("bad", "bad", 1, id="bad"),
        pytest.param(" Good ", "good", 5, id="good-mixed-case"),
        pytest.param("BAD", "bad", 1, id="bad-upper"),
    ],
)
def test_rating_accepted(rating: int | str, stored: int | str, score: int) -> None:
    r = RateRequest.model_validate({"rating": rating, "comment": "thanks"})
    assert r.rating == stored
    assert r.score == score


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        pytest.param({"rating": 0}, "rating must be between 1 and 5", id="zero"),
        pytest.param({"rating": 6}, "rating must be between 1 and 5", id="six"),
        pytest.param({"rating": -1}, "rating must be between 1 and 5", id="negative"),
        pytest.param({"rating": "meh"}, "rating must be 1-5 or 'good'/'bad'", id="meh"),
        pytest.param({"rating": ""}, "rating must be 1-5 or 'good'/'bad'", id="empty-string"),
        pytest.param({}, "Field required", id="missing"),
    ],
)
def test_rating_rejected(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RateRequest.model_validate(data)
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [("rating",)]
    assert fragment in errors[0]["msg"]


def test_rating_rejects_extra_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        RateRequest.model_validate({"rating": 4, "stars": 4})
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(("stars",), "extra_forbidden")]
