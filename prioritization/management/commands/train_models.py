"""`manage.py train_models`: train and store the learned models now (what beat does daily)."""

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prioritization.models import TrainingTrigger
from prioritization.training import train_models, window_days_error


class Command(BaseCommand):
    help = (
        "Fit the pooled and per-customer conversion models on recent outcomes, store them as new model "
        "versions and point learned and blended policies at them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--window-days", type=int, help="outcomes of leads created this many days back")
        parser.add_argument("--json", action="store_true", help="end with the summary as one line of JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        window = options["window_days"]
        if error := window_days_error(window):
            raise CommandError(error)
        summary = train_models(trigger=TrainingTrigger.COMMAND, window_days=window)
        if summary.skipped:
            # Not a failure: the run under way (beat's, the admin's) stores the new versions.
            self.stdout.write(summary.reason)
        elif summary.reason and not summary.model_version_ids:
            raise CommandError(summary.reason)
        else:
            self.stdout.write(
                f"{len(summary.model_version_ids)} model versions trained on {summary.outcomes} outcomes of "
                f"{summary.customers} customers; {len(summary.policy_version_ids)} learned policies updated; "
                f"{summary.seconds.get('total', 0.0):.1f} s ("
                + ", ".join(
                    f"{step} {seconds:.1f} s" for step, seconds in summary.seconds.items() if step != "total"
                )
                + ")"
            )
        if options["json"]:
            self.stdout.write(json.dumps(asdict(summary)))
