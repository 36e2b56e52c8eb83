import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from leads.ingest_bench import run_ingest_benchmark
from prioritization.claim_bench import run_claim_benchmark


class Command(BaseCommand):
    help = "Benchmarks that print figures; the last line of output is one JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="which", required=True)
        ingest = sub.add_parser("ingest", help="raw COPY vs CLI import vs API batches")
        ingest.add_argument("--rows", type=int, default=1_000_000)
        ingest.add_argument("--batch", type=int, default=10_000, help="leads per API request")
        ingest.add_argument("--clients", type=int, default=2, help="concurrent API clients")
        ingest.add_argument("--workers", type=int, default=2, help="web server (granian) workers")
        claim = sub.add_parser("claim", help="next-lead cycles under granian + wrk vs claim_limit.sh")
        claim.add_argument("--leads", type=int, default=1_000_000, help="queued leads")
        claim.add_argument("--seconds", type=int, default=10, help="length of each load run")
        claim.add_argument(
            "--decay-claims", type=int, default=100_000, help="claim cycles of the no-decay run"
        )
        claim.add_argument(
            "--small-leads", type=int, default=10_000, help="queued leads of the small-queue p99 run"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["which"] == "ingest":
            result = run_ingest_benchmark(
                rows=options["rows"],
                batch=options["batch"],
                clients=options["clients"],
                workers=options["workers"],
                write=self.stdout.write,
            )
        else:
            result = run_claim_benchmark(
                leads=options["leads"],
                seconds=options["seconds"],
                decay_claims=options["decay_claims"],
                small_leads=options["small_leads"],
                write=self.stdout.write,
            )
        self.stdout.write(json.dumps(result))
