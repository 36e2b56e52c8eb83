import json
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from leads.ingest_bench import run_ingest_benchmark
from leads.management.arguments import OneLineErrorCommand, errors_on_one_line, int_at_least, int_between
from prioritization.claim_bench import run_claim_benchmark


class Command(OneLineErrorCommand):
    help = "Benchmarks that print figures; the last line of output is one JSON object."

    def add_arguments(self, parser: CommandParser) -> None:
        # Sizes are checked by the parser, before the throwaway database is built and filled:
        # a 0 or a negative number otherwise failed minutes in, with a traceback.
        count = int_at_least(1)
        sub = parser.add_subparsers(dest="which", required=True)
        ingest = errors_on_one_line(sub.add_parser("ingest", help="raw COPY vs CLI import vs API batches"))
        ingest.add_argument("--rows", type=count, default=1_000_000)
        batch_max = settings.LEADRANK_API_BATCH_MAX
        ingest.add_argument(
            "--batch",
            type=int_between(1, batch_max, maximum_from="LEADRANK_API_BATCH_MAX"),
            # A default is not parsed: one above a lowered maximum would be refused by the API.
            default=min(10_000, batch_max),
            help=f"leads per API request, at most LEADRANK_API_BATCH_MAX ({batch_max})",
        )
        ingest.add_argument("--clients", type=count, default=2, help="concurrent API clients")
        ingest.add_argument("--workers", type=count, default=2, help="web server (granian) workers")
        claim = errors_on_one_line(
            sub.add_parser("claim", help="next-lead cycles under granian + wrk vs claim_limit.sh")
        )
        claim.add_argument("--leads", type=count, default=1_000_000, help="queued leads")
        claim.add_argument("--seconds", type=count, default=10, help="length of each load run")
        claim.add_argument(
            "--decay-claims", type=count, default=100_000, help="claim cycles of the no-decay run"
        )
        claim.add_argument(
            "--small-leads", type=count, default=10_000, help="queued leads of the small-queue p99 run"
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
            try:
                result = run_claim_benchmark(
                    leads=options["leads"],
                    seconds=options["seconds"],
                    decay_claims=options["decay_claims"],
                    small_leads=options["small_leads"],
                    write=self.stdout.write,
                )
            except RuntimeError as exc:
                # wrk missing, or a load tool that failed: the benchmark's own message.
                raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result))
