import json
from typing import Any

from django.core.management.base import CommandParser

from leads.management.arguments import OneLineErrorCommand, int_at_least
from prioritization.metrics_bench import run_metrics_benchmark


class Command(OneLineErrorCommand):
    help = (
        "Measure what metrics and alerts cost: recording a next-lead answer, django-prometheus' "
        "middleware, a /metrics scrape and an alert evaluation over N leads (throwaway database). "
        "The last line is one JSON object."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        count = int_at_least(1)
        parser.add_argument("--leads", type=count, default=1_000_000, help="Leads in the throwaway database.")
        parser.add_argument("--calls", type=count, default=200_000, help="Next-lead answers recorded.")
        parser.add_argument("--requests", type=count, default=2_000, help="Requests per middleware round.")
        parser.add_argument("--scrapes", type=count, default=10, help="Scrapes and alert evaluations timed.")

    def handle(self, *args: Any, leads: int, calls: int, requests: int, scrapes: int, **options: Any) -> None:
        figures = run_metrics_benchmark(
            leads=leads, calls=calls, requests=requests, scrapes=scrapes, write=self.stdout.write
        )
        self.stdout.write(json.dumps(figures))
