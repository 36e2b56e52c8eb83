import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from leads.ids import MAX_ID
from leads.importers import ImportFileError, LeadMapping, Table
from leads.management.termination import sigterm_as_ctrl_c
from leads.models import Campaign, Customer
from leads.services import estimate_rows, import_leads


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
        with sigterm_as_ctrl_c():  # a stopped import removes its half-written error report
            self._import(options)

    def _import(self, options: dict[str, Any]) -> None:
        path: Path = options["path"]
        if path.is_dir():
            raise CommandError(f"{path} is a directory; name the file to import.")
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        mapping = self._mapping(options["mapping"])
        customer_id, campaign_id = options["customer_id"], options["campaign_id"]
        _check_given(_given(mapping, "customer_id", customer_id), _given(mapping, "campaign_id", campaign_id))
        errors_path: Path = options["errors"] or path.with_name(path.name + ".errors.csv")
        if errors_path.resolve() == path.resolve():
            raise CommandError(f"--errors {errors_path} is the file being imported; name another file.")
        # Checked before any row is stored: the report is moved there only at the end, when a
        # failure would come after the import and leave the report hidden beside it.
        if errors_path.is_dir():
            raise CommandError(f"--errors {errors_path} is a directory; name the report file.")
        if errors_path.exists() and not errors_path.is_file():
            # The report replaces the file at the end: /dev/null (as root) became a file.
            raise CommandError(
                f"--errors {errors_path} is not a regular file (a device or a pipe); name a file."
            )
        if errors_path.is_symlink():
            errors_path = errors_path.resolve()  # the report goes where the link points
        stored = 0

        def progress(rows: int) -> None:
            nonlocal stored
            stored += rows
            bar.update(rows)

        # The report is written beside its final name and moved there only when the import
        # ends with rejected rows: a failed run leaves no half-written or empty report.
        report = _temporary_beside(errors_path)
        try:
            with report.open("w", newline="", encoding="utf-8") as errors_out:
                started = time.perf_counter()
                with tqdm(
                    unit="rows",
                    disable=options["no_progress"],
                    file=sys.stderr,
                    dynamic_ncols=True,
                ) as bar:

                    def sized(table: Table) -> None:
                        bar.total = estimate_rows(path, table)
                        bar.refresh()

                    # The file is opened (and its encoding checked, every byte) once, by the
                    # import itself.
                    summary = import_leads(
                        path,
                        mapping=mapping,
                        customer_id=customer_id,
                        campaign_id=campaign_id,
                        errors_out=errors_out,
                        on_progress=progress,
                        on_opened=sized,
                    )
        except (ImportFileError, OSError) as exc:
            report.unlink(missing_ok=True)
            reason = (
                str(exc)
                if isinstance(exc, ImportFileError)
                else f"cannot read or write a file: {exc.strerror}"
            )
            if stored:
                reason += (
                    f" The valid rows among the first {stored:,} were already stored; importing the "
                    "fixed file again is safe (rows are matched by external id)."
                )
            raise CommandError(f"{path.name}: {reason}") from None
        except BaseException:
            report.unlink(missing_ok=True)
            raise
        unplaced = None
        if summary.rejected:
            try:
                shutil.move(report, errors_path)  # a rename, unless the report is in the temp folder
            except OSError as exc:
                # The rows are stored: the report stays where it was written, and the exit
                # status says the run did not end as asked.
                unplaced = (
                    f"Cannot move the error report to {errors_path} ({exc.strerror}); it is in {report}."
                )
                errors_path = report
        else:
            report.unlink()
        seconds = time.perf_counter() - started
        self.stdout.write(
            f"{path.name}: {summary.total} rows in {seconds:.1f} s "
            f"({summary.total / max(seconds, 1e-9):,.0f} rows/s): "
            f"{summary.created} created, {summary.updated} updated, {summary.rejected} rejected"
        )
        if summary.rejected:
            self.stdout.write(f"Rejected rows (row, column, reason) are listed in {errors_path}")
        if unplaced:
            raise CommandError(unplaced)

    def _mapping(self, mapping_path: Path | None) -> LeadMapping:
        if mapping_path is None:
            return LeadMapping()
        try:
            data = json.loads(mapping_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"Cannot read the mapping {mapping_path}: {exc.strerror}") from None
        except ValueError as exc:
            raise CommandError(f"The mapping {mapping_path} is not valid JSON: {exc}") from None
        except RecursionError:
            raise CommandError(
                f"The mapping {mapping_path} is not valid JSON: it is nested too deeply."
            ) from None
        try:
            return LeadMapping.from_json(data)
        except ImportFileError as exc:
            raise CommandError(f"The mapping {mapping_path}: {exc}") from None


class _Given(NamedTuple):
    id: int | None
    by: str  # what gave it, for the message


def _given(mapping: LeadMapping, name: str, option: int | None) -> _Given:
    """The id every row gets: the mapping's constant, which wins over the option (as when
    the columns are planned), else the option."""
    constant = mapping.constants.get(name)
    if constant is not None:
        return _Given(int(constant.strip()), f"The mapping's constant {name}")  # digits: from_json checked
    return _Given(option, f"--{name.replace('_', '-')}")


def _check_given(customer: _Given, campaign: _Given) -> None:
    """The customer and campaign given for every row (by an option or a mapping constant)
    exist and go together: one typo is one line, not a rejected row per line of the file."""
    found = None
    if customer.id is not None:
        found = Customer.objects.filter(pk=customer.id).first() if 0 < customer.id <= MAX_ID else None
        if found is None:
            raise CommandError(f"{customer.by} {customer.id}: there is no such customer.")
    if campaign.id is not None:
        campaign_row = Campaign.objects.filter(pk=campaign.id).first() if 0 < campaign.id <= MAX_ID else None
        if campaign_row is None:
            raise CommandError(f"{campaign.by} {campaign.id}: there is no such campaign.")
        if found is not None and campaign_row.customer_id != found.pk:
            raise CommandError(
                f"{campaign.by} {campaign.id} belongs to customer {campaign_row.customer_id}, not to "
                f"customer {found.pk}."
            )


def _temporary_beside(final: Path) -> Path:
    """A new empty file in ``final``'s folder, to be renamed to it once complete; in the
    temporary folder when that folder takes no file (a read-only one: an import with no row
    rejected writes no report there, and must not fail for it)."""
    try:
        handle, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    except OSError as beside:
        try:
            handle, name = tempfile.mkstemp(prefix=f"{final.name}.", suffix=".part")
        except OSError:
            raise CommandError(
                f"Cannot write the error report in {final.parent}: {beside.strerror}"
            ) from None
    os.close(handle)
    return Path(name)
