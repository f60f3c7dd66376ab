"""Business-hours arithmetic: examples a help-desk lead would check by hand, DST in both hemispheres,
year ends and holidays, and properties over generated calendars (hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ticketflow.calendar import (
    BusinessCalendar,
    add_business_seconds,
    business_seconds_between,
    is_open,
    next_opening,
    twenty_four_seven,
)

H = 3600
BERLIN, NEW_YORK, SYDNEY = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Sydney")


def cal(
    tz: str = "Europe/Berlin", days: str = "mon tue wed thu fri", hours: Any = (("09:00", "17:00"),), **extra: Any
) -> BusinessCalendar:
    week = {d: [{"start": s, "end": e} for s, e in hours] for d in days.split()}
    return BusinessCalendar.model_validate({"timezone": tz, "weekly": week, **extra})


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


def test_friday_afternoon_plus_two_hours_is_monday_morning() -> None:
    c = cal()
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 20, 16), 2 * H) == local(BERLIN, 2026, 11, 23, 10)
    assert business_seconds_between(c, local(BERLIN, 2026, 11, 20, 16), local(BERLIN, 2026, 11, 23, 10)) == 2 * H


def test_lunch_break_is_not_counted() -> None:
    c = cal(hours=(("09:00", "12:00"), ("13:00", "17:00")))
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 23, 11), 2 * H) == local(BERLIN, 2026, 11, 23, 14)
    assert not is_open(c, local(BERLIN, 2026, 11, 23, 12, 30))
    assert next_opening(c, local(BERLIN, 2026, 11, 23, 12, 30)) == local(BERLIN, 2026, 11, 23, 13)


def test_overnight_shift_runs_past_midnight() -> None:
    c = cal(days="mon", hours=(("22:00", "06:00"),))
    monday_night = local(BERLIN, 2026, 11, 23, 23)
    assert add_business_seconds(c, monday_night, 4 * H) == local(BERLIN, 2026, 11, 24, 3)
    assert is_open(c, local(BERLIN, 2026, 11, 24, 5, 59))
    assert not is_open(c, local(BERLIN, 2026, 11, 24, 6))  # the end is exclusive
    assert is_open(c, local(BERLIN, 2026, 11, 23, 22))  # the start is inclusive
    # 7 h left on Tuesday 06:00: next Monday 22:00 + 7 h
    assert add_business_seconds(c, monday_night, 14 * H) == local(BERLIN, 2026, 12, 1, 5)


def test_holidays_fixed_and_recurring_close_whole_days() -> None:
    c = cal(holidays=[date(2026, 11, 24)], recurring_holidays=["11-25"])
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 23, 16), 2 * H) == local(BERLIN, 2026, 11, 26, 10)
    assert add_business_seconds(c, local(BERLIN, 2027, 11, 24, 16), 2 * H) == local(BERLIN, 2027, 11, 26, 10)


def test_night_shift_that_starts_before_a_holiday_runs_to_its_end() -> None:
    c = cal(days="mon tue", hours=(("22:00", "06:00"),), holidays=[date(2026, 11, 24)])
    assert is_open(c, local(BERLIN, 2026, 11, 24, 3))  # Monday's shift, into the holiday
    assert not is_open(c, local(BERLIN, 2026, 11, 24, 23))  # Tuesday's shift starts on the holiday


def test_year_end_with_recurring_new_year() -> None:
    c = cal(days="mon tue wed thu fri sat sun", recurring_holidays=["01-01"])
    assert add_business_seconds(c, local(BERLIN, 2026, 12, 31, 16), 4 * H) == local(BERLIN, 2027, 1, 2, 12)


def test_next_opening_on_a_closed_sunday() -> None:
    assert next_opening(cal(), local(BERLIN, 2026, 11, 22, 12)) == local(BERLIN, 2026, 11, 23, 9)
    assert next_opening(cal(), local(BERLIN, 2026, 11, 23, 10)) == local(BERLIN, 2026, 11, 23, 10)


def test_twenty_four_seven_is_wall_clock_time_even_across_dst() -> None:
    c = twenty_four_seven("Europe/Berlin")
    start = local(BERLIN, 2026, 3, 28, 12)  # DST starts on 29 March
    assert add_business_seconds(c, start, 24 * H) == start.astimezone(UTC) + timedelta(hours=24)
    assert add_business_seconds(c, start, 24 * H).astimezone(BERLIN).hour == 13


@pytest.mark.parametrize(
    ("tz", "zone", "spring", "autumn"),
    [
        ("Europe/Berlin", BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
        ("America/New_York", NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
        ("Australia/Sydney", SYDNEY, date(2026, 10, 4), date(2026, 4, 5)),
    ],
)
def test_dst_nights_are_short_and_long(tz: str, zone: ZoneInfo, spring: date, autumn: date) -> None:
    c = cal(tz=tz, days="mon tue wed thu fri sat sun", hours=(("00:00", "06:00"),))
    day = timedelta(days=1)
    for d, real_hours in ((spring, 5), (autumn, 7), (spring + day, 6)):
        start = datetime.combine(d, time(0), tzinfo=zone)
        end = datetime.combine(d + day, time(0), tzinfo=zone)
        assert business_seconds_between(c, start, end) == real_hours * H, (tz, d)


def test_a_calendar_that_never_opens_is_rejected() -> None:
    with pytest.raises(ValidationError, match="needs opening hours"):
        BusinessCalendar.model_validate({"timezone": "UTC", "weekly": {}})
    with pytest.raises(ValidationError, match="unknown time zone"):
        cal(tz="Mars/Olympus")
    with pytest.raises(ValidationError, match="overlap"):
        cal(hours=(("09:00", "12:00"), ("11:00", "13:00")))
    with pytest.raises(ValidationError, match="night shift"):
        cal(days="mon tue", hours=(("22:00", "06:00"), ("05:00", "08:00")))
    with pytest.raises(ValidationError, match="MM-DD"):
        cal(recurring_holidays=["25-12"])


# --- properties -----------------------------------------------------------------------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"]


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    week: dict[str, list[dict[str, str]]] = {}
    for day in draw(st.sets(st.sampled_from("mon tue wed thu fri sat sun".split()), min_size=1)):
        start = draw(st.integers(0, 22))
        length = draw(st.integers(1, 12))
        end = (start + length) % 24
        week[day] = [{"start": f"{start:02d}:30", "end": f"{end:02d}:{'30' if end != start else '00'}"}]
    ok = BusinessCalendar.model_validate
    try:
        return ok(
            {
                "timezone": draw(st.sampled_from(ZONES)),
                "weekly": week,
                "holidays": draw(st.lists(st.dates(date(2024, 1, 1), date(2027, 12, 31)), max_size=20)),
                "recurring_holidays": draw(st.lists(st.sampled_from(["01-01", "12-25", "05-01", "03-29"]), max_size=3)),
            }
        )
    except ValidationError:  # a generated night shift overlapping the next day: draw again
        return ok({"timezone": "UTC", "weekly": {"mon": [{"start": "09:00", "end": "17:00"}]}})


instants = st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))
spans = st.floats(0, 400 * H, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, spans)
def test_adding_then_measuring_round_trips(c: BusinessCalendar, start: datetime, seconds: float) -> None:
    seconds = round(seconds, 6)
    end = add_business_seconds(c, start, seconds)
    assert abs(business_seconds_between(c, start, end) - seconds) < 1e-5


@settings(max_examples=150, deadline=None)
@given(calendars(), instants, st.floats(1e-3, 400 * H, allow_nan=False))
def test_never_lands_in_closed_time(c: BusinessCalendar, start: datetime, seconds: float) -> None:
    end = add_business_seconds(c, start, seconds)
    assert is_open(c, end - timedelta(microseconds=1))


@settings(max_examples=100, deadline=None)
@given(calendars(), instants, spans, spans)
def test_monotonic_and_additive(c: BusinessCalendar, start: datetime, a: float, b: float) -> None:
    a, b = round(a, 3), round(b, 3)
    first, both = add_business_seconds(c, start, a), add_business_seconds(c, start, a + b)
    assert first <= both
    assert abs((add_business_seconds(c, first, b) - both).total_seconds()) < 1e-5


@settings(max_examples=100, deadline=None)
@given(calendars(), instants, spans, spans)
def test_measuring_is_additive(c: BusinessCalendar, a: datetime, x: float, y: float) -> None:
    b, d = a + timedelta(seconds=x), a + timedelta(seconds=x + y)
    total = business_seconds_between(c, a, d)
    assert abs(total - business_seconds_between(c, a, b) - business_seconds_between(c, b, d)) < 1e-5
    assert 0 <= total <= x + y + 1e-6
