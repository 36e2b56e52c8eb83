"""``python manage.py bench_sla [--leads N] [--days D]``: timings of the SLA figures, the
stats API's serialization and the dashboard at N leads, in a throwaway database (see
:mod:`prioritization.sla_bench`). The last line printed is one JSON object."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prioritization.sla_bench import measure, run_sla_benchmark


class Command(BaseCommand):
    help = "Benchmark of the SLA figures and dashboard; the last line is one JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--leads", type=int, default=1_000_000, help="leads to create")
        parser.add_argument("--days", type=int, default=30, help="days the leads arrive over")
        # Internal: the child process that measures, already pointed at the throwaway database.
        parser.add_argument("--measure", action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["leads"] < 1 or not 1 <= options["days"] <= 366:
            raise CommandError("--leads must be at least 1 and --days between 1 and 366.")
        run = measure if options["measure"] else run_sla_benchmark
        result = run(leads=options["leads"], days=options["days"], write=self.stdout.write)
        self.stdout.write(json.dumps(result))
