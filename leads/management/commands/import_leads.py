import json
import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from leads.importers import ImportFileError, LeadMapping
from leads.services import estimate_rows, import_leads, open_import


class Command(BaseCommand):
    help = (
        "Import leads from a CSV, XLSX, XLS or ODS file of any size. Rows that fail validation "
        "are skipped and written to an error report; the exit status is 0 when the file was "
        "processed, 1 (with one readable line) when it could not be processed at all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--customer-id", type=int, help="Customer of every row (when the file has no column)."
        )
        parser.add_argument(
            "--campaign-id", type=int, help="Campaign of every row (when the file has no column)."
        )
        parser.add_argument("--mapping", type=Path, help="JSON mapping of file columns to lead fields.")
        parser.add_argument(
            "--errors",
            type=Path,
            help="Where to write rejected rows (default: PATH.errors.csv next to the file).",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        mapping = self._mapping(options["mapping"])
        errors_path: Path = options["errors"] or path.with_name(path.name + ".errors.csv")
        try:
            table, _ = open_import(
                path, mapping=mapping, customer_id=options["customer_id"], campaign_id=options["campaign_id"]
            )
            total = estimate_rows(path, table)
            started = time.perf_counter()
            with (
                errors_path.open("w", newline="", encoding="utf-8") as errors_out,
                tqdm(
                    total=total,
                    unit="rows",
                    disable=options["no_progress"],
                    file=sys.stderr,
                    dynamic_ncols=True,
                ) as bar,
            ):
                summary = import_leads(
                    path,
                    mapping=mapping,
                    customer_id=options["customer_id"],
                    campaign_id=options["campaign_id"],
                    errors_out=errors_out,
                    on_progress=bar.update,
                )
        except ImportFileError as exc:
            raise CommandError(f"{path.name}: {exc}") from None
        except OSError as exc:
            raise CommandError(f"{path.name}: cannot read or write a file: {exc.strerror}") from None
        seconds = time.perf_counter() - started
        if summary.rejected == 0:
            errors_path.unlink(missing_ok=True)
        self.stdout.write(
            f"{path.name}: {summary.total} rows in {seconds:.1f} s "
            f"({summary.total / max(seconds, 1e-9):,.0f} rows/s): "
            f"{summary.created} created, {summary.updated} updated, {summary.rejected} rejected"
        )
        if summary.rejected:
            self.stdout.write(f"Rejected rows (row, column, reason) are listed in {errors_path}")

    def _mapping(self, mapping_path: Path | None) -> LeadMapping:
        if mapping_path is None:
            return LeadMapping()
        try:
            data = json.loads(mapping_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"Cannot read the mapping {mapping_path}: {exc.strerror}") from None
        except ValueError as exc:
            raise CommandError(f"The mapping {mapping_path} is not valid JSON: {exc}") from None
        try:
            return LeadMapping.from_json(data)
        except ImportFileError as exc:
            raise CommandError(f"The mapping {mapping_path}: {exc}") from None
