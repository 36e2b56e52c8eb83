"""``python manage.py bench_sla [--leads N] [--days D]``: timings of the SLA figures, the
stats API's serialization and the dashboard at N leads, in a throwaway database (see
:mod:`prioritization.sla_bench`). The last line printed is one JSON object."""

import json
from typing import Any

from django.core.management.base import CommandParser

from leads.management.arguments import OneLineErrorCommand, int_at_least, int_between
from prioritization.sla_bench import measure, run_sla_benchmark


class Command(OneLineErrorCommand):
    help = "Benchmark of the SLA figures and dashboard; the last line is one JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--leads", type=int_at_least(1), default=1_000_000, help="leads to create")
        parser.add_argument(
            "--days", type=int_between(1, 366), default=30, help="days the leads arrive over, 1 to 366"
        )
        # Internal: the child process that measures, already pointed at the throwaway database.
        parser.add_argument("--measure", action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        run = measure if options["measure"] else run_sla_benchmark
        result = run(leads=options["leads"], days=options["days"], write=self.stdout.write)
        self.stdout.write(json.dumps(result))
