"""``python manage.py rollup_sla [--from DAY --to DAY]``: compute the daily SLA rollups now.

Without a range it does what the beat task does. With one it recomputes those UTC days,
e.g. after leads were imported with a ``created_at`` older than the days the task refreshes.
"""

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from leads.importers import DAY_RANGE_ERROR, day_in_range
from prioritization.sla import days_between, rollup_sla


def _day(value: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a day; write it as YYYY-MM-DD.") from None
    if not day_in_range(day):
        raise CommandError(f"{value}: {DAY_RANGE_ERROR}")
    return day


class Command(BaseCommand):
    help = "Compute the daily SLA rollups (the beat task's work), or recompute a range of UTC days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", help="First UTC day to recompute (YYYY-MM-DD).")
        parser.add_argument("--to", dest="end", help="Last UTC day to recompute (default: --from).")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        if options["start"] is None:
            if options["end"] is not None:
                raise CommandError("--to needs --from.")
            summary = rollup_sla(now=now, wait=True)
        else:
            start = _day(options["start"])
            end = _day(options["end"]) if options["end"] is not None else start
            if start > end:
                raise CommandError(f"--from {start} is after --to {end}.")
            # Waits for a running beat rollup instead of skipping: the operator asked for it.
            summary = rollup_sla(now=now, days=days_between(start, end), wait=True)
        self.stdout.write(
            f"Rolled up {summary.days} day(s): {summary.customer_days} customer-day(s), "
            f"{summary.rows} campaign row(s). Days still open (deadlines ahead) are left to live figures."
        )
