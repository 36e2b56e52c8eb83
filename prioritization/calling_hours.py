"""Calling hours: when a campaign may call, in its own time zone. Pure functions."""

import datetime as dt
import zoneinfo
from dataclasses import dataclass

# A week is enough to find the next opening of any campaign with at least one calling day.
_SEARCH_DAYS = 8


@dataclass(frozen=True)
class CallingHours:
    time_zone: str
    start: dt.time
    end: dt.time
    days: frozenset[int]  # Monday = 0 … Sunday = 6

    def is_open(self, moment: dt.datetime) -> bool:
        local = moment.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        return local.weekday() in self.days and self.start <= local.time() < self.end


def next_opening(moment: dt.datetime, hours: CallingHours) -> dt.datetime:
    """``moment`` if the campaign may call then, else the start of its next calling window (UTC)."""
    zone = zoneinfo.ZoneInfo(hours.time_zone)
    local = moment.astimezone(zone)
    for offset in range(_SEARCH_DAYS):
        day = local.date() + dt.timedelta(days=offset)
        if day.weekday() not in hours.days:
            continue
        opens = dt.datetime.combine(day, hours.start, tzinfo=zone)
        closes = dt.datetime.combine(day, hours.end, tzinfo=zone)
        if offset == 0 and opens <= local < closes:
            return moment.astimezone(dt.UTC)
        if local < opens:
            return opens.astimezone(dt.UTC)
    raise ValueError(f"no calling hours within a week of {moment.isoformat()}")
