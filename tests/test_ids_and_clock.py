"""Ticket ids and the pausable SLA clock. Pure unit tests; no servers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketflow.ids import WORKFLOW_PREFIX, parse_ticket_id, ticket_id_for, workflow_id
from ticketflow.models import SlaClock

TICKET_ID = re.compile(r"^[a-z2-7]{12}$")

# --- ticket ids ------------------------------------------------------------------------------------


def test_same_message_id_gives_the_same_ticket_id() -> None:
    mid = "<CAF=abc123@mail.example.com>"
    assert ticket_id_for(mid) == ticket_id_for(mid)
    assert TICKET_ID.match(ticket_id_for(mid))


def test_message_id_is_stripped_before_hashing() -> None:
    mid = "<CAF=abc123@mail.example.com>"
    assert ticket_id_for(f"  {mid}\r\n") == ticket_id_for(mid)
    assert ticket_id_for(f"\t{mid} ") == ticket_id_for(mid)


def test_different_message_ids_give_different_ticket_ids() -> None:
    ids = {ticket_id_for(f"<msg-{i}@mail.example.com>") for i in range(2000)}
    assert len(ids) == 2000
    # case matters in Message-IDs: these are two different messages
    assert ticket_id_for("<ABC@x>") != ticket_id_for("<abc@x>")


def test_known_value_is_stable_across_releases() -> None:
    """Changing the derivation would let a re-delivered email open a second ticket."""
    assert ticket_id_for("hello") == "ftze3os7wcrq"  # base32(sha256("hello"))[:12], lower-case


@pytest.mark.parametrize("missing", [None, ""])
def test_no_message_id_gives_a_random_id(missing: str | None) -> None:
    ids = {ticket_id_for(missing) for _ in range(500)}
    assert len(ids) == 500
    assert all(TICKET_ID.match(t) for t in ids)


@given(st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_any_message_id_gives_a_well_formed_id(mid: str) -> None:
    tid = ticket_id_for(mid)
    assert TICKET_ID.match(tid)
    assert parse_ticket_id(tid) == tid
    assert ticket_id_for(f" {mid} ") == tid


def test_workflow_id_round_trip() -> None:
    tid = ticket_id_for("<m-1@mail.example.com>")
    wid = workflow_id(tid)
    assert wid == f"{WORKFLOW_PREFIX}{tid}" == f"ticket-{tid}"
    assert parse_ticket_id(wid) == tid
    assert parse_ticket_id(tid) == tid
    assert workflow_id(wid) == wid  # idempotent: a workflow id is accepted as a ticket id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("  abcdefgh2345  ", "abcdefgh2345", id="surrounding-space"),
        pytest.param("ABCDEFGH2345", "abcdefgh2345", id="upper-case"),
        pytest.param("Ticket-ABCDEFGH2345", "abcdefgh2345", id="upper-case-prefix"),
        pytest.param("ticket-abcdefgh2345", "abcdefgh2345", id="workflow-id"),
    ],
)
def test_parse_ticket_id_accepts_forgiving_input(value: str, expected: str) -> None:
    assert parse_ticket_id(value) == expected
    assert workflow_id(value) == f"ticket-{expected}"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("ticket-", id="prefix-only"),
        pytest.param("abc", id="too-short"),
        pytest.param("a" * 33, id="too-long"),
        pytest.param("abcdefgh0189", id="digits-outside-base32"),
        pytest.param("abcdefgh-2345", id="hyphen"),
        pytest.param("abcd efgh2345", id="inner-space"),
        pytest.param("ticket-ticket-abcdefgh2345", id="double-prefix"),
        pytest.param("order-abcdefgh2345", id="other-prefix"),
        pytest.param("abcdéfgh2345", id="non-ascii"),
        pytest.param("abcdefgh2345;drop", id="injection"),
    ],
)
def test_parse_ticket_id_rejects_bad_ids(value: str) -> None:
    with pytest.raises(ValueError, match="not a ticket id"):
        parse_ticket_id(value)
    with pytest.raises(ValueError, match="not a ticket id"):
        workflow_id(value)


# --- the SLA clock ---------------------------------------------------------------------------------

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pause(clock: SlaClock, now: datetime) -> None:
    """What the workflow does when a ticket goes to pending."""
    if clock.running_since is not None:
        clock.elapsed_before = clock.elapsed(now)
        clock.running_since = None


def resume(clock: SlaClock, now: datetime) -> None:
    """What the workflow does when the customer replies."""
    if clock.running_since is None:
        clock.running_since = now


def new_clock(target_minutes: int = 60, fractions: list[float] | None = None) -> SlaClock:
    return SlaClock(
        metric="resolution",
        target_seconds=target_minutes * 60,
        started_at=T0,
        running_since=T0,
        reminder_fractions=[0.5, 0.75, 0.9] if fractions is None else fractions,
    )


def test_running_clock() -> None:
    clock = new_clock()
    assert clock.active and not clock.paused
    assert clock.elapsed(T0) == 0
    assert clock.elapsed(at(10)) == 600
    assert clock.due_at() == at(60)
    assert clock.due_at() == at(60)  # the due time does not move while running
    assert clock.due_at() == at(60)  # nor after the breach
    assert clock.elapsed(T0 - timedelta(minutes=1)) == 0  # never negative


def test_clock_across_a_pause_and_resume() -> None:
    clock = new_clock()
    pause(clock, at(20))
    assert clock.paused
    assert clock.elapsed_before == 20 * 60
    # frozen while paused; no due time
    assert clock.elapsed(at(20)) == clock.elapsed(at(500)) == 20 * 60
    assert clock.due_at() is None
    # pausing twice changes nothing
    pause(clock, at(30))
    assert clock.elapsed(at(30)) == 20 * 60

    resume(clock, at(120))
    assert not clock.paused
    assert clock.elapsed(at(120)) == 20 * 60
    assert clock.elapsed(at(130)) == 30 * 60
    # 40 minutes left at minute 120: due at minute 160, i.e. the paused 100 minutes are added
    assert clock.due_at() == at(160)
    assert clock.due_at() == at(160)
    # resuming twice does not reset the running span
    resume(clock, at(140))
    assert clock.elapsed(at(140)) == 40 * 60

    pause(clock, at(150))
    resume(clock, at(200))
    assert clock.elapsed(at(205)) == (20 + 30 + 5) * 60
    assert clock.due_at() == at(210)


def test_fulfilled_clock_has_no_due_time() -> None:
    clock = new_clock()
    clock.fulfilled_at = at(10)
    assert not clock.active and not clock.paused
    assert clock.due_at() is None
    pause(clock, at(15))
    assert not clock.paused  # a fulfilled clock is not "paused"


def test_pending_thresholds() -> None:
    clock = new_clock(fractions=[0.9, 0.5, 0.75])
    assert clock.pending_thresholds() == [0.5, 0.75, 0.9, 1.0]
    clock.reminders_sent.append(0.5)
    assert clock.pending_thresholds() == [0.75, 0.9, 1.0]
    # pausing does not change which thresholds are still to come
    pause(clock, at(40))
    assert clock.pending_thresholds() == [0.75, 0.9, 1.0]
    resume(clock, at(100))
    clock.reminders_sent.extend([0.75, 0.9])
    assert clock.pending_thresholds() == [1.0]
    clock.breached = True
    assert clock.pending_thresholds() == []


def test_pending_thresholds_ignore_fractions_at_or_above_one() -> None:
    clock = new_clock(fractions=[0.5, 1.0, 1.5])
    assert clock.pending_thresholds() == [0.5, 1.0]
    assert new_clock(fractions=[]).pending_thresholds() == [1.0]


def test_thresholds_reached_across_a_pause() -> None:
    """Which thresholds are reached depends on running time only, not on wall time."""
    clock = new_clock(fractions=[0.5, 0.75, 0.9])

    def reached(now: datetime) -> list[float]:
        return [f for f in clock.pending_thresholds() if clock.elapsed(now) >= f * clock.target_seconds]

    assert reached(at(29)) == []
    pause(clock, at(29))
    assert reached(at(1000)) == []  # a long pause crosses nothing
    resume(clock, at(1000))
    assert reached(at(1001)) == [0.5]
    assert reached(at(1016)) == [0.5, 0.75]
    assert reached(at(1031)) == [0.5, 0.75, 0.9, 1.0]


def test_clock_survives_a_json_round_trip_mid_pause() -> None:
    """The clock travels through continue-as-new as JSON."""
    clock = new_clock()
    pause(clock, at(25))
    again = SlaClock.model_validate_json(clock.model_dump_json())
    assert again == clock
    assert again.elapsed(at(99)) == 25 * 60
    resume(again, at(100))
    assert again.due_at() == at(135)
    assert again.due_at().tzinfo is not None  # type: ignore[union-attr]


# (seconds, running?) spans; integer seconds so the expected sum is exact
SPANS = st.lists(st.tuples(st.integers(min_value=0, max_value=10 * 86_400), st.booleans()), max_size=40)


@given(spans=SPANS, start_running=st.booleans())
def test_elapsed_is_the_sum_of_running_spans(spans: list[tuple[int, bool]], start_running: bool) -> None:
    clock = SlaClock(
        metric="first_response",
        target_seconds=3600,
        started_at=T0,
        running_since=T0 if start_running else None,
    )
    now = T0
    running = start_running
    expected = 0
    for seconds, run in spans:
        (resume if run else pause)(clock, now)
        running = run
        now += timedelta(seconds=seconds)
        if running:
            expected += seconds
    assert clock.elapsed(now) == pytest.approx(expected, abs=1e-6)
    assert clock.paused == (not running)
    if running:
        assert clock.due_at() == now + timedelta(seconds=3600 - expected)
    else:
        assert clock.due_at() is None
