"""Automation rules in the spirit of LiveAgent's: condition groups (all/any) on channel, text, keywords or
regex, customer type/plan/region, language and time of day, with actions; first-time customer priority;
and, on the time-skipping server, spam closed at once and an assignment honoured by routing."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import Client

from starter.client import TicketClient
from starter.smtp_sink import SmtpSink
from tests.conftest import WorkerFactory
from tests.factories import ticket
from ticketflow.config import AutomationRule, Config, PriorityRule
from ticketflow.models import TicketIn
from ticketflow.rules import categorise

NIGHT = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)  # 00:30 in Berlin
DAY = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)


def tin(subject: str, body: str, **customer: Any) -> TicketIn:
    return TicketIn.model_validate(
        {
            "subject": subject,
            "body": body,
            "channel": customer.pop("channel", "email"),
            "customer": {"name": "Kim", "email": "kim@example.com", **customer},
        }
    )


def with_rules(config: Config, *rules: dict[str, Any]) -> Config:
    return config.model_copy(update={"automation": [AutomationRule.model_validate(r) for r in rules]})


@pytest.mark.parametrize(
    ("rule", "ticket_kwargs", "at", "fires"),
    [
        ({"field": "channel", "op": "in", "value": ["chat", "phone"]}, {"channel": "chat"}, DAY, True),
        ({"field": "channel", "op": "not_in", "value": ["chat"]}, {"channel": "chat"}, DAY, False),
        ({"field": "plan", "op": "in", "value": ["Enterprise"]}, {"plan": "enterprise"}, DAY, True),
        ({"field": "region", "op": "in", "value": ["APAC"]}, {"region": "EU"}, DAY, False),
        ({"field": "customer_type", "op": "in", "value": ["reseller"]}, {"type": "reseller"}, DAY, True),
        ({"field": "language", "op": "in", "value": ["de"]}, {"language": "de"}, DAY, True),
        ({"field": "text", "op": "contains", "value": ["order 12"]}, {}, DAY, False),  # word boundary: "order 1234"
        ({"field": "body", "op": "regex", "value": r"order \d{4}"}, {}, DAY, True),
        ({"field": "subject", "op": "regex", "value": r"^re:"}, {}, DAY, False),
        ({"field": "hour", "op": "between", "value": [22, 6]}, {}, NIGHT, True),  # wraps midnight
        ({"field": "hour", "op": "between", "value": [22, 6]}, {}, DAY, False),
        ({"field": "hour", "op": "between", "value": [9, 17]}, {}, DAY, True),  # 12:00 in Berlin
    ],
)
def test_conditions(
    config: Config, rule: dict[str, Any], ticket_kwargs: dict[str, Any], at: datetime, fires: bool
) -> None:
    cfg = with_rules(config, {"name": "r", "conditions": [rule], "actions": {"tags": ["hit"]}})
    c = categorise(tin("Where is my parcel", "Hello, order 1234 has not arrived.", **ticket_kwargs), cfg, at=at)
    assert ("hit" in c.tags) is fires


def test_all_and_any_groups_and_actions_with_reasons(config: Config) -> None:
    both = [{"field": "channel", "op": "in", "value": ["chat"]}, {"field": "plan", "op": "in", "value": ["free"]}]
    cfg = with_rules(
        config,
        {
            "name": "free-chat",
            "match": "all",
            "conditions": both,
            "actions": {"department": "sales", "priority": "low", "category": "upsell", "tags": ["lead"]},
        },
        {"name": "any-chat-or-free", "match": "any", "conditions": both, "actions": {"assign": "ethan", "tags": ["x"]}},
    )
    c = categorise(tin("Question", "Hello there", channel="chat", plan="free"), cfg, at=DAY)
    assert (c.department, c.priority, c.category, c.assign, c.tags) == (
        "sales",
        "low",
        "upsell",
        "ethan",
        ["lead", "x"],
    )
    assert "automation 'free-chat' (all of 2): department=sales" in c.reasons[-2]
    only_chat = categorise(tin("Question", "Hello there", channel="chat", plan="team"), cfg, at=DAY)
    assert only_chat.department != "sales" and only_chat.assign == "ethan"  # 'any' fired, 'all' did not


def test_default_rules_catch_spam_and_night_outages_of_enterprise_customers(config: Config) -> None:
    spam = categorise(tin("Congratulations", "You have won! Claim your prize now."), config, at=DAY)
    assert spam.spam and "spam" in spam.tags
    night = categorise(tin("Outage", "Our API is down.", plan="enterprise"), config, at=NIGHT)
    assert night.priority == "urgent" and "enterprise-night-outage" in night.tags
    day = categorise(tin("Outage", "Our API is down.", plan="enterprise"), config, at=DAY)
    assert day.priority == "high"  # the keyword rule's priority; the night rule did not fire


def test_first_time_customers_can_be_lifted(config: Config) -> None:
    rule = PriorityRule(name="first-ticket", raise_one=True, first_time=True)
    cfg = config.model_copy(update={"priority_rules": [*config.priority_rules, rule]})
    text = ("Question", "Where can I change my address?")
    assert categorise(tin(*text), cfg, first_time=True).priority == "high"
    assert categorise(tin(*text), cfg, first_time=False).priority == "normal"


def test_bad_rules_are_refused_with_the_reason() -> None:
    raw = tomllib.loads(resources.files("ticketflow").joinpath("default_config.toml").read_text("utf-8"))
    raw["automation"][0]["conditions"][0] = {"field": "text", "op": "regex", "value": "(unclosed"}
    with pytest.raises(ValidationError, match="bad regex"):
        Config.model_validate(raw)
    raw["automation"][0]["conditions"][0] = {"field": "plan", "op": "between", "value": [1, 2]}
    with pytest.raises(ValidationError, match="'between' is for hour"):
        Config.model_validate(raw)
    raw["automation"][0]["conditions"][0] = {"field": "text", "op": "contains", "value": ["x"]}
    raw["automation"][0]["actions"] = {"department": "marketing"}
    with pytest.raises(ValidationError, match="unknown department 'marketing'"):
        Config.model_validate(raw)


async def test_spam_closes_at_once_and_assignment_is_honoured(
    ts_client: Client, make_worker: WorkerFactory, task_queue: str, smtp: SmtpSink, config: Config
) -> None:
    cfg = with_rules(
        config,
        {
            "name": "gold-to-maria",
            "conditions": [{"field": "plan", "op": "in", "value": ["gold"]}],
            "actions": {"department": "billing", "assign": "carmen"},
        },
        *[r.model_dump() for r in config.automation],
    )
    tickets = TicketClient(ts_client, task_queue)
    async with make_worker(ts_client, task_queue, cfg):
        spam = await tickets.open(ticket(subject="Congratulations", body="You have won a crypto giveaway!"))
        final = await tickets.final_state(spam.ticket_id)
        assert final.status == "closed" and final.assignee is None
        gold = await tickets.open(ticket(subject="Question", body="Hello, a question.", customer={"plan": "gold"}))
        state = await tickets.wait_for(gold.ticket_id, "open")
        assert state.department == "billing" and state.assignee == "carmen"
    assert not [m for m in smtp.messages if f"#{spam.ticket_id}" in m.subject]  # a spammer hears nothing
