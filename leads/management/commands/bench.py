import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

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
        # Checked before the throwaway database is built and filled: a 0 or a negative
        # number otherwise failed minutes in, with a traceback.
        counts = (
            ("rows", "batch", "clients", "workers")
            if options["which"] == "ingest"
            else ("leads", "seconds", "decay_claims", "small_leads")
        )
        for name in counts:
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {options[name]}.")
        if options["which"] == "ingest" and options["batch"] > settings.LEADRANK_API_BATCH_MAX:
            raise CommandError(
                f"--batch must be at most {settings.LEADRANK_API_BATCH_MAX} (LEADRANK_API_BATCH_MAX), "
                f"got {options['batch']}."
            )
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
