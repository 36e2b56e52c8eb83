"""Background work of the leads app: checking an uploaded admin file import (its preview),
running a confirmed one, failing jobs whose worker died and sending again those whose
message was lost.

The tasks are one more interface over :func:`leads.services.preview_import` and
:func:`leads.services.import_leads`: each takes the job's id, runs the service, and keeps the
:class:`~leads.models.ImportJob` row up to date (progress while it runs; the preview, or the
counts and the error report, when it ends). The admin runs them in the request for small
files.
"""

import datetime as dt
import io
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.core.files import File
from django.db import DataError, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from leads.importers import ImportFileError, LeadMapping
from leads.models import ImportJob, ImportStatus
from leads.services import import_leads, preview_import

logger = logging.getLogger(__name__)

# The preview kept on a job: rows shown "as they would be stored", and row errors listed
# (the rest are counted; the full list is in the error report after the import).
PREVIEW_SAMPLE_ROWS = 20
PREVIEW_ERROR_ROWS = 300
# A reason quotes the rejected value, which may be a whole oversized cell: the preview keeps
# this much of each (the error report after the import keeps all).
PREVIEW_REASON_CHARS = 300


@shared_task(acks_late=True)
def check_import_job(job_id: int) -> str:
    """Check an uploaded job's whole file without writing a lead and keep the preview on the
    job: ``checking`` → ``previewed``, or ``failed`` with the reason (and the file deleted)
    when the file cannot be read to its end.

    Only a job still ``checking`` is touched: one cancelled or deleted meanwhile is left as
    it is. A check begins with a conditional write of its first heartbeat, so a second copy
    of the message (sent again by the sweep, or redelivered) finds it begun, or the job
    previewed, and does nothing.
    """
    checking = ImportJob.objects.filter(pk=job_id, status=ImportStatus.CHECKING)
    if not checking.filter(heartbeat_at__isnull=True).update(processed_rows=0, heartbeat_at=timezone.now()):
        logger.info("import job %s is not waiting for its check; nothing to do", job_id)
        return "skipped"
    job = checking.first()
    if job is None:  # cancelled right after it began
        return "skipped"

    def on_progress(rows_done: int) -> None:
        checking.update(processed_rows=F("processed_rows") + rows_done, heartbeat_at=timezone.now())

    try:
        with _local_path(job.file) as path:
            preview = preview_import(
                path,
                mapping=LeadMapping.from_json(job.mapping),
                customer_id=job.customer_id,
                campaign_id=job.campaign_id,
                sample_rows=PREVIEW_SAMPLE_ROWS,
                error_rows=PREVIEW_ERROR_ROWS,
                on_progress=on_progress,
            )
        # Remembered for the confirmation too: the row count decides between importing in
        # the request and in the background, and gives the progress bar its 100%. In its own
        # atomic block, so that a caller's open transaction stays usable for failing the job
        # below if the preview cannot be stored.
        with transaction.atomic():
            stored = checking.update(
                status=ImportStatus.PREVIEWED,
                preview=preview.to_json(max_reason_chars=PREVIEW_REASON_CHARS),
                total_rows=preview.total_rows,
                processed_rows=0,
            )
    except DataError:
        # The parsers refuse NULs and lone surrogates in the header and in every value they
        # keep; text that still slips through must fail this one job, not the request.
        logger.exception("the preview of import job %s could not be stored", job_id)
        fail_check(
            job_id,
            "The file holds text the database cannot store (such as a NUL character or a lone "
            "UTF-16 surrogate), so its preview could not be kept. Remove it and upload the file again.",
        )
        return ImportStatus.FAILED
    except ImportFileError as exc:
        fail_check(job_id, str(exc))
        return ImportStatus.FAILED
    except OSError as exc:
        fail_check(job_id, f"The uploaded file could not be read: {exc.strerror or exc}.")
        return ImportStatus.FAILED
    except Exception:
        fail_check(
            job_id, "The check of the file stopped on an unexpected error (details are in the worker log)."
        )
        raise
    return ImportStatus.PREVIEWED if stored else "skipped"


def fail_check(job_id: int, reason: str, *, only_if: QuerySet[ImportJob] | None = None) -> int:
    """A job whose file could not be checked: failed with the reason, its file deleted
    (nothing was imported; the file is uploaded again once fixed). Only while the job is
    still checking (and, with ``only_if``, still in that queryset). Returns 1 when failed."""
    jobs = only_if if only_if is not None else ImportJob.objects.all()
    failed = jobs.filter(pk=job_id, status=ImportStatus.CHECKING).update(
        status=ImportStatus.FAILED, message=reason, finished_at=timezone.now(), preview=None
    )
    job = ImportJob.objects.filter(pk=job_id).first() if failed else None
    if job is not None:  # (unless deleted meanwhile, which removed the file)
        job.file.delete(save=False)
    return failed


def enqueue_check(job_id: int) -> None:
    """Send a job's check to the workers; meant to run from ``transaction.on_commit``. When
    the broker cannot be reached the job fails with a message instead of staying
    "checking" forever."""
    _send(job_id, check_import_job, fail_check)


@shared_task(acks_late=True)
def run_import_job(job_id: int) -> dict[str, int | str]:
    """Import a confirmed (queued) job's file and record the outcome on the job.

    Only a job in ``queued`` is run: the conditional UPDATE that moves it to ``running``
    makes a second delivery of the same message (acks_late redelivery, a double click
    that slipped through) a no-op instead of a second import.
    """
    now = timezone.now()
    started = ImportJob.objects.filter(pk=job_id, status=ImportStatus.QUEUED).update(
        status=ImportStatus.RUNNING, started_at=now, heartbeat_at=now, processed_rows=0
    )
    if not started:
        logger.info("import job %s is not queued; nothing to do", job_id)
        return {"job_id": job_id, "status": "skipped"}
    job = ImportJob.objects.get(pk=job_id)

    def on_progress(rows_done: int) -> None:
        # Called once per stored chunk, possibly from the import's writer thread (which
        # has its own connection): an atomic increment, never a read-modify-write.
        ImportJob.objects.filter(pk=job_id).update(
            processed_rows=F("processed_rows") + rows_done, heartbeat_at=timezone.now()
        )

    try:
        mapping = LeadMapping.from_json(job.mapping)
        # Text goes through a binary temporary file so that any storage backend can save it;
        # utf-8-sig so that spreadsheet programs open non-ASCII reasons correctly.
        with _local_path(job.file) as path, tempfile.TemporaryFile() as report_raw:
            report = io.TextIOWrapper(report_raw, encoding="utf-8-sig", newline="")
            try:
                summary = import_leads(
                    path,
                    mapping=mapping,
                    customer_id=job.customer_id,
                    campaign_id=job.campaign_id,
                    errors_out=report,
                    on_progress=on_progress,
                )
            finally:
                report.detach()  # flushes; the temporary file stays open for saving below
            report_name = ""
            if summary.rejected:
                report_raw.seek(0)
                report_name = job.error_report.storage.save(
                    f"imports/errors/import-{job_id}-errors.csv", File(report_raw)
                )
    except ImportFileError as exc:
        _fail(job_id, str(exc))
        return {"job_id": job_id, "status": ImportStatus.FAILED}
    except OSError as exc:
        _fail(job_id, f"The uploaded file could not be read: {exc.strerror or exc}.")
        return {"job_id": job_id, "status": ImportStatus.FAILED}
    except Exception:
        # Bookkeeping only, then re-raised for the worker's log: a job must never stay
        # "running" after its task died.
        _fail(job_id, "The import stopped on an unexpected error (details are in the worker log).")
        raise

    message = (
        f"{summary.total:,} rows: {summary.created:,} created, {summary.updated:,} updated, "
        f"{summary.rejected:,} rejected."
    )
    if summary.rejected:
        message += " The error report lists every rejected row."
    ImportJob.objects.filter(pk=job_id).update(
        status=ImportStatus.DONE,
        finished_at=timezone.now(),
        total_rows=summary.total,
        processed_rows=summary.total,
        created_count=summary.created,
        updated_count=summary.updated,
        rejected_count=summary.rejected,
        error_report=report_name,
        message=message,
    )
    return {
        "job_id": job_id,
        "status": ImportStatus.DONE,
        "total": summary.total,
        "created": summary.created,
        "updated": summary.updated,
        "rejected": summary.rejected,
    }


def enqueue_import_job(job_id: int) -> None:
    """Send the job to the workers; meant to run from ``transaction.on_commit``.

    When the broker cannot be reached the job is marked failed with a message instead of
    staying "queued" forever (the admin page would otherwise spin without end).
    """
    _send(job_id, run_import_job, _fail)


def _send(job_id: int, task: Task[[int], Any], fail: Callable[[int, str], int]) -> None:
    """Send ``task`` for the job and note when (``sent_at``), or fail the job with ``fail``
    when the broker cannot be reached."""
    ImportJob.objects.filter(pk=job_id).update(sent_at=timezone.now())
    try:
        task.delay(job_id)
    except BrokerError as exc:
        logger.exception("could not send %s for import job %s", task.name, job_id)
        fail(job_id, f"The background queue could not be reached ({exc}); upload the file again later.")


def _send_again(job_id: int, task: Task[[int], Any], *, still_waiting: QuerySet[ImportJob]) -> bool:
    """Send a waiting job's task again, noting when; nothing when a worker took the job
    meanwhile. A broker that cannot be reached fails nothing here: the first message may
    still be queued, and a later sweep tries again."""
    if not still_waiting.filter(pk=job_id).update(sent_at=timezone.now()):
        return False
    try:
        task.delay(job_id)
    except BrokerError:
        logger.warning("could not send %s for import job %s again", task.name, job_id, exc_info=True)
        return False
    return True


@shared_task
def sweep_import_jobs() -> dict[str, int]:
    """Beat task for the jobs whose worker went quiet for ``LEADRANK_IMPORT_STALL_MINUTES``.

    - A running import, or a check that began, with no sign of life for that long is
      failed: a killed or restarted worker process leaves its job "running", and a
      redelivered message does not restart a job that is not queued.
    - A job still waiting for a worker that long after its task was sent (a check not
      begun, a confirmed import still queued) is sent again: the broker may have lost the
      message (a Redis restarted without persistence does). Starting is conditional on the
      job's status, so whichever copy a worker takes first runs it and the others do
      nothing; a job that waits only because the workers are busy loses nothing, and one
      the broker refuses to take again waits for a later sweep.

    - Files of jobs ended ``LEADRANK_IMPORT_RETENTION_DAYS`` ago are removed
      (:func:`remove_expired_import_files`).

    Returns how many jobs were failed, how many sent again and how many lost their files.
    """
    minutes: int = settings.LEADRANK_IMPORT_STALL_MINUTES
    cutoff = timezone.now() - dt.timedelta(minutes=minutes)
    silence = (
        f"its background worker gave no sign of life for {minutes} minutes "
        "(the worker process was probably restarted or killed)"
    )
    failed = 0
    stalled = ImportJob.objects.filter(status=ImportStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    for job_id in stalled.values_list("pk", flat=True):
        # Only while it is still as found: a job that finished meanwhile keeps its result.
        failed += _fail(job_id, f"The import stopped: {silence}.", only_if=stalled)
    silent_checks = ImportJob.objects.filter(status=ImportStatus.CHECKING, heartbeat_at__lt=cutoff)
    for job_id in silent_checks.values_list("pk", flat=True):
        failed += fail_check(
            job_id, f"The check of the file stopped: {silence}. Upload the file again.", only_if=silent_checks
        )

    # (Jobs sent before sent_at existed count from their upload.)
    long_waiting = Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff)
    waiting = ImportJob.objects.filter(long_waiting).filter(
        Q(status=ImportStatus.CHECKING, heartbeat_at__isnull=True) | Q(status=ImportStatus.QUEUED)
    )
    sent = 0
    for job_id, status in waiting.values_list("pk", "status"):
        task = run_import_job if status == ImportStatus.QUEUED else check_import_job
        sent += _send_again(job_id, task, still_waiting=waiting)
    if failed:
        logger.warning("failed %s stalled import job(s)", failed)
    if sent:
        logger.warning(
            "sent %s import job(s) to the workers again: not taken in %s minutes "
            "(a lost message, or no worker running?)",
            sent,
            minutes,
        )
    removed = remove_expired_import_files(now=timezone.now())
    return {"failed": failed, "sent_again": sent, "files_removed": removed}


# Jobs whose files one sweep removes at most (the next sweep takes the rest).
RETENTION_BATCH = 500


def remove_expired_import_files(*, now: dt.datetime) -> int:
    """Remove the files of jobs that ended ``LEADRANK_IMPORT_RETENTION_DAYS`` ago: the upload
    and the error report hold customers' leads, and nothing reads them once a job has ended.
    A job previewed and never confirmed for that long is cancelled first (conditionally: one
    confirmed meanwhile keeps its file). The jobs stay, with their counts and message.
    Returns how many jobs' files were removed."""
    days: int = settings.LEADRANK_IMPORT_RETENTION_DAYS
    cutoff = now - dt.timedelta(days=days)
    unconfirmed = ImportJob.objects.filter(status=ImportStatus.PREVIEWED, created_at__lt=cutoff)
    cancelled = [
        job_id
        for job_id in unconfirmed.values_list("pk", flat=True)[:RETENTION_BATCH]
        if unconfirmed.filter(pk=job_id).update(
            status=ImportStatus.CANCELLED,
            finished_at=now,
            message=f"Not confirmed within {days} days: cancelled, nothing was written.",
            preview=None,
        )
    ]
    ended = ImportJob.objects.filter(
        ~Q(file="") | ~Q(error_report=""),
        status__in=(ImportStatus.DONE, ImportStatus.FAILED, ImportStatus.CANCELLED),
    ).filter(Q(finished_at__lt=cutoff) | Q(pk__in=cancelled))
    removed = 0
    for job in ended.order_by("pk")[:RETENTION_BATCH]:
        job.delete_files()
        # The files are gone whatever happens next; the fields say so (no dead link).
        removed += ImportJob.objects.filter(pk=job.pk).update(file="", error_report="")
    if removed:
        logger.info("removed the files of %s import job(s) ended over %s days ago", removed, days)
    return removed


def _fail(job_id: int, reason: str, *, only_if: QuerySet[ImportJob] | None = None) -> int:
    """Mark a job failed; says how many rows were already stored (chunks commit on their own).
    With ``only_if``, only while the job is still in that queryset. Returns 1 when marked."""
    processed = ImportJob.objects.filter(pk=job_id).values_list("processed_rows", flat=True).first() or 0
    message = reason
    if processed:
        message += (
            f" The valid rows among the first {processed:,} had already been stored; "
            "importing the file again is safe (rows are matched by external id)."
        )
    jobs = only_if if only_if is not None else ImportJob.objects.all()
    return jobs.filter(pk=job_id).update(
        status=ImportStatus.FAILED, finished_at=timezone.now(), message=message
    )


@contextmanager
def _local_path(field_file: FieldFile) -> Iterator[Path]:
    """A local path to a stored file: the file itself on the file system storage, a
    temporary copy on storages without paths (object stores)."""
    try:
        local: Path | None = Path(field_file.path)
    except NotImplementedError:
        local = None
    if local is not None:
        yield local
        return
    suffix = Path(field_file.name or "").suffix
    with field_file.open("rb") as source, tempfile.NamedTemporaryFile(suffix=suffix) as copy:
        shutil.copyfileobj(source, copy)
        copy.flush()
        yield Path(copy.name)
