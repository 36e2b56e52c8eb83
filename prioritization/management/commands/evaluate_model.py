"""`manage.py evaluate_model`: how good the learned model is, next to the alternatives.

    evaluate_model --customer-id N             a customer's outcomes in the database
    evaluate_model --file PATH --target COL --features A,B [--order-by COL]
                   [--customer-column COL] [--empty-values Select] [--weights W.json] [--json]
    evaluate_model --bench-training N          training time on N synthetic outcomes

Each fits the learned, gradient-boosting and pooled models on the older 80% of outcomes
and compares them, and the manual weights, on the newest 20%. Nothing is stored.
"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from leads.management.arguments import OneLineErrorCommand, float_between, int_at_least
from prioritization.evaluation import (
    Comparison,
    EvaluationInputError,
    comparison_json,
    comparison_lines,
    evaluate_file,
)
from prioritization.learning import DEFAULT_SETTINGS, LearningError, LearningSettings
from prioritization.training import evaluate_customer, window_days_error

_FILE_ONLY = ("target", "features", "order_by", "customer_column", "empty_values", "weights")


class Command(OneLineErrorCommand):
    help = (
        "Compare the learned model with gradient boosting, a pooled model and the manual weights on a "
        "time-ordered holdout (AUC, log loss, lift, reliability), for a customer or a file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--customer-id", type=int, help="evaluate on this customer's outcomes")
        source.add_argument("--file", type=Path, help="CSV, XLSX, XLS or ODS of past leads (not imported)")
        source.add_argument(
            "--bench-training",
            type=int_at_least(1000),
            metavar="OUTCOMES",
            help="time a full training run on this many synthetic outcomes (at least 1,000) "
            "in a throwaway database",
        )
        parser.add_argument("--target", help="the outcome column: 1/0, true/false or yes/no")
        parser.add_argument("--features", help="comma-separated feature columns")
        parser.add_argument("--order-by", help="the column that orders rows in time (default: file order)")
        parser.add_argument("--customer-column", help="the column naming each row's customer")
        parser.add_argument("--empty-values", default="", help='values that mean "empty", e.g. Select')
        parser.add_argument("--weights", type=Path, help='manual weights: {"column": {"value": weight}}')
        parser.add_argument("--encoding", default="utf-8", help="of a CSV file (default utf-8)")
        parser.add_argument("--window-days", type=int, help="database outcomes of leads this many days old")
        parser.add_argument(
            "--holdout-share",
            type=float_between(0, 1, above=True, below=True),
            default=DEFAULT_SETTINGS.holdout_share,
            help="share of the newest outcomes held out, greater than 0 and less than 1 "
            f"(default {DEFAULT_SETTINGS.holdout_share})",
        )
        parser.add_argument("--json", action="store_true", help="end with one line of JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        share = options["holdout_share"]
        if error := window_days_error(options["window_days"]):
            raise CommandError(error)
        settings = LearningSettings(holdout_share=share)
        if options["window_days"] is not None and options["customer_id"] is None:
            # A file's rows are all used, and the training benchmark makes its own outcomes.
            raise CommandError("--window-days applies to --customer-id only.")
        try:
            if options["file"] is not None:
                comparison = self._file(options, settings)
            else:
                for name in _FILE_ONLY:
                    if options[name]:
                        raise CommandError(f"--{name.replace('_', '-')} applies to --file only.")
                if options["bench_training"] is not None:
                    self._bench(options["bench_training"])
                    return
                comparison = self._customer(options, settings)
        except (EvaluationInputError, LearningError) as exc:
            raise CommandError(str(exc)) from None
        for line in comparison_lines(comparison):
            self.stdout.write(line)
        if options["json"]:
            self.stdout.write(comparison_json(comparison))

    def _file(self, options: dict[str, Any], settings: LearningSettings) -> Comparison:
        if not options["target"] or not options["features"]:
            raise CommandError("--file needs --target COLUMN and --features A,B,C.")
        weights = None
        if options["weights"] is not None:
            try:
                weights = json.loads(options["weights"].read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise CommandError(
                    f"--weights {options['weights']}: not a readable JSON file ({exc})."
                ) from None
        path: Path = options["file"]
        comparison = evaluate_file(
            path,
            target=options["target"],
            features=options["features"].split(","),
            order_by=options["order_by"],
            customer_column=options["customer_column"],
            empty_values=[v for v in options["empty_values"].split(",") if v.strip()],
            weights=weights,
            encoding=options["encoding"],
            settings=settings,
        )
        details = comparison.details
        order = f"{details['order_by']!r} order" if details["order_by"] else "file order"
        customers = (
            f"; customers from {details['customer_column']!r}: {details['customers']}"
            if details["customer_column"]
            else ""
        )
        self.stdout.write(
            f"{details['source']}: {comparison.rows} rows; trained on the oldest {comparison.train_rows}, "
            f"tested on the newest {comparison.holdout_rows} ({order}){customers}"
        )
        binned = f" (binned: {', '.join(details['binned'])})" if details["binned"] else ""
        self.stdout.write(
            f"features: {', '.join(details['features'])}{binned}; target: {details['target']!r}"
        )
        return comparison

    def _customer(self, options: dict[str, Any], settings: LearningSettings) -> Comparison:
        evaluation = evaluate_customer(
            customer_id=options["customer_id"], window_days=options["window_days"], learning=settings
        )
        self.stdout.write(
            f"customer {evaluation.customer.pk} ({evaluation.customer.name}): {evaluation.customer_outcomes} "
            f"outcomes of {evaluation.outcomes} in the window ({evaluation.window_start:%Y-%m-%d} to "
            f"{evaluation.window_end:%Y-%m-%d}); tested on its {evaluation.holdout_rows} among the newest "
            f"{settings.holdout_share:.0%} of all outcomes"
        )
        overall = evaluation.overall
        self.stdout.write(
            "every customer's holdout: "
            + ", ".join(f"{name} AUC {m.auc:.4f}" for name, m in overall.items() if m.auc is not None)
        )
        return Comparison(
            rows=evaluation.customer_outcomes,
            train_rows=evaluation.train_rows,
            holdout_rows=evaluation.holdout_rows,
            metrics=evaluation.metrics,
            fit_seconds=evaluation.fit_seconds,
            details={"customer_id": evaluation.customer.pk, "manual": "the customer's policy in force"},
        )

    def _bench(self, outcomes: int) -> None:
        from prioritization.model_bench import run_training_benchmark

        result = run_training_benchmark(outcomes=outcomes, write=self.stdout.write)
        self.stdout.write(json.dumps(result))
