"""Business-hours arithmetic: examples a help-desk lead would check by hand, DST in both hemispheres,
year ends and holidays, and properties over generated calendars (hypothesis), one of them against a
minute-by-minute reading of the wall clock."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ticketflow.calendar import (
    BusinessCalendar,
    Interval,
    Weekday,
    add_business_seconds,
    business_seconds_between,
    is_open,
    next_opening,
    open_intervals,
    twenty_four_seven,
)

H = 3600
US = timedelta(microseconds=1)
BERLIN, NEW_YORK, SYDNEY = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Sydney")
WEEK = "mon tue wed thu fri sat sun"


def cal(
    tz: str = "Europe/Berlin", days: str = "mon tue wed thu fri", hours: Any = (("09:00", "17:00"),), **extra: Any
) -> BusinessCalendar:
    week = {d: [{"start": s, "end": e} for s, e in hours] for d in days.split()}
    return BusinessCalendar.model_validate({"timezone": tz, "weekly": week, **extra})


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold)


# --- examples -------------------------------------------------------------------------------------


def test_friday_afternoon_plus_two_hours_is_monday_morning() -> None:
    c = cal()
    friday = local(BERLIN, 2026, 11, 20, 16)
    due = add_business_seconds(c, friday, 2 * H)
    assert due == local(BERLIN, 2026, 11, 23, 10)
    assert due.tzinfo is UTC
    assert business_seconds_between(c, friday, due) == 2 * H
    assert business_seconds_between(c, due, friday) == 0


def test_lunch_break_is_not_counted() -> None:
    c = cal(hours=(("09:00", "12:00"), ("13:00", "17:00")))
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 23, 11), 2 * H) == local(BERLIN, 2026, 11, 23, 14)
    # a deadline that uses up the morning is noon, not the reopening after lunch
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 23, 11), H) == local(BERLIN, 2026, 11, 23, 12)
    assert not is_open(c, local(BERLIN, 2026, 11, 23, 12, 30))
    assert next_opening(c, local(BERLIN, 2026, 11, 23, 12, 30)) == local(BERLIN, 2026, 11, 23, 13)
    day = list(open_intervals(c, local(BERLIN, 2026, 11, 23), local(BERLIN, 2026, 11, 24)))
    assert day == [
        (local(BERLIN, 2026, 11, 23, 9), local(BERLIN, 2026, 11, 23, 12)),
        (local(BERLIN, 2026, 11, 23, 13), local(BERLIN, 2026, 11, 23, 17)),
    ]


def test_overnight_shift_runs_past_midnight() -> None:
    c = cal(days="mon", hours=(("22:00", "06:00"),))
    monday_night = local(BERLIN, 2026, 11, 23, 23)
    assert add_business_seconds(c, monday_night, 4 * H) == local(BERLIN, 2026, 11, 24, 3)
    assert is_open(c, local(BERLIN, 2026, 11, 24, 5, 59))
    assert not is_open(c, local(BERLIN, 2026, 11, 24, 6))  # the end is exclusive
    assert is_open(c, local(BERLIN, 2026, 11, 23, 22))  # the start is inclusive
    assert not is_open(c, local(BERLIN, 2026, 11, 23, 22) - US)
    # 7 h left on Tuesday 06:00: next Monday 22:00 + 7 h
    assert add_business_seconds(c, monday_night, 14 * H) == local(BERLIN, 2026, 12, 1, 5)


def test_sunday_night_shift_spills_into_monday() -> None:
    c = cal(days="sun", hours=(("20:00", "04:00"),))
    assert is_open(c, local(BERLIN, 2026, 11, 23, 3))  # Monday 03:00 belongs to Sunday's shift
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 23, 3), 2 * H) == local(BERLIN, 2026, 11, 29, 21)


def test_whole_days_and_24_00() -> None:
    for end in ("24:00", "00:00"):
        c = cal(days="mon tue", hours=(("00:00", end),))
        monday = local(BERLIN, 2026, 11, 23)
        # Monday and Tuesday touch at midnight: one span of 48 hours
        assert list(open_intervals(c, monday - timedelta(hours=12), monday + timedelta(days=3))) == [
            (monday, monday + timedelta(days=2))
        ]
    assert Interval.model_validate({"start": "17:00", "end": "24:00"}).end == time(0)


def test_holidays_fixed_and_recurring_close_whole_days() -> None:
    c = cal(holidays=[date(2026, 11, 24)], recurring_holidays=["11-25"])
    assert add_business_seconds(c, local(BERLIN, 2026, 11, 23, 16), 2 * H) == local(BERLIN, 2026, 11, 26, 10)
    # the fixed holiday is 2026 only; the recurring one comes back in 2027
    assert add_business_seconds(c, local(BERLIN, 2027, 11, 23, 16), 2 * H) == local(BERLIN, 2027, 11, 24, 10)
    assert add_business_seconds(c, local(BERLIN, 2027, 11, 24, 16), 2 * H) == local(BERLIN, 2027, 11, 26, 10)
    assert not is_open(c, local(BERLIN, 2030, 11, 25, 10))  # any year
    assert c.is_holiday(date(2031, 11, 25)) and not c.is_holiday(date(2027, 11, 24))


def test_night_shift_that_starts_before_a_holiday_runs_to_its_end() -> None:
    c = cal(days="mon tue", hours=(("22:00", "06:00"),), holidays=[date(2026, 11, 24)])
    assert is_open(c, local(BERLIN, 2026, 11, 24, 3))  # Monday's shift, into the holiday
    assert not is_open(c, local(BERLIN, 2026, 11, 24, 23))  # Tuesday's shift starts on the holiday
    assert not is_open(c, local(BERLIN, 2026, 11, 25, 3))


def test_year_end_with_recurring_new_year() -> None:
    c = cal(recurring_holidays=["01-01"])  # Mon-Fri; 31 Dec 2024 is a Tuesday
    assert add_business_seconds(c, local(BERLIN, 2024, 12, 31, 16), 4 * H) == local(BERLIN, 2025, 1, 2, 12)
    assert add_business_seconds(c, local(BERLIN, 2026, 12, 31, 16), 4 * H) == local(BERLIN, 2027, 1, 4, 12)
    seven = cal(days=WEEK, recurring_holidays=["01-01"])
    assert add_business_seconds(seven, local(BERLIN, 2026, 12, 31, 16), 4 * H) == local(BERLIN, 2027, 1, 2, 12)
    # a night shift from New Year's Eve runs into the holiday; the one starting on it does not
    night = cal(days=WEEK, hours=(("22:00", "06:00"),), recurring_holidays=["01-01"])
    start = local(BERLIN, 2027, 12, 31, 23)
    assert business_seconds_between(night, start, local(BERLIN, 2028, 1, 3)) == (7 + 2) * H


def test_next_opening_on_a_closed_sunday() -> None:
    assert next_opening(cal(), local(BERLIN, 2026, 11, 22, 12)) == local(BERLIN, 2026, 11, 23, 9)
    assert next_opening(cal(), local(BERLIN, 2026, 11, 23, 10)) == local(BERLIN, 2026, 11, 23, 10)
    assert next_opening(cal(), local(BERLIN, 2026, 11, 23, 17)) == local(BERLIN, 2026, 11, 24, 9)


def test_inputs_in_any_time_zone_give_utc() -> None:
    c = cal()
    at = datetime(2026, 11, 23, 3, 30, tzinfo=NEW_YORK)  # 09:30 in Berlin
    assert is_open(c, at)
    assert add_business_seconds(c, at, 30 * 60) == datetime(2026, 11, 23, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        is_open(c, datetime(2026, 11, 23, 10))


def test_zero_tiny_and_negative_amounts() -> None:
    c = cal()
    sunday = local(BERLIN, 2026, 11, 22, 12)
    assert add_business_seconds(c, sunday, 0) == sunday  # unchanged, even in closed time
    assert add_business_seconds(c, sunday, 4e-7) == sunday  # rounds to nothing
    assert add_business_seconds(c, sunday, -1e-9) == sunday  # float noise from a caller
    assert add_business_seconds(c, sunday, 1e-6) == local(BERLIN, 2026, 11, 23, 9) + US
    with pytest.raises(ValueError, match="finite"):
        add_business_seconds(c, sunday, float("inf"))


def test_a_year_of_business_time_is_exact() -> None:
    c = cal(tz="America/New_York", recurring_holidays=["01-01", "07-04", "12-25"])
    start = local(NEW_YORK, 2025, 3, 1, 12, 34)
    seconds = 260 * 8 * H + 0.123456
    due = add_business_seconds(c, start, seconds)
    assert business_seconds_between(c, start, due) == pytest.approx(seconds, abs=1e-6)
    assert date(2026, 2, 20) < due.date() < date(2026, 3, 15)


def test_twenty_four_seven_is_wall_clock_time_even_across_dst() -> None:
    for tz, zone, change in (("Europe/Berlin", BERLIN, (3, 29)), ("Australia/Sydney", SYDNEY, (4, 5))):
        c = twenty_four_seven(tz)
        start = local(zone, 2026, *change) - timedelta(hours=12)
        due = add_business_seconds(c, start, 24 * H)
        assert due == start.astimezone(UTC) + timedelta(hours=24)
        assert due.astimezone(zone).hour != start.hour  # the wall clock moved by 23 or 25 hours
        assert business_seconds_between(c, start, due) == 24 * H
        assert is_open(c, start) and next_opening(c, start) == start


# --- DST ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "zone", "spring", "autumn"),
    [
        ("Europe/Berlin", BERLIN, date(2026, 3, 29), date(2026, 10, 25)),
        ("America/New_York", NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),
        ("Australia/Sydney", SYDNEY, date(2026, 10, 4), date(2026, 4, 5)),
    ],
)
def test_dst_nights_are_short_and_long(tz: str, zone: ZoneInfo, spring: date, autumn: date) -> None:
    c = cal(tz=tz, days=WEEK, hours=(("00:00", "06:00"),))
    day = timedelta(days=1)
    for d, real_hours in ((spring, 5), (autumn, 7), (spring + day, 6), (autumn - day, 6)):
        start = datetime.combine(d, time(0), tzinfo=zone)
        end = datetime.combine(d + day, time(0), tzinfo=zone)
        assert business_seconds_between(c, start, end) == real_hours * H, (tz, d)
        assert add_business_seconds(c, start, real_hours * H) == datetime.combine(d, time(6), tzinfo=zone)


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        (BERLIN, date(2026, 3, 29), date(2026, 10, 25)),  # 02:00 -> 03:00, 03:00 -> 02:00
        (NEW_YORK, date(2026, 3, 8), date(2026, 11, 1)),  # 02:00 -> 03:00, 02:00 -> 01:00
        (SYDNEY, date(2026, 10, 4), date(2026, 4, 5)),  # 02:00 -> 03:00, 03:00 -> 02:00
    ],
)
def test_night_shift_across_the_change(zone: ZoneInfo, spring: date, autumn: date) -> None:
    c = cal(tz=str(zone), days=WEEK, hours=(("22:00", "06:00"),))
    for d, real_hours in ((spring, 7), (autumn, 9)):
        evening = datetime.combine(d - timedelta(days=1), time(22), tzinfo=zone)
        assert business_seconds_between(c, evening, evening + timedelta(hours=12)) == real_hours * H


def test_a_boundary_in_the_skipped_hour_is_the_jump() -> None:
    """Berlin skips 02:00-03:00 on 29 March 2026: 02:30 is read as the jump, 03:00, for starts and ends alike."""
    c = cal(days="sun", hours=(("00:00", "02:30"), ("02:30", "05:00")))
    night = local(BERLIN, 2026, 3, 29)
    # the two intervals still meet, and together still cover the whole (4-hour) night
    assert list(open_intervals(c, night, night + timedelta(hours=12))) == [(night, local(BERLIN, 2026, 3, 29, 5))]
    late = cal(days="sun", hours=(("02:30", "05:00"),))
    assert next_opening(late, night) == local(BERLIN, 2026, 3, 29, 3)
    jump = local(BERLIN, 2026, 3, 29, 3).astimezone(UTC)  # UTC: aware arithmetic in Berlin is wall-clock arithmetic
    assert is_open(late, jump) and not is_open(late, jump - US)
    early = cal(days="sun", hours=(("00:00", "02:30"),))
    assert business_seconds_between(early, night, night + timedelta(hours=12)) == 2 * H
    # an interval inside the skipped hour does not exist that night; the week after it does
    gone = cal(days="sun", hours=(("02:10", "02:50"),))
    assert next_opening(gone, night) == local(BERLIN, 2026, 4, 5, 2, 10)
    # the whole skipped day of Samoa (30 December 2011) likewise
    apia = ZoneInfo("Pacific/Apia")
    samoa = cal(tz="Pacific/Apia", days=WEEK)
    start = datetime(2011, 12, 29, 12, tzinfo=apia)
    assert business_seconds_between(samoa, start, datetime(2012, 1, 1, tzinfo=apia)) == (5 + 8) * H
    assert add_business_seconds(samoa, start, 6 * H) == datetime(2011, 12, 31, 10, tzinfo=apia)


def test_a_boundary_in_the_repeated_hour_takes_the_longer_reading() -> None:
    """New York repeats 01:00-02:00 on 1 November 2026: starts take the first 01:30, ends the second."""
    c = cal(tz="America/New_York", days="sun", hours=(("01:30", "03:00"),))
    first, second = local(NEW_YORK, 2026, 11, 1, 1, 30), local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    first, second = first.astimezone(UTC), second.astimezone(UTC)  # aware == across zones is False when ambiguous
    assert second - first == timedelta(hours=1)
    assert next_opening(c, local(NEW_YORK, 2026, 11, 1)) == first
    assert business_seconds_between(c, first, local(NEW_YORK, 2026, 11, 2)) == 2.5 * H
    ends = cal(tz="America/New_York", days="sun", hours=(("00:00", "01:30"),))
    assert not is_open(ends, second) and is_open(ends, second - US)
    # intervals meeting in the repeated hour are not counted twice: the night is 5 real hours, not 6
    split = cal(tz="America/New_York", days="sun", hours=(("00:00", "01:30"), ("01:30", "04:00")))
    night = local(NEW_YORK, 2026, 11, 1)
    assert business_seconds_between(split, night, night + timedelta(hours=12)) == 5 * H
    assert add_business_seconds(split, night, 4 * H) == local(NEW_YORK, 2026, 11, 1, 3)


# --- validation -----------------------------------------------------------------------------------


def test_toml_calendar_loads() -> None:
    text = """
    timezone = "Asia/Singapore"
    weekly.mon = [{ start = "08:00", end = "18:00" }, { start = "22:00", end = "06:00" }]
    weekly.sun = [{ start = 10:00:00, end = "24:00" }]
    holidays = [2026-08-10]
    recurring_holidays = ["01-01", "02-29"]
    """
    c = BusinessCalendar.model_validate(tomllib.loads(text))
    assert c.weekly[Weekday.MON][1].overnight and c.weekly[Weekday.SUN][0].end == time(0)
    assert BusinessCalendar.model_validate_json(c.model_dump_json()) == c
    with pytest.raises(ValidationError, match="frozen"):
        c.model_copy().timezone = "UTC"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weekly": {}}, "needs opening hours"),
        ({"weekly": {"mon": []}}, "needs opening hours"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"weekly": {"mon": [{"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}}, "overlap"),
        (
            {"weekly": {"mon": [{"start": "09:00", "end": "10:00:30"}, {"start": "10:00:15", "end": "11:00"}]}},
            "overlap",
        ),
        ({"weekly": {"mon": [{"start": "09:00", "end": "17:00"}, {"start": "09:00", "end": "17:00"}]}}, "overlap"),
        (
            {"weekly": {"mon": [{"start": "22:00", "end": "06:00"}], "tue": [{"start": "05:00", "end": "08:00"}]}},
            "night shift",
        ),
        (
            {"weekly": {"sun": [{"start": "12:00", "end": "12:00"}], "mon": [{"start": "11:00", "end": "13:00"}]}},
            "night",
        ),
        ({"weekly": {"mon": [{"start": "24:00", "end": "10:00"}]}}, "start"),
        ({"weekly": {"mon": [{"start": "09:00+01:00", "end": "10:00"}]}}, "UTC offset"),
        ({"weekly": {"mon": [{"start": "09:00", "end": "10:00"}]}, "recurring_holidays": ["25-12"]}, "MM-DD"),
        ({"weekly": {"mon": [{"start": "09:00", "end": "10:00"}]}, "recurring_holidays": ["1-5"]}, "MM-DD"),
        ({"weekly": {"mon": [{"start": "09:00", "end": "10:00"}]}, "recurring_holidays": ["02-30"]}, "MM-DD"),
        ({"always_open": True, "weekly": {"mon": [{"start": "09:00", "end": "10:00"}]}}, "always_open"),
        ({"always_open": True, "holidays": ["2026-12-25"]}, "always_open"),
        ({"weekly": {"mon": [{"start": "09:00", "end": "10:00"}]}, "extra": 1}, "Extra inputs"),
    ],
)
def test_broken_calendars_are_rejected(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        BusinessCalendar.model_validate({"timezone": "UTC", **data})


def test_holidays_that_close_every_opening_day_are_rejected() -> None:
    every_day = [f"{d:%m-%d}" for d in (date(2024, 1, 1) + timedelta(days=i) for i in range(366))]
    with pytest.raises(ValidationError, match="recurring holidays close"):
        cal(recurring_holidays=every_day)
    with pytest.raises(ValidationError, match="recurring holidays close"):  # open on leap days only
        cal(recurring_holidays=[d for d in every_day if d != "02-29"])
    with pytest.raises(ValidationError, match="recurring holidays close"):  # 15 March is not always a weekday
        cal(recurring_holidays=[d for d in every_day if d != "03-15"])
    # 15 or 16 March is never a Sunday, so this one opens every year
    cal(days="mon tue wed thu fri sat", recurring_holidays=[d for d in every_day if d not in ("03-15", "03-16")])


def test_a_calendar_that_starts_with_holidays_still_finds_its_opening() -> None:
    c = cal(holidays=[date(2026, 1, 1) + timedelta(days=i) for i in range(898)])  # until Friday 16 June 2028
    assert next_opening(c, local(BERLIN, 2026, 1, 1)) == local(BERLIN, 2028, 6, 19, 9)


# --- properties -----------------------------------------------------------------------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Santiago",  # changes at midnight
    "Asia/Kolkata",
    "UTC",
]
FIXED_ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu"]
WEEK_DAYS = list(Weekday)
WEEK_MINUTES = 7 * 1440
# wall-clock minutes at which DST changes happen, so that generated boundaries often fall into them
DST_MINUTES = [0, 30, 60, 90, 120, 150, 165, 180, 1380, 1410]


def _transitions(zone_name: str) -> list[datetime]:
    zone, out = ZoneInfo(zone_name), []
    at = datetime(2024, 1, 1, tzinfo=UTC)
    while at.year < 2028:
        nxt = at + timedelta(hours=1)
        if at.astimezone(zone).utcoffset() != nxt.astimezone(zone).utcoffset():
            out.append(nxt)
        at = nxt
    return out


TRANSITIONS = {z: _transitions(z) for z in ZONES}


@st.composite
def calendars(draw: st.DrawFn, zones: tuple[str, ...] = tuple(ZONES)) -> BusinessCalendar:
    """Random opening hours laid on the circle of the week (so Sunday night shifts spill into Monday),
    several a day, up to a day long each, often touching (a boundary shared at a DST change is the hard
    case), with holidays around the test years."""
    points = draw(
        st.lists(
            st.builds(
                lambda day, minute: day * 1440 + minute,
                st.integers(0, 6),
                st.one_of(st.integers(0, 1439), st.sampled_from(DST_MINUTES)),
            ),
            min_size=2,
            max_size=12,
        )
    )
    points.sort()
    turn = draw(st.integers(0, 6)) * 1440  # whole days keep the DST minutes where they are
    week: dict[str, list[dict[str, str]]] = {}
    for begin, stop in zip(points[::2], points[1::2], strict=False):
        if begin == stop:
            continue
        length = min(stop - begin, 1440)
        start = (begin + turn) % WEEK_MINUTES
        end = (start + length) % 1440
        iv = {"start": f"{start % 1440 // 60:02d}:{start % 60:02d}", "end": f"{end // 60:02d}:{end % 60:02d}"}
        week.setdefault(WEEK.split()[start // 1440], []).append(iv)
    if not week:
        week["mon"] = [{"start": "09:00", "end": "17:00"}]
    return BusinessCalendar.model_validate(  # valid by construction: a rejection here is a validator bug
        {
            "timezone": draw(st.sampled_from(zones)),
            "weekly": week,
            "holidays": draw(st.lists(st.dates(date(2023, 12, 20), date(2028, 1, 10)), max_size=40)),
            "recurring_holidays": draw(
                st.lists(st.sampled_from(["01-01", "12-31", "12-25", "02-29", "03-29", "10-25", "04-05"]), max_size=4)
            ),
        }
    )


ANY_INSTANT = st.datetimes(datetime(2024, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))


def instants(c: BusinessCalendar) -> st.SearchStrategy[datetime]:
    """Anywhere in 2024-2027, or within a day and a half of one of the calendar's DST changes."""
    changes = TRANSITIONS.get(c.timezone)
    if not changes:
        return ANY_INSTANT
    near = st.builds(
        lambda t, minutes, us: t + timedelta(minutes=minutes, microseconds=us),
        st.sampled_from(changes),
        st.integers(-36 * 60, 36 * 60),
        st.sampled_from([0, 0, 1, 999_999]),
    )
    return st.one_of(ANY_INSTANT, near)


def cases(zones: tuple[str, ...] = tuple(ZONES)) -> st.SearchStrategy[tuple[BusinessCalendar, datetime]]:
    return calendars(zones).flatmap(lambda c: st.tuples(st.just(c), instants(c)))


# whole microseconds, so that sums are exact: up to 400 hours, often a few seconds
micros = st.one_of(st.integers(0, 400 * H * 10**6), st.integers(0, 10 * 10**6))
PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(cases(), st.one_of(st.floats(0, 400 * H, allow_nan=False), micros.map(lambda m: m / 1e6)))
def test_adding_then_measuring_round_trips(case: tuple[BusinessCalendar, datetime], seconds: float) -> None:
    c, start = case
    end = add_business_seconds(c, start, seconds)
    assert end.tzinfo is UTC and end >= start
    assert abs(business_seconds_between(c, start, end) - seconds) <= 1e-6


@PROPS
@given(cases(), micros.filter(bool))
def test_never_lands_in_closed_time(case: tuple[BusinessCalendar, datetime], us: int) -> None:
    c, start = case
    end = add_business_seconds(c, start, us / 1e6)
    assert end > start
    assert is_open(c, end - US)
    # and it is the earliest such instant: a microsecond before, a microsecond is still missing
    assert business_seconds_between(c, start, end - US) == (us - 1) / 1e6


@PROPS
@given(cases(), micros, micros)
def test_monotonic_and_additive(case: tuple[BusinessCalendar, datetime], a_us: int, b_us: int) -> None:
    c, start = case
    a, b = a_us / 1e6, b_us / 1e6
    first, both = add_business_seconds(c, start, a), add_business_seconds(c, start, a + b)
    assert first < both or b == 0
    assert add_business_seconds(c, first, b) == both


@PROPS
@given(cases(), micros, micros)
def test_measuring_is_additive(case: tuple[BusinessCalendar, datetime], x_us: int, y_us: int) -> None:
    c, a = case
    b, d = a + timedelta(microseconds=x_us), a + timedelta(microseconds=x_us + y_us)
    total = business_seconds_between(c, a, d)
    assert abs(total - business_seconds_between(c, a, b) - business_seconds_between(c, b, d)) <= 1e-6
    assert 0 <= total <= (x_us + y_us) / 1e6
    spans = list(open_intervals(c, a, d))
    assert all(a <= s < e <= d for s, e in spans)
    assert all(e1 < s2 for (_, e1), (s2, _) in pairwise(spans))  # disjoint and not touching


@PROPS
@given(cases())
def test_next_opening_agrees_with_is_open(case: tuple[BusinessCalendar, datetime]) -> None:
    c, at = case
    opening = next_opening(c, at)
    assert opening >= at and is_open(c, opening)
    assert business_seconds_between(c, at, opening) == 0
    assert (opening == at) == is_open(c, at)
    if opening > at:
        assert not is_open(c, opening - US)


DST_ZONES = tuple(z for z in ZONES if TRANSITIONS[z])


@st.composite
def split_days(draw: st.DrawFn) -> tuple[BusinessCalendar, BusinessCalendar, datetime]:
    """The same daily hours twice, once with every interval cut into touching pieces at wall-clock times
    that are often skipped or repeated by a DST change, and an instant near one of the zone's changes."""
    minute = st.one_of(st.integers(0, 1439), st.sampled_from(DST_MINUTES))
    points = sorted(draw(st.sets(minute, min_size=2, max_size=8).filter(lambda p: len(p) % 2 == 0)))
    if draw(st.booleans()):  # pair the other way round: the last interval is a night shift
        points = [*points[1:], points[0] + 1440]
    whole, pieces = [], []
    for begin, stop in zip(points[::2], points[1::2], strict=True):
        whole.append((begin, stop))
        inner = [m for m in range(begin + 1, stop) if m % 1440 in DST_MINUTES] or list(range(begin + 1, stop))
        cuts = sorted(draw(st.sets(st.sampled_from(inner), max_size=3))) if inner else []
        edges = [begin, *cuts, stop]
        pieces += list(pairwise(edges))
    zone = draw(st.sampled_from(DST_ZONES))

    def calendar(spans: list[tuple[int, int]]) -> BusinessCalendar:
        week: dict[str, list[dict[str, str]]] = {d: [] for d in WEEK.split()}
        for begin, stop in spans:
            iv = {
                "start": f"{begin % 1440 // 60:02d}:{begin % 60:02d}",
                "end": f"{stop % 1440 // 60:02d}:{stop % 60:02d}",
            }
            for day in week:  # every day alike, so a piece that starts after midnight can stay with its shift
                week[day].append(iv)
        return BusinessCalendar.model_validate({"timezone": zone, "weekly": week})

    near = draw(st.sampled_from(TRANSITIONS[zone])) + timedelta(minutes=draw(st.integers(-36 * 60, 12 * 60)))
    return calendar(whole), calendar(pieces), near


@PROPS
@given(split_days(), micros)
def test_cutting_opening_hours_into_pieces_changes_nothing(case: tuple[Any, ...], us: int) -> None:
    """Touching intervals are one opening, also where their shared boundary is skipped or repeated by DST:
    a fall-back night must not count the repeated hour twice, a spring-forward night must leave no gap."""
    whole, pieces, at = case
    window = at + timedelta(days=3)
    assert list(open_intervals(pieces, at, window)) == list(open_intervals(whole, at, window))
    assert add_business_seconds(pieces, at, us / 1e6) == add_business_seconds(whole, at, us / 1e6)


def _wall_clock_open(c: BusinessCalendar, at: datetime) -> bool:
    """Open by reading the wall clock: an interval of today, or the night shift of yesterday."""
    wall = at.astimezone(c.zone).replace(tzinfo=None)
    for back in (0, 1):
        day = wall.date() - timedelta(days=back)
        if c.is_holiday(day):
            continue
        for iv in c.weekly.get(WEEK_DAYS[day.weekday()], []):
            start = datetime.combine(day, iv.start)
            end = datetime.combine(day + timedelta(days=1) if iv.overnight else day, iv.end)
            if start <= wall < end:
                return True
    return False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars(tuple(FIXED_ZONES)), ANY_INSTANT)
def test_matches_the_wall_clock_minute_by_minute(c: BusinessCalendar, start: datetime) -> None:
    """Without DST the wall clock is unambiguous, so a plain scan of two days must agree exactly."""
    start = start.replace(second=0, microsecond=0)
    minutes = [start + timedelta(minutes=i) for i in range(2 * 1440)]
    expected = [_wall_clock_open(c, m) for m in minutes]
    assert [is_open(c, m) for m in minutes[::37]] == expected[::37]
    assert business_seconds_between(c, start, minutes[-1] + timedelta(minutes=1)) == 60 * sum(expected)
