"""Business-hours calendars: the exact arithmetic behind SLA clocks.

Opening hours are local wall-clock intervals in the department's time zone; every answer is an
absolute UTC instant, so DST changes and year ends need no special cases in callers. Pure: the
workflow uses it to place its timers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import pairwise
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# How many days in a row may be closed before a calendar counts as broken (holidays can close many days).
_MAX_CLOSED_DAYS = 400


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


def _clock_time(value: object) -> object:
    """Accept "HH:MM"; "24:00" is midnight at the end of the day."""
    if isinstance(value, str) and value.strip() == "24:00":
        return time(0)
    return value


class Interval(BaseModel):
    """Open from `start` to `end`, local time. An `end` not after `start` is on the next day (a night
    shift); 00:00-24:00 is the whole day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Annotated[time, BeforeValidator(_clock_time)]
    end: Annotated[time, BeforeValidator(_clock_time)]

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def minutes(self) -> tuple[int, int]:
        """[start, end) in minutes from the start of its day; end may exceed 1440."""
        s = self.start.hour * 60 + self.start.minute
        e = self.end.hour * 60 + self.end.minute
        return s, e + 1440 if self.overnight else e


class BusinessCalendar(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: TimeZoneName = "UTC"
    always_open: bool = False
    weekly: dict[Weekday, list[Interval]] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)
    recurring_holidays: list[str] = Field(default_factory=list)  # "MM-DD", every year

    @field_validator("recurring_holidays")
    @classmethod
    def _recurring(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                datetime.strptime(f"2000-{item}", "%Y-%m-%d")  # 2000 is a leap year: 02-29 is allowed
            except ValueError as e:
                raise ValueError(f"recurring holiday {item!r} is not MM-DD") from e
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.always_open:
            return self
        if not any(self.weekly.values()):
            raise ValueError("a calendar needs opening hours (or always_open = true): deadlines would never come")
        for i, day in enumerate(_DAYS):
            spans = sorted(iv.minutes() for iv in self.weekly.get(day, []))
            # the night shift of the day before spills into this one
            spill = [e - 1440 for s, e in (iv.minutes() for iv in self.weekly.get(_DAYS[i - 1], [])) if e > 1440]
            for (_, e1), (s2, _) in pairwise(spans):
                if s2 < e1:
                    raise ValueError(f"{day}: opening intervals overlap")
            if spill and spans and spans[0][0] < max(spill):
                raise ValueError(f"{day}: opening hours overlap the night shift from {_DAYS[i - 1]}")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or f"{day:%m-%d}" in self.recurring_holidays


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def twenty_four_seven(tz: str = "UTC") -> BusinessCalendar:
    return BusinessCalendar(timezone=tz, always_open=True)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("calendar arithmetic needs aware datetimes")
    return at.astimezone(UTC)


def _day_spans(cal: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The UTC spans of the intervals that start on local `day` (none on a holiday).

    A start at a wall-clock time skipped by a DST jump lands just after the jump (fold=0); an end in
    a repeated hour takes its second occurrence (fold=1), so the interval keeps the extra real hour."""
    if cal.is_holiday(day):
        return []
    zone = cal.zone
    spans = []
    for iv in cal.weekly.get(_DAYS[day.weekday()], []):
        start = datetime.combine(day, iv.start, tzinfo=zone).astimezone(UTC)
        end_day = day + timedelta(days=1) if iv.overnight else day
        end = datetime.combine(end_day, iv.end, tzinfo=zone).replace(fold=1).astimezone(UTC)
        if start < end:
            spans.append((start, end))
    return sorted(spans)


def _spans_from(cal: BusinessCalendar, start: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Open spans that end after `start`, clipped to begin no earlier than it, in order."""
    day = start.astimezone(cal.zone).date() - timedelta(days=1)  # yesterday's night shift may still run
    closed = 0
    while closed <= _MAX_CLOSED_DAYS:
        spans = _day_spans(cal, day)
        closed = 0 if spans else closed + 1
        for s, e in spans:
            if e > start:
                yield max(s, start), e
        day += timedelta(days=1)
    raise ValueError(f"calendar in {cal.timezone} is closed for {_MAX_CLOSED_DAYS} days after {day}")


def open_intervals(cal: BusinessCalendar, start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The open UTC spans intersecting [start, end)."""
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
    total = timedelta()
    for s, e in open_intervals(cal, start, end):
        total += e - s
    return total.total_seconds()


def add_business_seconds(cal: BusinessCalendar, start: datetime, seconds: float) -> datetime:
    """The instant at which `seconds` of open time have passed since `start`."""
    start = _utc(start)
    if seconds <= 0:
        return start
    if cal.always_open:
        return start + timedelta(seconds=seconds)
    remaining = timedelta(seconds=seconds)
    for s, e in _spans_from(cal, start):
        if remaining <= e - s:
            return s + remaining
        remaining -= e - s
    raise AssertionError("unreachable: _spans_from raises when a calendar never opens")


def is_open(cal: BusinessCalendar, at: datetime) -> bool:
    at = _utc(at)
    return cal.always_open or any(True for _ in open_intervals(cal, at, at + timedelta(microseconds=1)))


def next_opening(cal: BusinessCalendar, at: datetime) -> datetime:
    """`at` if open then, else the start of the next open span."""
    at = _utc(at)
    if cal.always_open:
        return at
    return next(_spans_from(cal, at))[0]
