"""Business-hours calendars: the exact arithmetic behind SLA clocks.

Opening hours are local wall-clock intervals in the department's time zone; every answer is an
absolute UTC instant, so DST changes and year ends need no special cases in callers. Pure and
deterministic (no clock, no I/O besides the zoneinfo database): the workflow uses it to place timers.

Everything is built on one stream, `_spans_from`: the calendar's open time as disjoint UTC spans in
order, produced day by day. Counting works on `timedelta`s, so results are exact to the microsecond.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import pairwise
from typing import Annotated, NamedTuple, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_DAY = timedelta(days=1)
_DAY_US = 86_400_000_000
_MICROSECOND = timedelta(microseconds=1)
# Local midnights never move by more than this against each other in real time (the largest jump ever made
# by a zone is a day, Samoa 2011), so a span cannot be merged with one of a day this far ahead.
_LOOKAHEAD = timedelta(days=2)
# Past the last fixed holiday a valid calendar opens at least once every calendar year (checked by the
# validator), so a longer closed run means DST swallowed the only opening hours left: give up loudly.
_MAX_CLOSED_DAYS = 2 * 366 + 7
_MMDD = re.compile(r"^(\d{2})-(\d{2})$")


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e
    return name


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


_DAYS = list(Weekday)  # index = date.weekday()


def _end_of_day(value: object) -> object:
    """ "24:00" ends an interval at midnight: the end is then on the next day, like any end not after the start."""
    if isinstance(value, str) and value.strip() in ("24:00", "24:00:00"):
        return time(0)
    return value


def _naive(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("opening hours are local wall-clock times: give no UTC offset (the calendar has a time zone)")
    return value


def _us(t: time) -> int:
    """Microseconds since the start of the day."""
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


class Interval(BaseModel):
    """Open from `start` to `end`, local wall-clock time ("HH:MM" in TOML). An `end` not after `start` is on
    the next day (a night shift, 22:00-06:00); "24:00" is the end of the day, so 00:00-24:00 (or 00:00-00:00)
    is the whole day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Annotated[time, AfterValidator(_naive)]
    end: Annotated[time, BeforeValidator(_end_of_day), AfterValidator(_naive)]

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def span_us(self) -> tuple[int, int]:
        """[start, end) in microseconds from the start of its day; the end of a night shift exceeds a day."""
        s, e = _us(self.start), _us(self.end)
        return s, e + _DAY_US if self.overnight else e


class BusinessCalendar(BaseModel):
    """Opening hours of a department (or an agent's shift) in one time zone.

    A holiday closes its local calendar day: a night shift that starts the evening before still runs to its
    end, one that starts on the holiday does not run (a shift belongs to the day it starts on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: TimeZoneName = "UTC"
    always_open: bool = False  # 24/7: business time is elapsed time
    weekly: dict[Weekday, list[Interval]] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)  # fixed dates
    recurring_holidays: list[str] = Field(default_factory=list)  # "MM-DD", every year

    @field_validator("recurring_holidays")
    @classmethod
    def _recurring(cls, v: list[str]) -> list[str]:
        for item in v:
            m = _MMDD.match(item)
            try:
                if m is None:
                    raise ValueError(item)
                date(2000, int(m[1]), int(m[2]))  # 2000 is a leap year: 02-29 is allowed
            except ValueError as e:
                # strict: a lenient "1-5" would be silently ignored by the day-of-year lookup
                raise ValueError(f"recurring holiday {item!r} is not MM-DD (like '01-05')") from e
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.always_open:
            if any(self.weekly.values()) or self.holidays or self.recurring_holidays:
                raise ValueError("an always_open calendar takes no weekly hours or holidays: they would be ignored")
            return self
        if not any(self.weekly.values()):
            raise ValueError("a calendar needs opening hours (or always_open = true): deadlines would never come")
        for i, day in enumerate(_DAYS):
            own = sorted(iv.span_us() for iv in self.weekly.get(day, []))
            for (_, e1), (s2, _) in pairwise(own):
                if s2 < e1:
                    raise ValueError(f"{day}: opening intervals overlap ({_clock(s2)} is before {_clock(e1)})")
            # the night shift of the day before spills into this one
            spill = [e - _DAY_US for _, e in (iv.span_us() for iv in self.weekly.get(_DAYS[i - 1], []))]
            if own and spill and own[0][0] < max(spill):
                raise ValueError(f"{day}: opening hours overlap the night shift from {_DAYS[i - 1]}")
        if not self._opens_every_year():
            raise ValueError("the recurring holidays close every opening day of some years: deadlines would stall")
        return self

    def _opens_every_year(self) -> bool:
        """True if every calendar year has a day that is open by the weekly hours and not a recurring holiday.
        Fixed holidays are finite, so this is what keeps every deadline finite."""
        if len(self.recurring_holidays) < 52:  # each open weekday occurs at least 52 times a year
            return True
        open_days = {i for i, d in enumerate(_DAYS) if self.weekly.get(d)}
        recurring = set(self.recurring_holidays)
        for year in range(2000, 2028):  # the 28-year cycle holds every kind of year (weekday of 1 Jan, leap)
            day, found = date(year, 1, 1), False
            while day.year == year and not found:
                found = day.weekday() in open_days and f"{day:%m-%d}" not in recurring
                day += _DAY
            if not found:
                return False
        return True

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or f"{day:%m-%d}" in self.recurring_holidays


def _clock(us: int) -> str:
    us %= _DAY_US
    return f"{us // 3_600_000_000:02d}:{us // 60_000_000 % 60:02d}:{us // 1_000_000 % 60:02d}"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def twenty_four_seven(tz: str = "UTC") -> BusinessCalendar:
    return BusinessCalendar(timezone=tz, always_open=True)


class _Plan(NamedTuple):
    """A calendar compiled for day-by-day lookups. Rebuilt per call rather than cached on the model:
    `model_copy(update=...)` would carry such a cache over, stale."""

    zone: ZoneInfo
    week: tuple[tuple[tuple[time, time, bool], ...], ...]  # per weekday: (start, end, overnight)
    holidays: frozenset[date]
    recurring: frozenset[tuple[int, int]]
    last_holiday: date

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or (day.month, day.day) in self.recurring


def _plan(cal: BusinessCalendar) -> _Plan:
    week = tuple(tuple(sorted((iv.start, iv.end, iv.overnight) for iv in cal.weekly.get(d, []))) for d in _DAYS)
    recurring = frozenset((int(r[:2]), int(r[3:])) for r in cal.recurring_holidays)
    return _Plan(cal.zone, week, frozenset(cal.holidays), recurring, max(cal.holidays, default=date.min))


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("calendar arithmetic needs aware datetimes")
    return at.astimezone(UTC)


def _instant(day: date, t: time, zone: ZoneInfo, *, end: bool) -> datetime:
    """The UTC instant of local wall-clock `t` on `day`.

    A time skipped by a spring-forward jump is the instant of the jump (02:30 -> 03:00), for starts and ends
    alike: an interval is then exactly the time its wall clock reads inside it, so cutting it in touching
    pieces changes nothing (reading 02:30 as 03:30, fold=0, would add a half hour to 02:00-02:30 while
    01:30-03:00 has only 30 real minutes). A time repeated by a fall-back is its first occurrence for a start
    and its second for an end, so an interval that spans the repeated hour gets the extra real hour
    (00:00-06:00 is then 7 hours)."""
    local = datetime.combine(day, t, tzinfo=zone)
    first = local.astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):  # skipped
        return _jump(local.replace(fold=1).astimezone(UTC), first, zone)
    return local.replace(fold=1).astimezone(UTC) if end else first


def _jump(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant in (before, after] at which the offset changes to `after`'s: bisection, as zoneinfo does not
    expose its transitions (about 32 steps for an hour; only for boundaries inside a skipped hour)."""
    offset = after.astimezone(zone).utcoffset()
    while after - before > _MICROSECOND:
        middle = before + (after - before) // 2
        if middle.astimezone(zone).utcoffset() == offset:
            after = middle
        else:
            before = middle
    return after


def _day_spans(plan: _Plan, day: date) -> list[tuple[datetime, datetime]]:
    """The UTC spans of the intervals that start on local `day` (none on a holiday), sorted. They may overlap
    each other or the day before's (an end in a repeated hour): the caller merges them."""
    if plan.is_holiday(day):
        return []
    spans = []
    for start, end, overnight in plan.week[day.weekday()]:
        s = _instant(day, start, plan.zone, end=False)
        e = _instant(day + _DAY if overnight else day, end, plan.zone, end=True)
        if s < e:  # not when it lies inside a skipped hour
            spans.append((s, e))
    return sorted(spans)


def _spans_from(cal: BusinessCalendar, at: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The open time ending after `at` (UTC) as disjoint, non-touching spans in order, the first clipped to
    begin no earlier than `at`. Endless; raises ValueError if the calendar stops opening."""
    plan = _plan(cal)
    day = at.astimezone(plan.zone).date() - 2 * _DAY  # a night shift of the day before may still run
    pending: list[tuple[datetime, datetime]] = []  # merged spans that a later day could still touch
    closed = 0
    while True:
        spans = _day_spans(plan, day)
        closed = 0 if spans or day <= plan.last_holiday else closed + 1
        if closed > _MAX_CLOSED_DAYS:
            raise ValueError(f"calendar in {cal.timezone} is closed for {closed} days up to {day}")
        if spans:
            merged: list[tuple[datetime, datetime]] = []
            for s, e in sorted(pending + spans):
                if merged and s <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], e))
                else:
                    merged.append((s, e))
            pending = merged
        day += _DAY
        # every span of `day` or later starts after this, so spans ending before it are final
        horizon = datetime.combine(day, time(0), tzinfo=plan.zone).astimezone(UTC) - _LOOKAHEAD
        while pending and pending[0][1] < horizon:
            s, e = pending.pop(0)
            if e > at:
                yield max(s, at), e


def open_intervals(cal: BusinessCalendar, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The open UTC spans intersecting [start, end), clipped to it, in order; touching spans come as one."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        return
    if cal.always_open:
        yield start, end
        return
    for s, e in _spans_from(cal, start):
        if s >= end:
            return
        yield s, min(e, end)


def business_seconds_between(cal: BusinessCalendar, start: datetime, end: datetime) -> float:
    """Open seconds in [start, end); 0 if `end` is not after `start`."""
    total = timedelta()
    for s, e in open_intervals(cal, start, end):
        total += e - s
    return total.total_seconds()


def add_business_seconds(cal: BusinessCalendar, start: datetime, seconds: float) -> datetime:
    """The instant (UTC) at which `seconds` of open time have passed since `start`.

    `seconds` is rounded to the microsecond first. Nothing (less than half a microsecond, or a negative amount
    from float noise in a caller) returns `start` itself, open or not. Anything more ends inside open time or
    at the end of an open span, never at the opening of one: a deadline is when the last second was used."""
    if not math.isfinite(seconds):
        raise ValueError(f"business seconds must be finite, got {seconds}")
    start = _utc(start)
    remaining = timedelta(seconds=max(seconds, 0.0))
    if not remaining:
        return start
    if cal.always_open:
        return start + remaining
    for s, e in _spans_from(cal, start):
        if remaining <= e - s:
            return s + remaining
        remaining -= e - s
    raise AssertionError("unreachable: the span stream is endless")


def is_open(cal: BusinessCalendar, at: datetime) -> bool:
    """Whether `at` is in open time (interval starts are inclusive, ends exclusive)."""
    at = _utc(at)
    return cal.always_open or next(_spans_from(cal, at))[0] == at


def next_opening(cal: BusinessCalendar, at: datetime) -> datetime:
    """`at` (in UTC) if open then, else the start of the next open span."""
    at = _utc(at)
    if cal.always_open:
        return at
    return next(_spans_from(cal, at))[0]
