"""Lead arrivals, handling times and staffing for the simulator.

The real source is the call-centre log of an Israeli bank, February 1999
(``call_center_anonymous_bank_1999/`` in ``LEADRANK_DATA_DIR``): every call's arrival
moment, type and service time, and a 24-hour × 8-shift template. One call of the log
is one lead arriving; its ``type`` says which simulated campaign it belongs to; its
service time is how long the first picked-up call of that lead lasts. The log's clock
times are used as UTC (the simulated campaigns call around the clock, so the zone only
labels the moments), and February 1999 is replayed as February 2026: moved forward by
whole weeks (:data:`LOG_SHIFT`), so every call keeps its weekday and time of day.

Synthetic arrivals (``--rate``) are a Poisson stream at a constant rate; their types
follow the log's mix and their handling times are drawn from the log's service times
(or an exponential law when the log is not there).
"""

import bisect
import csv
import datetime as dt
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CALL_LOG_DIR = "call_center_anonymous_bank_1999"
CALL_LOG_FILE = "data_anonymous_bank_february.txt"
SHIFTS_FILE = "data_anonymous_bank_shifts.csv"
# Calls the log marks PHANTOM are "ignore" records, not callers.
IGNORED_OUTCOMES = frozenset({"PHANTOM"})
# Call types of the log (README of the data): PS regular, PE regular in English,
# IN internet, NE stock exchange, NW prospective customer, TT callback-left-message.
CALL_TYPES = ("PS", "PE", "IN", "NE", "NW", "TT")
# The log's 1 February 1999 (a Monday) becomes Monday 2 February 2026: 1,409 weeks later.
LOG_SHIFT = dt.timedelta(weeks=1409)
# Used when the log is not available: mean handling time of a picked-up call (the log's
# mean is about 177 s) and its type mix.
FALLBACK_HANDLING_MEAN_SECONDS = 180.0
FALLBACK_TYPE_MIX = {"PS": 0.64, "NW": 0.23, "NE": 0.08, "TT": 0.03, "IN": 0.01, "PE": 0.01}


class DataError(Exception):
    """A data file is missing or unreadable; the message says which and why."""


@dataclass(frozen=True)
class Arrival:
    at: dt.datetime
    call_type: str
    # The log's service time of this call when an agent served it; None otherwise (the
    # caller hung up or the stream is synthetic): then one is drawn from HandlingTimes.
    handling_seconds: float | None


@dataclass(frozen=True)
class HandlingTimes:
    """Service times of served calls, per call type, to draw from."""

    by_type: dict[str, list[float]]

    def draw(self, call_type: str, rng: random.Random) -> float:
        pool = self.by_type.get(call_type) or self.by_type.get("*")
        if not pool:
            return rng.expovariate(1.0 / FALLBACK_HANDLING_MEAN_SECONDS)
        return pool[int(rng.random() * len(pool))]


def _log_moment(date: str, clock: str) -> dt.datetime:
    """YYMMDD and H:MM:SS of the log (all in 1999) as a UTC moment, moved by LOG_SHIFT."""
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    day = dt.date(1900 + int(date[:2]), int(date[2:4]), int(date[4:6]))
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return midnight + LOG_SHIFT + dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class CallLog:
    arrivals: list[Arrival]  # every call but the phantom ones, in time order
    handling: HandlingTimes


def read_call_log(path: Path) -> CallLog:
    """Parse the tab-separated log; raises :class:`DataError` on a missing or malformed file."""
    try:
        handle = path.open(encoding="ascii", newline="")
    except OSError as exc:
        raise DataError(f"Cannot read the call log {path}: {exc.strerror or exc}.") from exc
    arrivals: list[Arrival] = []
    pools: defaultdict[str, list[float]] = defaultdict(list)
    with handle:
        reader = csv.DictReader(handle, delimiter="\t")
        needed = {"type", "date", "vru_entry", "outcome", "ser_time"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise DataError(f"{path} is not the call log: it needs the columns {', '.join(sorted(needed))}.")
        line = 1
        try:
            for row in reader:
                line += 1
                if row["outcome"] in IGNORED_OUTCOMES:
                    continue
                served = row["outcome"] == "AGENT" and int(row["ser_time"]) > 0
                seconds = float(row["ser_time"]) if served else None
                arrivals.append(Arrival(_log_moment(row["date"], row["vru_entry"]), row["type"], seconds))
                if seconds is not None:
                    pools[row["type"]].append(seconds)
                    pools["*"].append(seconds)
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}, line {line}: unreadable ({exc}).") from exc
    if not arrivals:
        # Synthetic arrivals draw their call types from the log's mix: there would be none.
        raise DataError(f"{path} holds no calls.")
    # The log is in line order; time order with a stable tie-break keeps runs reproducible.
    arrivals.sort(key=lambda arrival: arrival.at)
    return CallLog(arrivals=arrivals, handling=HandlingTimes(dict(pools)))


def window(arrivals: Sequence[Arrival], *, start: dt.datetime, end: dt.datetime) -> list[Arrival]:
    """The arrivals in [start, end)."""
    times = [arrival.at for arrival in arrivals]
    return list(arrivals[bisect.bisect_left(times, start) : bisect.bisect_left(times, end)])


def type_mix(arrivals: Sequence[Arrival]) -> dict[str, float]:
    counts = Counter(arrival.call_type for arrival in arrivals)
    total = sum(counts.values())
    return {call_type: count / total for call_type, count in sorted(counts.items())} if total else {}


def synthetic_arrivals(
    *, rate_per_hour: float, start: dt.datetime, end: dt.datetime, mix: dict[str, float], rng: random.Random
) -> list[Arrival]:
    """A Poisson stream: exponential gaps at ``rate_per_hour``, types drawn from ``mix``."""
    if not math.isfinite(rate_per_hour) or rate_per_hour <= 0:
        raise ValueError("The arrival rate must be a number greater than 0.")
    types = sorted(mix)
    cumulative = []
    total = 0.0
    for call_type in types:
        total += mix[call_type]
        cumulative.append(total)
    arrivals: list[Arrival] = []
    moment = start
    while True:
        moment += dt.timedelta(seconds=rng.expovariate(rate_per_hour / 3600.0))
        if moment >= end:
            return arrivals
        pick = bisect.bisect_left(cumulative, rng.random() * total)
        arrivals.append(Arrival(moment.replace(microsecond=0), types[min(pick, len(types) - 1)], None))


# --- Staffing --------------------------------------------------------------------------------

# The shift template of the log's call centre: which hours of the day each of its eight
# shifts covers (used when the file is not there; it is the file's content).
FALLBACK_SHIFTS: tuple[frozenset[int], ...] = (
    frozenset(range(0, 6)),
    frozenset(range(6, 12)),
    frozenset(range(8, 14)),
    frozenset(range(10, 16)),
    frozenset(range(12, 18)),
    frozenset(range(14, 20)),
    frozenset(range(16, 22)),
    frozenset(range(18, 24)),
)


def read_shift_template(path: Path) -> tuple[frozenset[int], ...]:
    """Hours of the day (0 to 23) each shift covers, from the 24 × N template file."""
    try:
        with path.open(encoding="ascii", newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise DataError(f"Cannot read the shift template {path}: {exc.strerror or exc}.") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not the shift template: it is not ASCII text ({exc}).") from exc
    if len(rows) != 25 or len(rows[0]) < 3:
        raise DataError(f"{path} is not a 24-hour shift template.")
    shifts = len(rows[0]) - 2
    try:
        covered = [
            frozenset(hour for hour, row in enumerate(rows[1:]) if row[2 + shift].strip() == "1")
            for shift in range(shifts)
        ]
    except IndexError as exc:
        raise DataError(f"{path}: a row has fewer columns than the header.") from exc
    shifts_with_hours = tuple(hours for hours in covered if hours)
    if not shifts_with_hours:
        # Contractors are spread over the shifts: with none, nobody could be on duty.
        raise DataError(f"{path}: no shift covers any hour (a shift's hours are marked 1).")
    return shifts_with_hours


def shift_spans(hours: frozenset[int]) -> list[tuple[int, int]]:
    """A shift's hours as [start, end) spans within a day (a night shift may wrap midnight)."""
    spans: list[tuple[int, int]] = []
    for hour in sorted(hours):
        if spans and spans[-1][1] == hour:
            spans[-1] = (spans[-1][0], hour + 1)
        else:
            spans.append((hour, hour + 1))
    return spans


def on_duty_per_hour(shifts: Sequence[frozenset[int]], contractors: int) -> list[int]:
    """How many contractors work each hour when they are spread evenly over the shifts."""
    per_shift = [len(range(index, contractors, len(shifts))) for index in range(len(shifts))]
    return [sum(n for n, hours in zip(per_shift, shifts, strict=True) if hour in hours) for hour in range(24)]
