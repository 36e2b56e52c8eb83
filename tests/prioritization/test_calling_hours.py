"""next_opening: the moment itself inside calling hours, else the next opening (pure, no database)."""

import datetime as dt
import zoneinfo

import pytest

from prioritization.calling_hours import CallingHours, next_opening

WEEKDAYS = frozenset(range(5))
UTC_9_TO_17 = CallingHours("UTC", dt.time(9), dt.time(17), WEEKDAYS)
KOLKATA = CallingHours("Asia/Kolkata", dt.time(9), dt.time(18), WEEKDAYS)
SAO_PAULO = CallingHours("America/Sao_Paulo", dt.time(8), dt.time(20), frozenset(range(6)))
NEW_YORK = CallingHours("America/New_York", dt.time(9), dt.time(17), frozenset(range(7)))
NIGHT_BERLIN = CallingHours("Europe/Berlin", dt.time(2, 30), dt.time(20), frozenset(range(7)))
EARLY_BERLIN = CallingHours("Europe/Berlin", dt.time(1), dt.time(2, 30), frozenset(range(7)))


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def local(zone: str, *args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone))


# 2026-11-23 is a Monday.
@pytest.mark.parametrize(
    ("hours", "moment", "expected"),
    [
        # Inside hours: the moment itself.
        (UTC_9_TO_17, utc(2026, 11, 24, 9, 0), utc(2026, 11, 24, 9, 0)),
        (UTC_9_TO_17, utc(2026, 11, 24, 13, 37, 12), utc(2026, 11, 24, 13, 37, 12)),
        (UTC_9_TO_17, utc(2026, 11, 24, 16, 59, 59), utc(2026, 11, 24, 16, 59, 59)),
        # Before opening: the same day's opening.
        (UTC_9_TO_17, utc(2026, 11, 24, 3, 15), utc(2026, 11, 24, 9, 0)),
        (UTC_9_TO_17, utc(2026, 11, 24, 8, 59, 59), utc(2026, 11, 24, 9, 0)),
        # At or after closing: the next calling day's opening.
        (UTC_9_TO_17, utc(2026, 11, 24, 17, 0), utc(2026, 11, 25, 9, 0)),
        (UTC_9_TO_17, utc(2026, 11, 24, 23, 30), utc(2026, 11, 25, 9, 0)),
        # Friday evening, Saturday, Sunday: Monday's opening.
        (UTC_9_TO_17, utc(2026, 11, 27, 18, 0), utc(2026, 11, 30, 9, 0)),
        (UTC_9_TO_17, utc(2026, 11, 28, 12, 0), utc(2026, 11, 30, 9, 0)),
        (UTC_9_TO_17, utc(2026, 11, 29, 23, 59), utc(2026, 11, 30, 9, 0)),
        # Kolkata is UTC+5:30: 09:00 local = 03:30 UTC, 18:00 local = 12:30 UTC.
        (KOLKATA, utc(2026, 11, 24, 4, 0), utc(2026, 11, 24, 4, 0)),
        (KOLKATA, utc(2026, 11, 24, 2, 0), utc(2026, 11, 24, 3, 30)),
        (KOLKATA, utc(2026, 11, 24, 13, 0), utc(2026, 11, 25, 3, 30)),
        # 20:00 UTC on Monday is already 01:30 Tuesday in Kolkata: Tuesday's opening.
        (KOLKATA, utc(2026, 11, 23, 20, 0), utc(2026, 11, 24, 3, 30)),
        # Friday 20:00 UTC is Saturday 01:30 local: Monday's opening.
        (KOLKATA, utc(2026, 11, 27, 20, 0), utc(2026, 11, 30, 3, 30)),
        # São Paulo is UTC−3 (no DST since 2019), calls Monday to Saturday 08-20.
        (SAO_PAULO, utc(2026, 11, 24, 12, 0), utc(2026, 11, 24, 12, 0)),
        (SAO_PAULO, utc(2026, 11, 24, 10, 0), utc(2026, 11, 24, 11, 0)),
        # 00:30 UTC Tuesday is 21:30 Monday local: after closing → Tuesday 08:00 local = 11:00 UTC.
        (SAO_PAULO, utc(2026, 11, 24, 0, 30), utc(2026, 11, 24, 11, 0)),
        (SAO_PAULO, utc(2026, 11, 28, 22, 0), utc(2026, 11, 28, 22, 0)),  # Saturday 19:00 local
        (SAO_PAULO, utc(2026, 11, 29, 15, 0), utc(2026, 11, 30, 11, 0)),  # Sunday → Monday
        # New York across the DST switch (2026-03-08, clocks jump from 02:00 to 03:00):
        # Saturday 18:00 EST (23:00 UTC) → Sunday 09:00 EDT = 13:00 UTC.
        (NEW_YORK, utc(2026, 3, 7, 23, 0), utc(2026, 3, 8, 13, 0)),
        # and back (2026-11-01): Saturday 18:00 EDT (22:00 UTC) → Sunday 09:00 EST = 14:00 UTC.
        (NEW_YORK, utc(2026, 10, 31, 22, 0), utc(2026, 11, 1, 14, 0)),
        # A window that opens at a wall time the clocks skip: Berlin jumps from 02:00 CET to
        # 03:00 CEST (01:00 UTC) on 2026-03-29, over 02:30. It opens at the jump, not an hour
        # late (the skipped time read with the winter offset: 01:30 UTC).
        (NIGHT_BERLIN, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0)),
        (NIGHT_BERLIN, utc(2026, 3, 29, 1, 10), utc(2026, 3, 29, 1, 10)),  # 03:10 CEST: open
        (NIGHT_BERLIN, utc(2026, 3, 28, 1, 0), utc(2026, 3, 28, 1, 30)),  # a normal day, 02:30 CET
        # Clocks going back (2026-10-25, 03:00 CEST → 02:00 CET at 01:00 UTC) repeat 02:00-03:00:
        # a window opened at the first 02:30 stays open through the repeat.
        (NIGHT_BERLIN, utc(2026, 10, 25, 1, 4), utc(2026, 10, 25, 1, 4)),
        # EARLY_BERLIN closes at the first 02:30 (00:30 UTC) and opens again the next day.
        (EARLY_BERLIN, utc(2026, 10, 25, 1, 4), utc(2026, 10, 26, 0, 0)),
        (EARLY_BERLIN, utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 0, 59)),  # 01:59 CET: open
        (EARLY_BERLIN, utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 23, 0)),  # 03:00 CEST: closed till 01:00 CEST
    ],
)
def test_next_opening(hours: CallingHours, moment: dt.datetime, expected: dt.datetime) -> None:
    opening = next_opening(moment, hours)
    assert opening == expected
    assert opening.tzinfo is not None
    assert opening.utcoffset() == dt.timedelta(0)
    assert hours.is_open(opening)


def test_a_moment_given_in_another_zone_is_judged_in_the_campaigns_zone() -> None:
    # 10:00 in Berlin (09:00 UTC) is 14:30 in Kolkata: open.
    moment = local("Europe/Berlin", 2026, 11, 24, 10, 0)
    assert next_opening(moment, KOLKATA) == utc(2026, 11, 24, 9, 0)


def test_the_opening_is_never_before_the_moment() -> None:
    moment = utc(2026, 11, 23, 0, 0)
    for step in range(0, 7 * 24 * 4):
        probe = moment + dt.timedelta(minutes=15 * step)
        for hours in (UTC_9_TO_17, KOLKATA, SAO_PAULO):
            opening = next_opening(probe, hours)
            assert opening >= probe
            assert hours.is_open(opening)
            assert opening - probe < dt.timedelta(days=3, hours=1)


@pytest.mark.parametrize(
    ("hours", "start"),
    [
        (NIGHT_BERLIN, utc(2026, 3, 28, 12, 0)),  # across the spring jump
        (NIGHT_BERLIN, utc(2026, 10, 24, 12, 0)),  # and the autumn fold
        # A window that closes at a wall time the clocks skip: it closes at the jump.
        (EARLY_BERLIN, utc(2026, 3, 28, 12, 0)),
        (NEW_YORK, utc(2026, 3, 7, 12, 0)),
    ],
)
def test_across_clock_changes_the_opening_is_the_first_open_minute(
    hours: CallingHours, start: dt.datetime
) -> None:
    # Checked minute by minute against is_open over two days around the change.
    for step in range(0, 2 * 24 * 60, 7):
        probe = start + dt.timedelta(minutes=step)
        opening = next_opening(probe, hours)
        assert opening >= probe
        assert hours.is_open(opening)
        minute = probe
        while minute < opening - dt.timedelta(minutes=1):
            assert not hours.is_open(minute), (probe, minute, opening)
            minute += dt.timedelta(minutes=1)


def test_a_campaign_open_one_day_a_week_waits_up_to_a_week() -> None:
    sundays = CallingHours("UTC", dt.time(10), dt.time(12), frozenset({6}))
    assert next_opening(utc(2026, 11, 29, 12, 0), sundays) == utc(2026, 12, 6, 10, 0)
