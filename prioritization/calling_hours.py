"""Calling hours: when a campaign may call, in its own time zone. Pure functions."""

import datetime as dt
import functools
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

# A week is enough to find the next opening of any campaign with at least one calling day; two,
# when the clocks skip the whole window of its one calling day (found again a week later).
_SEARCH_DAYS = 15


class HasCallingHours(Protocol):
    """A campaign's fields that say when it may call."""

    @property
    def time_zone(self) -> str: ...
    @property
    def calling_hours_start(self) -> dt.time: ...
    @property
    def calling_hours_end(self) -> dt.time: ...
    @property
    def calling_days(self) -> Iterable[int]: ...


@dataclass(frozen=True)
class CallingHours:
    time_zone: str
    start: dt.time
    end: dt.time
    days: frozenset[int]  # Monday = 0 … Sunday = 6

    @classmethod
    def of(cls, campaign: "HasCallingHours") -> "CallingHours":
        """A campaign's (``leads.models.Campaign``)."""
        return cls(
            campaign.time_zone,
            campaign.calling_hours_start,
            campaign.calling_hours_end,
            frozenset(campaign.calling_days),
        )

    def is_open(self, moment: dt.datetime) -> bool:
        """Whether ``moment`` falls in its local day's window: from the first instant the
        wall clock reads ``start`` to the first it reads ``end`` (see :func:`_window`)."""
        day = moment.astimezone(zoneinfo.ZoneInfo(self.time_zone)).date()
        if day.weekday() not in self.days:
            return False
        opens, closes = _window_of(day, self)
        return opens <= moment.astimezone(dt.UTC) < closes


def next_opening(moment: dt.datetime, hours: CallingHours) -> dt.datetime:
    """``moment`` if the campaign may call then, else the start of its next calling window (UTC)."""
    zone = zoneinfo.ZoneInfo(hours.time_zone)
    # Compared in UTC: two datetimes of one zone compare by wall clock, which repeats an hour
    # when clocks go back.
    instant = moment.astimezone(dt.UTC)
    first_day = instant.astimezone(zone).date()
    for offset in range(_SEARCH_DAYS):
        day = first_day + dt.timedelta(days=offset)
        if day.weekday() not in hours.days:
            continue
        opens, closes = _window_of(day, hours)
        if closes <= opens:
            continue  # the clocks skip the whole window this day (it opens and closes at the jump)
        if offset == 0 and opens <= instant < closes:
            return instant
        if instant < opens:
            return opens
    raise ValueError(f"no calling hours within two weeks of {moment.isoformat()}")


@functools.lru_cache(maxsize=4096)
def _window_of(day: dt.date, hours: CallingHours) -> tuple[dt.datetime, dt.datetime]:
    """:func:`_window`, kept: every claim asks whether each campaign of its tuple is open,
    every arriving lead with a ``rescheduled_at`` when its campaign next opens, and a day's
    window takes a few microseconds to work out."""
    return _window(day, hours, zoneinfo.ZoneInfo(hours.time_zone))


def _window(day: dt.date, hours: CallingHours, zone: zoneinfo.ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """A calling day's window as UTC instants. On the days clocks change it keeps its
    length in wall-clock terms as far as it can: it opens when the clock first reads its
    start (at the jump, when clocks skip it) and, when clocks go back, does not close for
    the repeated hour."""
    return _first_instant_at(day, hours.start, zone), _first_instant_at(day, hours.end, zone)


def _first_instant_at(day: dt.date, time: dt.time, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first instant (UTC) of ``day`` at which the wall clock in ``zone`` reads ``time``
    or later.

    Usually the wall time itself (the first of two, where clocks go back). A wall time the
    clocks skip (02:30 where they jump from 02:00 to 03:00) does not exist: the first such
    instant is the jump, found between the two readings of the skipped time (before and
    after the jump's offset), to the second.
    """
    wall = dt.datetime.combine(day, time)
    before = wall.replace(tzinfo=zone, fold=0)
    if before.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return before.astimezone(dt.UTC)
    # In seconds since the epoch: the wall clock reads before `time` at `low`, at or after
    # it at `high`.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(before.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, dt.UTC)
