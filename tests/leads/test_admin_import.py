"""The admin's file import: upload → preview → confirm → background run → summary."""

import csv
import datetime as dt
import io
import json
import os
import re
import struct
import zipfile
from pathlib import Path

import openpyxl
import pytest
import xlwt
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from kombu.exceptions import OperationalError as BrokerError

from leads import tasks as tasks_module
from leads.importers import LeadMapping
from leads.models import ImportJob, ImportStatus, Lead, LeadType
from leads.services import ImportPreview, preview_import
from leads.tasks import (
    _fail,
    check_import_job,
    enqueue_check,
    enqueue_import_job,
    fail_check,
    remove_expired_import_files,
    run_import_job,
    sweep_import_jobs,
)
from tests.factories import CampaignFactory, CustomerFactory, LeadFactory

UPLOAD_URL = reverse("admin:leads_importjob_upload")
EXAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "examples" / "x_education_mapping.json"
HEADER = ["external_id", "customer_id", "campaign_id", "lead_type", "city", "created_at"]


@pytest.fixture
def csv_cells_up_to_100k():
    """A CSV syntax error met after the first rows: the csv module's cell limit, lowered for
    the test (leads.importers raises it, so that an oversized cell is only its row's error)."""
    previous = csv.field_size_limit(100_000)
    yield
    csv.field_size_limit(previous)


@pytest.fixture(autouse=True)
def sent_to_broker(monkeypatch) -> list[int]:
    """Job ids handed to Celery. Nothing reaches a real broker from these tests (the
    filesystem broker of `make run` would otherwise collect their messages); the task
    itself is run by calling it."""
    sent: list[int] = []
    monkeypatch.setattr(run_import_job, "delay", sent.append)
    return sent


@pytest.fixture(autouse=True)
def checks_sent(monkeypatch) -> list[int]:
    """Job ids whose check was handed to Celery (as ``sent_to_broker``, for checks)."""
    sent: list[int] = []
    monkeypatch.setattr(check_import_job, "delay", sent.append)
    return sent


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    """Uploads and error reports go to a throwaway folder, not the project's var/media."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored_files(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


def csv_bytes(rows: list[list[object]], header: list[str] = HEADER) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def xlsx_bytes(rows: list[list[object]], header: list[str] = HEADER) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def xls_bytes(rows: list[list[object]], header: list[str] = HEADER) -> bytes:
    workbook = xlwt.Workbook()
    sheet = workbook.add_sheet("Leads")
    for row_index, row in enumerate([header, *rows]):
        for column_index, value in enumerate(row):
            sheet.write(row_index, column_index, value)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def upload(client, name: str, content: bytes, **fields: object):
    data = {"file": SimpleUploadedFile(name, content), **{k: v for k, v in fields.items() if v is not None}}
    return client.post(UPLOAD_URL, data)


def job_from(response) -> ImportJob:
    assert response.status_code == 302, response.content.decode()[:2000]
    job = ImportJob.objects.get()
    assert response.url == reverse("admin:leads_importjob_preview", kwargs={"job_id": job.pk})
    return job


def preview_url(job: ImportJob) -> str:
    return reverse("admin:leads_importjob_preview", kwargs={"job_id": job.pk})


def progress_url(job: ImportJob) -> str:
    return reverse("admin:leads_importjob_progress", kwargs={"job_id": job.pk})


def error_report_rows(client, job: ImportJob) -> list[list[str]]:
    response = client.get(reverse("admin:leads_importjob_error_report", kwargs={"job_id": job.pk}))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


# --- Happy paths ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_csv_import_previews_errors_then_runs_in_the_background_after_confirmation(
    admin_client, settings, django_capture_on_commit_callbacks
):
    settings.LEADRANK_IMPORT_INLINE_ROWS = 0  # every file goes to Celery
    customer = CustomerFactory(pricing_plan="pro")
    campaign = CampaignFactory(customer=customer)
    foreign_campaign = CampaignFactory()
    LeadFactory(customer=customer, campaign=campaign, external_id="B", city="Old")
    content = csv_bytes(
        [
            ["A", customer.pk, campaign.pk, "live", "Pune", "2026-11-24T08:00:00Z"],
            ["B", customer.pk, campaign.pk, "stale", "Goa", ""],
            ["C", customer.pk, campaign.pk, "warm", "Pune", ""],
            ["D", customer.pk, foreign_campaign.pk, "live", "", ""],
            ["E", customer.pk, campaign.pk, "live", "", "yesterday"],
        ]
    )

    job = job_from(upload(admin_client, "leads.csv", content))
    assert job.status == ImportStatus.PREVIEWED
    assert Lead.objects.count() == 1  # nothing written by the upload

    preview = admin_client.get(preview_url(job))
    assert preview.status_code == 200
    summary = preview.context["preview"]
    assert (summary.total_rows, summary.valid_rows, summary.rejected_rows) == (5, 2, 3)
    assert [(e.row, e.column) for e in summary.errors] == [
        (4, "lead_type"),
        (5, "campaign_id"),
        (6, "created_at"),
    ]
    page = preview.content.decode()
    assert "&#x27;warm&#x27; is not one of: live, stale." in page
    assert "belongs to customer" in page
    assert "Confirm: import 2 rows in the background" in page
    assert [row[0] for row in preview.context["sample"]] == ["A", "B"]
    assert Lead.objects.count() == 1  # nor by the preview

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        confirmed = admin_client.post(preview_url(job), {"confirm": "1"})
    assert confirmed.status_code == 302
    assert confirmed.url == progress_url(job)
    assert len(callbacks) == 1
    assert callbacks[0].func is enqueue_import_job
    assert callbacks[0].args == (job.pk,)
    job.refresh_from_db()
    assert job.status == ImportStatus.QUEUED
    assert job.total_rows == 5

    queued_page = admin_client.get(progress_url(job))
    assert '<meta http-equiv="refresh"' in queued_page.content.decode()

    assert run_import_job(job.pk)["status"] == ImportStatus.DONE

    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    assert (job.created_count, job.updated_count, job.rejected_count) == (1, 1, 3)
    assert (job.total_rows, job.processed_rows, job.progress_percent) == (5, 5, 100)
    assert (
        job.message == "5 rows: 1 created, 1 updated, 3 rejected. The error report lists every rejected row."
    )
    assert job.started_at is not None
    assert job.finished_at is not None
    stored = {lead.external_id: lead for lead in Lead.objects.all()}
    assert set(stored) == {"A", "B"}
    assert (stored["A"].city, stored["A"].pricing_plan, stored["A"].lead_type) == ("Pune", "pro", "live")
    assert (stored["B"].city, stored["B"].lead_type) == ("Goa", "stale")

    done_page = admin_client.get(progress_url(job))
    text = done_page.content.decode()
    assert '<meta http-equiv="refresh"' not in text
    assert 'class="created-count">1<' in text
    assert 'class="updated-count">1<' in text
    assert 'class="rejected-count">3<' in text
    assert "error-report-link" in text
    rows = error_report_rows(admin_client, job)
    assert rows[0] == ["row", "column", "reason"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("4", "lead_type"), ("5", "campaign_id"), ("6", "created_at")]


@pytest.mark.django_db
def test_an_xlsx_file_with_the_customer_and_campaign_chosen_on_the_form_is_imported_in_the_request(
    admin_client, django_capture_on_commit_callbacks
):
    customer = CustomerFactory(pricing_plan="enterprise")
    campaign = CampaignFactory(customer=customer)
    header = ["External ID", "Lead Type", "City", "Last Activity"]
    content = xlsx_bytes(
        [
            ["X-1", "Live", "Pune", "2026-11-20T10:00:00Z"],
            [660737, "stale", "Goa", ""],
            ["X-3", "", "Delhi", ""],
        ],
        header=header,
    )

    job = job_from(upload(admin_client, "leads.xlsx", content, campaign=campaign.pk))
    assert (job.customer_id, job.campaign_id) == (customer.pk, campaign.pk)  # customer follows the campaign

    preview = admin_client.get(preview_url(job))
    assert preview.context["preview"].file_format == "xlsx"
    assert [(e.row, e.column, e.reason) for e in preview.context["preview"].errors] == [
        (4, "Lead Type", "This field is required.")
    ]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        confirmed = admin_client.post(preview_url(job), {"confirm": "1"})
    assert confirmed.url == progress_url(job)
    assert callbacks == []  # small file: no Celery round trip

    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    assert (job.created_count, job.updated_count, job.rejected_count) == (2, 0, 1)
    leads = {lead.external_id: lead for lead in Lead.objects.all()}
    assert set(leads) == {"X-1", "660737"}
    assert leads["X-1"].campaign_id == campaign.pk
    assert leads["X-1"].pricing_plan == "enterprise"
    assert leads["X-1"].last_activity.isoformat() == "2026-11-20T10:00:00+00:00"
    assert error_report_rows(admin_client, job)[1][:2] == ["4", "Lead Type"]


@pytest.mark.django_db
def test_an_xls_file_is_previewed_and_imported(admin_client):
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    content = xls_bytes(
        [
            ["L-1", customer.pk, campaign.pk, "live", "Pune", ""],
            ["L-2", customer.pk, campaign.pk, "stale", "Goa", "2026-01-01T00:00:00Z"],
            ["L-3", customer.pk, 999_999, "stale", "", ""],
        ]
    )

    job = job_from(upload(admin_client, "leads.xls", content))
    preview = admin_client.get(preview_url(job)).context["preview"]
    assert (preview.file_format, preview.total_rows, preview.valid_rows) == ("xls", 3, 2)
    assert [(e.row, e.column, e.reason) for e in preview.errors] == [
        (4, "campaign_id", "Unknown campaign 999999.")
    ]

    admin_client.post(preview_url(job), {"confirm": "1"})

    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    assert (job.created_count, job.rejected_count) == (2, 1)
    assert sorted(Lead.objects.values_list("external_id", flat=True)) == ["L-1", "L-2"]


@pytest.mark.django_db
@pytest.mark.parametrize("as_file", [False, True], ids=["mapping-text", "mapping-file"])
def test_the_x_education_mapping_applies_columns_constants_and_empty_values(admin_client, as_file):
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    header = ["Prospect ID", "Lead Number", "Lead Origin", "Lead Source", "Last Activity", "City"]
    content = csv_bytes(
        [
            [
                "7927b2df-8bba-4d29-b9a2-b6e0beafe620",
                660737,
                "API",
                "Olark Chat",
                "Page Visited on Website",
                "Select",
            ],
            [
                "2a272436-5132-4136-86fa-dcc88c88f482",
                660728,
                "API",
                "Organic Search",
                "Email Opened",
                "Mumbai",
            ],
            ["", 660727, "Landing Page Submission", "Direct Traffic", "Email Opened", "Mumbai"],
        ],
        header=header,
    )
    mapping = EXAMPLE_MAPPING.read_text(encoding="utf-8")
    fields = (
        {"mapping_file": SimpleUploadedFile("mapping.json", mapping.encode())}
        if as_file
        else {"mapping_text": mapping}
    )

    job = job_from(
        upload(admin_client, "Leads.csv", content, customer=customer.pk, campaign=campaign.pk, **fields)
    )
    assert job.mapping["constants"] == {"lead_type": "stale"}

    preview = admin_client.get(preview_url(job))
    assert [(e.row, e.column) for e in preview.context["preview"].errors] == [(4, "Prospect ID")]
    first = preview.context["sample"][0]
    assert first[:4] == ["7927b2df-8bba-4d29-b9a2-b6e0beafe620", str(customer.pk), str(campaign.pk), "stale"]

    admin_client.post(preview_url(job), {"confirm": "1"})

    job.refresh_from_db()
    assert (job.status, job.created_count, job.rejected_count) == (ImportStatus.DONE, 2, 1)
    leads = {lead.external_id: lead for lead in Lead.objects.all()}
    chat = leads["7927b2df-8bba-4d29-b9a2-b6e0beafe620"]
    assert (chat.lead_type, chat.city, chat.source, chat.stage) == (
        LeadType.STALE,
        "",  # "Select" means empty
        "Olark Chat",
        "Page Visited on Website",
    )
    assert leads["2a272436-5132-4136-86fa-dcc88c88f482"].city == "Mumbai"


@pytest.mark.django_db(transaction=True)
def test_a_large_file_is_stored_by_the_writer_thread_with_progress_counted(
    admin_client, settings, sent_to_broker
):
    # More rows than one import chunk (20,000): chunks are stored by a writer thread on its
    # own connection, which only sees committed data, hence transaction=True.
    settings.LEADRANK_IMPORT_INLINE_ROWS = 0
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    rows = 20_500
    body = "".join(f"R{i},live\n" for i in range(rows))
    content = f"external_id,lead_type\n{body}R-bad,hot\n".encode()

    job = job_from(upload(admin_client, "big.csv", content, customer=customer.pk, campaign=campaign.pk))
    assert admin_client.get(preview_url(job)).context["preview"].total_rows == rows + 1
    admin_client.post(preview_url(job), {"confirm": "1"})  # commits, so the enqueue runs at once
    assert sent_to_broker == [job.pk]

    run_import_job(job.pk)

    job.refresh_from_db()
    assert job.status == ImportStatus.DONE, job.message
    assert (job.created_count, job.rejected_count, job.processed_rows) == (rows, 1, rows + 1)
    assert Lead.objects.count() == rows
    ImportJob.objects.all().delete()


@pytest.mark.django_db
def test_progress_is_counted_with_an_atomic_increment(admin_client, settings):
    settings.LEADRANK_IMPORT_INLINE_ROWS = 0
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    job = job_from(
        upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\nB,live\n", campaign=campaign.pk)
    )
    admin_client.get(preview_url(job))
    admin_client.post(preview_url(job), {"confirm": "1"})

    with CaptureQueriesContext(connection) as queries:
        run_import_job(job.pk)

    increments = [
        q["sql"] for q in queries if '"processed_rows" = ("leads_importjob"."processed_rows" + 2)' in q["sql"]
    ]
    assert len(increments) == 1


# --- Confirmation and cancellation ------------------------------------------------------------


@pytest.mark.django_db
def test_confirming_twice_enqueues_once(admin_client, settings, django_capture_on_commit_callbacks, campaign):
    settings.LEADRANK_IMPORT_INLINE_ROWS = 0
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    admin_client.get(preview_url(job))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        admin_client.post(preview_url(job), {"confirm": "1"})
        again = admin_client.post(preview_url(job), {"confirm": "1"}, follow=True)

    assert len(callbacks) == 1
    assert "already confirmed or cancelled" in again.content.decode()
    assert run_import_job(job.pk)["status"] == ImportStatus.DONE
    assert run_import_job(job.pk)["status"] == "skipped"  # a redelivered message does nothing
    assert Lead.objects.count() == 1


@pytest.mark.django_db
def test_cancelling_after_the_preview_writes_nothing_and_drops_the_file(admin_client, campaign, media_root):
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    assert len(stored_files(media_root)) == 1

    response = admin_client.post(preview_url(job), {"cancel": "1"}, follow=True)

    assert "was cancelled; nothing was written" in response.content.decode()
    job.refresh_from_db()
    assert job.status == ImportStatus.CANCELLED
    assert stored_files(media_root) == []
    assert Lead.objects.count() == 0
    assert admin_client.post(preview_url(job), {"confirm": "1"}).status_code == 302
    assert Lead.objects.count() == 0


@pytest.mark.django_db
def test_a_file_with_no_valid_row_offers_no_confirmation(admin_client, campaign):
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,hot\n", campaign=campaign.pk))
    page = admin_client.get(preview_url(job)).content.decode()
    assert "No row of this file is valid." in page
    assert 'name="confirm"' not in page


# --- Large files: checked in the background -------------------------------------------------


def checking_page(client, job: ImportJob) -> str:
    response = client.get(preview_url(job))
    assert response.status_code == 200
    assert response.templates[0].name == "admin/leads/import_checking.html"
    return response.content.decode()


@pytest.mark.django_db
def test_a_large_upload_is_checked_in_the_background_and_its_preview_is_kept(
    admin_client, settings, django_capture_on_commit_callbacks, campaign, checks_sent
):
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 10  # every real file is "large"
    content = csv_bytes(
        [
            ["A", campaign.customer_id, campaign.pk, "live", "Pune", "2026-11-24T08:00:00Z"],
            ["B", campaign.customer_id, campaign.pk, "warm", "Goa", ""],
        ]
    )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = job_from(upload(admin_client, "big.csv", content))
    assert [(c.func, c.args) for c in callbacks] == [(enqueue_check, (job.pk,))]
    assert checks_sent == [job.pk]
    job.refresh_from_db()
    assert (job.status, job.preview) == (ImportStatus.CHECKING, None)
    page = checking_page(admin_client, job)
    assert '<meta http-equiv="refresh"' in page
    assert "waiting for a background worker (sent to the queue 0\xa0minutes ago)" in page
    assert 'name="confirm"' not in page
    assert admin_client.get(progress_url(job)).url == preview_url(job)
    assert admin_client.get(reverse("admin:leads_importjob_change", args=[job.pk])).url == preview_url(job)

    assert check_import_job(job.pk) == ImportStatus.PREVIEWED

    job.refresh_from_db()
    assert (job.status, job.total_rows, job.processed_rows) == (ImportStatus.PREVIEWED, 2, 0)
    assert job.heartbeat_at is not None
    # The page shows the kept preview: the file is not read again (here it no longer could be).
    Path(job.file.path).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    preview = admin_client.get(preview_url(job))
    summary = preview.context["preview"]
    assert (summary.file_format, summary.total_rows, summary.valid_rows, summary.rejected_rows) == (
        "csv",
        2,
        1,
        1,
    )
    assert [(e.row, e.column) for e in summary.errors] == [(3, "lead_type")]
    assert summary.sample[0].created_at == dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC)
    assert preview.context["sample"][0][:2] == ["A", str(campaign.customer_id)]
    assert "2026-11-24T08:00:00+00:00" in preview.content.decode()
    assert check_import_job(job.pk) == "skipped"  # a redelivered message does nothing
    assert Lead.objects.count() == 0


@pytest.mark.django_db
def test_a_background_check_counts_the_rows_it_has_checked(admin_client, settings, campaign, monkeypatch):
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0
    monkeypatch.setattr("leads.services.IMPORT_CHUNK_ROWS", 2)
    content = b"external_id,lead_type\nA,live\nB,live\nC,live\n"
    job = job_from(upload(admin_client, "l.csv", content, campaign=campaign.pk))

    with CaptureQueriesContext(connection) as queries:
        check_import_job(job.pk)

    counted = [
        int(match[1])
        for q in queries
        if (
            match := re.search(
                r'"processed_rows" = \("leads_importjob"."processed_rows" \+ (\d+)\)', q["sql"]
            )
        )
    ]
    assert counted == [2, 1]  # one atomic increment per chunk, as it is checked
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.CHECKING, processed_rows=2)
    assert "2 rows checked so far" in checking_page(admin_client, job)


@pytest.mark.django_db
def test_a_quote_never_closed_fails_the_check_instead_of_swallowing_the_rows_after_it(
    admin_client, campaign, media_root
):
    # Row 3's city opens a quote that nothing closes: read as usual, rows 4 and 5 became part
    # of that city, and the import stored 2 leads of 4 without a rejected row.
    content = b'external_id,lead_type,city\nA,live,Pune\nB,live,"Thane\nC,live,Goa\nD,live,Delhi\n'
    response = upload(admin_client, "l.csv", content, campaign=campaign.pk)

    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert job.status == ImportStatus.FAILED
    assert job.message.startswith("Row 3 (from line 3) opens a quoted value that is never closed")
    assert stored_files(media_root) == []
    assert Lead.objects.count() == 0


@pytest.mark.django_db
def test_a_file_that_breaks_in_a_background_check_fails_with_a_message_and_is_dropped(
    admin_client, settings, campaign, media_root, csv_cells_up_to_100k
):
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0
    content = b"external_id,lead_type,city\nA,live,Pune\nB,live," + b"x" * 140_000 + b"\n"
    job = job_from(upload(admin_client, "l.csv", content, campaign=campaign.pk))

    assert check_import_job(job.pk) == ImportStatus.FAILED

    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED
    assert "CSV error on line 3" in job.message
    assert stored_files(media_root) == []
    page = admin_client.get(preview_url(job), follow=True)
    assert page.redirect_chain[-1][0] == progress_url(job)
    assert "CSV error on line 3" in page.content.decode()


@pytest.mark.django_db
def test_cancelling_during_the_check_keeps_nothing(admin_client, settings, campaign, media_root):
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))

    response = admin_client.post(preview_url(job), {"cancel": "1"}, follow=True)

    assert "was cancelled; nothing was written" in response.content.decode()
    assert stored_files(media_root) == []
    assert check_import_job(job.pk) == "skipped"  # the message still in the queue
    job.refresh_from_db()
    assert (job.status, job.preview) == (ImportStatus.CANCELLED, None)


@pytest.mark.django_db
def test_a_job_cancelled_while_its_check_runs_stores_no_preview(
    admin_client, settings, campaign, monkeypatch
):
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    real_check = tasks_module.preview_import

    def cancelled_meanwhile(*args, **kwargs):
        preview = real_check(*args, **kwargs)
        admin_client.post(preview_url(job), {"cancel": "1"})  # the file is read by now
        return preview

    monkeypatch.setattr(tasks_module, "preview_import", cancelled_meanwhile)

    assert check_import_job(job.pk) == "skipped"

    job.refresh_from_db()
    assert (job.status, job.preview) == (ImportStatus.CANCELLED, None)


@pytest.mark.django_db
def test_a_check_that_cannot_reach_the_broker_fails_with_a_message(
    admin_client, settings, campaign, media_root, monkeypatch, django_capture_on_commit_callbacks
):
    def unreachable(job_id: int) -> None:
        raise BrokerError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(check_import_job, "delay", unreachable)
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0

    content = b"external_id,lead_type\nA,live\n"
    with django_capture_on_commit_callbacks(execute=True):
        job = job_from(upload(admin_client, "l.csv", content, campaign=campaign.pk))

    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED
    assert "background queue could not be reached" in job.message
    assert stored_files(media_root) == []
    page = admin_client.get(preview_url(job), follow=True).content.decode()
    assert "background queue could not be reached" in page


@pytest.mark.django_db
def test_a_job_previewed_before_previews_were_kept_is_checked_when_opened(
    admin_client, settings, campaign, django_capture_on_commit_callbacks, checks_sent
):
    # As migration 0011 leaves a job that was waiting for confirmation: previewed, nothing kept.
    small = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    ImportJob.objects.filter(pk=small.pk).update(preview=None)

    response = admin_client.get(preview_url(small), follow=True)

    assert response.context["preview"].valid_rows == 1
    small.refresh_from_db()
    assert small.preview is not None

    ImportJob.objects.filter(pk=small.pk).update(preview=None)
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0  # now a "large" file
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.get(preview_url(small), follow=True)
    assert response.templates[0].name == "admin/leads/import_checking.html"
    assert checks_sent == [small.pk]


@pytest.mark.django_db
def test_an_old_job_whose_file_is_gone_fails_with_a_message_when_opened(admin_client, campaign):
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    ImportJob.objects.filter(pk=job.pk).update(preview=None)
    Path(job.file.path).unlink()

    response = admin_client.get(preview_url(job), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == progress_url(job)
    assert "The uploaded file could not be read" in response.content.decode()
    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED


@pytest.mark.django_db
def test_the_kept_preview_cuts_long_reasons_and_goes_once_the_job_is_confirmed(admin_client, campaign):
    content = b"external_id,lead_type\nA,live\nB," + b"w" * 5_000 + b"\n"
    job = job_from(upload(admin_client, "l.csv", content, campaign=campaign.pk))
    job.refresh_from_db()
    [[row, column, reason]] = job.preview["errors"]
    assert (row, column) == (3, "lead_type")
    assert len(reason) == tasks_module.PREVIEW_REASON_CHARS
    assert reason.endswith("…")

    admin_client.post(preview_url(job), {"confirm": "1"})

    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    assert job.preview is None
    assert "w" * 5_000 in error_report_rows(admin_client, job)[1][2]  # the report keeps all


# --- Broken files: a message, no 500, nothing written ---------------------------------------------


def _png() -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    )


def _truncated_xlsx() -> bytes:
    data = xlsx_bytes([["A", 1, 1, "live", "", ""]])
    return data[: len(data) // 2]


def _truncated_xls() -> bytes:
    """An XLS cut short (an interrupted download): calamine panics on it rather than failing."""
    data = xls_bytes([["A", 1, 1, "live", "", ""]])
    return data[: len(data) - 100]


def _zip_that_is_not_a_workbook() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return out.getvalue()


BROKEN_FILES = [
    pytest.param("leads.csv", b"name,phone\nAnn,123\n", "Missing required columns", id="wrong-columns"),
    pytest.param(
        "leads.csv",
        "external_id,customer_id,campaign_id,lead_type,city\nA,1,1,live,S\xe3o Paulo\n".encode("cp1252"),
        "not valid utf-8 text (line 2",
        id="wrong-encoding",
    ),
    pytest.param("leads.csv", _png(), "not a spreadsheet", id="png-renamed-csv"),
    pytest.param("leads.csv", os.urandom(4096) + b"\x00", "not a spreadsheet", id="random-binary"),
    pytest.param("leads.xlsx", _truncated_xlsx(), "not a readable XLSX workbook", id="truncated-xlsx"),
    pytest.param(
        "leads.xlsx", _zip_that_is_not_a_workbook(), "not a readable XLSX workbook", id="zip-not-xlsx"
    ),
    pytest.param(
        "leads.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x01" * 600, "not a readable XLS", id="bad-xls"
    ),
    pytest.param("leads.xls", _truncated_xls(), "it is damaged or cut short", id="truncated-xls"),
    pytest.param("leads.csv", b"", "The file is empty.", id="empty"),
    pytest.param("leads.csv", ",".join(HEADER).encode() + b"\n", "header but no data rows", id="header-only"),
    pytest.param(
        "leads.csv", ",".join(HEADER).encode() + b"\n,,,\n\n", "header but no data rows", id="blank-rows"
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "content", "message"), BROKEN_FILES)
def test_a_bad_file_gets_a_clear_message_on_the_form_and_nothing_is_kept(
    admin_client, name, content, message, media_root
):
    response = upload(admin_client, name, content)

    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert any(message in error for error in errors), errors
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert ImportJob.objects.count() == 0
    assert stored_files(media_root) == []
    assert Lead.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ('{"columns": {"external_id": "Prospect ID"', "The mapping is not valid JSON"),
        ('["external_id"]', "The mapping must be a JSON object."),
        ('{"columns": {"phone": "Phone"}}', "names unknown lead fields: phone"),
        ('{"encoding": "klingon-8"}', "Unknown encoding"),
    ],
    ids=["syntax-error", "not-an-object", "unknown-field", "unknown-encoding"],
)
def test_a_malformed_mapping_gets_a_clear_message(admin_client, campaign, mapping, message):
    content = b"Prospect ID,lead_type\nA,live\n"
    response = upload(admin_client, "l.csv", content, campaign=campaign.pk, mapping_text=mapping)

    assert response.status_code == 200
    assert any(message in error for error in response.context["form"].errors["mapping_text"])
    assert ImportJob.objects.count() == 0


@pytest.mark.django_db
def test_a_cp1252_file_imports_once_the_mapping_names_its_encoding(admin_client, campaign):
    content = "external_id,lead_type,city\nA,live,S\xe3o Paulo\n".encode("cp1252")

    refused = upload(admin_client, "l.csv", content, campaign=campaign.pk)
    job = job_from(
        upload(admin_client, "l.csv", content, campaign=campaign.pk, mapping_text='{"encoding": "cp1252"}')
    )
    admin_client.get(preview_url(job))
    admin_client.post(preview_url(job), {"confirm": "1"})

    assert 'set "encoding" in the mapping' in refused.context["form"].errors["file"][0]
    assert Lead.objects.get().city == "S\xe3o Paulo"


@pytest.mark.django_db
def test_a_mapping_naming_a_missing_column_is_reported_with_the_columns_found(admin_client, campaign):
    response = upload(
        admin_client,
        "l.csv",
        b"ID,lead_type\nA,live\n",
        campaign=campaign.pk,
        mapping_text='{"columns": {"external_id": "Prospect ID"}}',
    )

    assert response.status_code == 200
    [error] = response.context["form"].errors["file"]
    assert "'Prospect ID' (for external_id)" in error
    assert "Columns found: ID, lead_type" in error


@pytest.mark.django_db
def test_a_campaign_of_another_customer_is_refused_on_the_form(admin_client, campaign):
    other_customer = CustomerFactory()
    response = upload(
        admin_client,
        "l.csv",
        b"external_id,lead_type\nA,live\n",
        customer=other_customer.pk,
        campaign=campaign.pk,
    )

    assert response.status_code == 200
    assert "belongs to another customer" in response.context["form"].errors["campaign"][0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "size",
    [2_000, 1_200_000],
    ids=["stopped-while-streaming", "refused-by-declared-length"],
)
def test_an_oversized_file_is_refused_before_it_is_stored(admin_client, settings, media_root, size):
    settings.LEADRANK_IMPORT_MAX_BYTES = 1_000
    content = csv_bytes([["A", 1, 1, "live", "x" * 50, ""]] * (size // 60))
    assert len(content) > settings.LEADRANK_IMPORT_MAX_BYTES

    response = upload(admin_client, "big.csv", content)

    assert response.status_code == 200
    [error] = response.context["form"].errors["file"]
    assert "larger than the admin import limit of 1000" in error
    assert "manage.py import_leads" in error
    assert "file" not in response.wsgi_request.FILES  # cut off while streaming, never kept
    assert ImportJob.objects.count() == 0
    assert stored_files(media_root) == []


@pytest.mark.django_db
def test_a_file_that_breaks_after_its_first_rows_fails_at_the_check_with_a_message(
    admin_client, campaign, media_root, csv_cells_up_to_100k
):
    # Readable header and first row (the upload's quick check passes), then a CSV cell
    # longer than the csv module accepts (here): found when the check reads the whole file.
    content = b"external_id,lead_type,city\nA,live,Pune\nB,live," + b"x" * 140_000 + b"\n"

    response = upload(admin_client, "l.csv", content, campaign=campaign.pk)

    assert response.status_code == 302
    assert response.url == UPLOAD_URL
    assert "CSV error on line 3" in admin_client.get(UPLOAD_URL).content.decode()
    job = ImportJob.objects.get()
    assert job.status == ImportStatus.FAILED
    assert "field larger than field limit" in job.message
    assert stored_files(media_root) == []
    assert Lead.objects.count() == 0


@pytest.mark.django_db
def test_a_job_whose_file_cannot_be_read_at_run_time_fails_with_a_message(admin_client, campaign, settings):
    settings.LEADRANK_IMPORT_INLINE_ROWS = 0
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    admin_client.get(preview_url(job))
    admin_client.post(preview_url(job), {"confirm": "1"})
    Path(job.file.path).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # replaced behind our back

    assert run_import_job(job.pk)["status"] == ImportStatus.FAILED

    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED
    assert "not a spreadsheet" in job.message
    page = admin_client.get(progress_url(job)).content.decode()
    assert "not a spreadsheet" in page
    assert "error-report-link" not in page
    Path(job.file.path).unlink()
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED)
    assert run_import_job(job.pk)["status"] == ImportStatus.FAILED
    job.refresh_from_db()
    assert job.message.startswith("The uploaded file could not be read")
    assert Lead.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "mapping", "message"),
    [
        ("mapping_text", "[" * 100_000, "This is too long to be a mapping (a mapping is at most 64.0"),
        ("mapping_text", "[" * 20_000, "The mapping is not valid JSON: it is nested too deeply."),
        ("mapping_file", "[" * 20_000, "The mapping is not valid JSON: it is nested too deeply."),
        ("mapping_file", "[" * 100_000, "This file is too large to be a mapping"),
    ],
    ids=["long-text", "deep-text", "deep-file", "long-file"],
)
def test_a_mapping_too_long_or_nested_too_deeply_gets_a_clear_message(
    admin_client, campaign, field, mapping, message
):
    value = mapping if field == "mapping_text" else SimpleUploadedFile("m.json", mapping.encode())
    response = upload(
        admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk, **{field: value}
    )

    assert response.status_code == 200
    assert any(message in error for error in response.context["form"].errors[field])
    assert ImportJob.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "encoding", ["utf\x00", "base64", "hex", "zlib", "rot13", "unicode_escape", "raw_unicode_escape"]
)
def test_a_mapping_encoding_that_is_no_character_set_of_text_files_gets_a_clear_message(
    admin_client, campaign, encoding
):
    # Read with an escape codec, this cell would become a lone surrogate.
    content = b"external_id,lead_type,city\nA,live,\\ud800\n"
    mapping = json.dumps({"encoding": encoding})

    response = upload(admin_client, "l.csv", content, campaign=campaign.pk, mapping_text=mapping)

    assert response.status_code == 200
    errors = response.context["form"].errors["mapping_text"]
    assert any('"encoding"' in error for error in errors), errors
    assert ImportJob.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ('{"empty_values": ["\\u0000"]}', 'NUL character (\\u0000) in "empty_values"'),
        ('{"constants": {"city": "\\u0000"}}', 'NUL character (\\u0000) in "constants"'),
        ('{"columns": {"city": "ci\\u0000ty"}}', 'NUL character (\\u0000) in "columns"'),
        (
            '{"columns": {"city": "ci\\ud800ty"}}',
            'lone UTF-16 surrogate escape (\\ud800-\\udfff) in "columns"',
        ),
    ],
    ids=["empty-values", "constants", "columns", "surrogate"],
)
def test_text_the_database_cannot_store_in_a_mapping_gets_a_clear_message(
    admin_client, campaign, mapping, message
):
    content = b"external_id,lead_type,city\nA,live,Pune\n"

    response = upload(admin_client, "l.csv", content, campaign=campaign.pk, mapping_text=mapping)

    assert response.status_code == 200
    errors = response.context["form"].errors["mapping_text"]
    assert any(message in error for error in errors), errors
    assert ImportJob.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "content", "mapping", "message"),
    [
        pytest.param(
            "l.csv",
            b"external_id,lead_type," + b"x" * 70_000 + b"\x00y\nA,live,z\n",  # past the format check's 64 KB
            None,
            "Column 3 of the header ('xxxx",
            id="csv-nul",
        ),
        pytest.param(
            "l.csv",
            b"external_id,lead_type,+2AA-\nA,live,z\n",  # UTF-7 for a lone surrogate
            '{"encoding": "utf-7"}',
            "Column 3 of the header ('\\ud800') holds a lone UTF-16 surrogate",
            id="csv-surrogate",
        ),
        pytest.param(
            "l.xls",
            xls_bytes([["A", "live"]], header=["external_id", "lead\x00type"]),
            None,
            "Column 2 of the header ('lead\\x00type') holds a NUL",
            id="xls-nul",
        ),
    ],
)
def test_a_header_holding_text_the_database_cannot_store_is_refused_naming_the_column(
    admin_client, campaign, media_root, name, content, mapping, message
):
    response = upload(admin_client, name, content, campaign=campaign.pk, mapping_text=mapping)

    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert any(message in error for error in errors), errors
    assert ImportJob.objects.count() == 0
    assert stored_files(media_root) == []


@pytest.mark.django_db
def test_cells_holding_text_the_database_cannot_store_are_row_errors(admin_client, campaign):
    # Read as UTF-7, "+2AA-" is a lone surrogate; the NUL comes after the format check's
    # first 64 KB (the unmapped "notes" cell fills them).
    content = (
        b"external_id,lead_type,city,notes\n"
        b"A,live,+2AA-," + b"x" * 70_000 + b"\n"
        b"B,live,Pu\x00ne,\n"
        b"C,live,Pune,\n"
    )
    mapping = '{"encoding": "utf-7"}'
    job = job_from(upload(admin_client, "l.csv", content, campaign=campaign.pk, mapping_text=mapping))

    preview = admin_client.get(preview_url(job)).context["preview"]

    assert (preview.valid_rows, preview.rejected_rows) == (1, 2)
    assert [(error.row, error.column, error.reason) for error in preview.errors] == [
        (2, "city", "Text may not contain lone UTF-16 surrogates (\\ud800-\\udfff)."),
        (3, "city", "Text may not contain NUL (\\x00) characters."),
    ]
    admin_client.post(preview_url(job), {"confirm": "1"})
    job.refresh_from_db()
    assert (job.status, job.created_count, job.rejected_count) == (ImportStatus.DONE, 1, 2)
    assert list(Lead.objects.values_list("external_id", "city")) == [("C", "Pune")]


@pytest.mark.django_db
def test_a_preview_the_database_cannot_store_fails_the_check_with_a_message(
    admin_client, campaign, monkeypatch
):
    # The last line of defence, for text that gets past the parsers' own checks.
    def preview_with_a_nul(path: Path, **kwargs: object) -> ImportPreview:
        return ImportPreview(
            header=["external_id", "lead\x00type"],
            file_format="csv",
            sample=[],
            total_rows=1,
            valid_rows=0,
            rejected_rows=1,
            errors=[],
        )

    monkeypatch.setattr(tasks_module, "preview_import", preview_with_a_nul)

    response = upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk)

    assert response.status_code == 302
    assert response.url == UPLOAD_URL
    job = ImportJob.objects.get()
    assert job.status == ImportStatus.FAILED
    assert job.message.startswith("The file holds text the database cannot store")
    assert job.preview is None
    assert "The file holds text the database cannot store" in admin_client.get(UPLOAD_URL).content.decode()


# --- Navigation and permissions -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_import_is_reachable_from_the_lead_and_import_job_lists(admin_client):
    for changelist in ("admin:leads_lead_changelist", "admin:leads_importjob_changelist"):
        page = admin_client.get(reverse(changelist)).content.decode()
        assert f'href="{UPLOAD_URL}"' in page
        assert "Import leads" in page
    assert admin_client.get(reverse("admin:leads_importjob_add")).url == UPLOAD_URL
    form_page = admin_client.get(UPLOAD_URL)
    assert form_page.status_code == 200
    assert 'enctype="multipart/form-data"' in form_page.content.decode()


@pytest.mark.django_db
def test_an_import_job_opens_its_preview_then_its_progress_page(admin_client, campaign):
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    change_url = reverse("admin:leads_importjob_change", args=[job.pk])
    assert admin_client.get(change_url).url == preview_url(job)
    assert admin_client.get(progress_url(job)).url == preview_url(job)

    admin_client.get(preview_url(job))
    admin_client.post(preview_url(job), {"confirm": "1"})

    assert admin_client.get(change_url).url == progress_url(job)
    assert admin_client.get(preview_url(job)).url == progress_url(job)
    listing = admin_client.get(reverse("admin:leads_importjob_changelist"))
    assert listing.status_code == 200
    assert "l.csv" in listing.content.decode()


@pytest.mark.django_db
def test_the_error_report_needs_permission_and_exists_only_when_rows_were_rejected(
    admin_client, client, django_user_model, campaign
):
    job = job_from(
        upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\nB,hot\n", campaign=campaign.pk)
    )
    admin_client.get(preview_url(job))
    admin_client.post(preview_url(job), {"confirm": "1"})
    report_url = reverse("admin:leads_importjob_error_report", kwargs={"job_id": job.pk})
    assert error_report_rows(admin_client, job)[1] == ["3", "lead_type", "'hot' is not one of: live, stale."]

    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(report_url).status_code == 403
    assert client.get(UPLOAD_URL).status_code == 403
    assert client.get(progress_url(job)).status_code == 403

    clean = job_from_second_upload(admin_client, campaign)
    no_report = reverse("admin:leads_importjob_error_report", kwargs={"job_id": clean.pk})
    assert admin_client.get(no_report).status_code == 404


def job_from_second_upload(client, campaign) -> ImportJob:
    response = upload(client, "clean.csv", b"external_id,lead_type\nC,live\n", campaign=campaign.pk)
    job = ImportJob.objects.get(pk=int(response.url.rstrip("/").split("/")[-2]))
    client.get(preview_url(job))
    client.post(preview_url(job), {"confirm": "1"})
    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    return job


@pytest.mark.django_db
def test_a_broker_that_cannot_be_reached_fails_the_job_with_a_message(monkeypatch, campaign, admin_client):
    def unreachable(job_id: int) -> None:
        raise BrokerError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(run_import_job, "delay", unreachable)
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED)

    enqueue_import_job(job.pk)

    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED
    assert "background queue could not be reached" in job.message


def test_every_import_url_is_wired_under_the_import_job_admin():
    assert UPLOAD_URL == "/admin/leads/importjob/upload/"
    assert (
        reverse("admin:leads_importjob_preview", kwargs={"job_id": 7}) == "/admin/leads/importjob/7/preview/"
    )
    assert (
        reverse("admin:leads_importjob_progress", kwargs={"job_id": 7})
        == "/admin/leads/importjob/7/progress/"
    )
    assert (
        reverse("admin:leads_importjob_error_report", kwargs={"job_id": 7})
        == "/admin/leads/importjob/7/error-report/"
    )
    assert json.loads(EXAMPLE_MAPPING.read_text())["constants"] == {"lead_type": "stale"}


@pytest.mark.django_db(transaction=True)
def test_a_file_that_breaks_after_stored_chunks_fails_saying_what_was_kept(
    admin_client, campaign, settings, csv_cells_up_to_100k
):
    # The check would refuse this file; a job already queued meets the same error at run time.
    # Two chunks of 20,000 rows parse fine and are handed to the writer; the third breaks.
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 0  # the check is sent to Celery, not run
    rows = 40_500
    body = "".join(f"R{i},live,\n" for i in range(rows))
    content = f"external_id,lead_type,city\n{body}bad,live,{'x' * 140_000}\n".encode()
    job = job_from(upload(admin_client, "big.csv", content, campaign=campaign.pk))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED)

    assert run_import_job(job.pk)["status"] == ImportStatus.FAILED

    job.refresh_from_db()
    assert job.status == ImportStatus.FAILED
    assert "field larger than field limit" in job.message
    assert "The valid rows among the first 40,000 had already been stored" in job.message
    assert Lead.objects.count() == 40_000  # committed chunks are kept, not lost
    ImportJob.objects.all().delete()


@pytest.mark.django_db
def test_deleting_an_import_job_removes_its_files_but_a_running_job_cannot_be_deleted(
    admin_client, campaign, media_root
):
    done = job_from_second_upload(admin_client, campaign)
    running = ImportJob.objects.create(
        file="imports/r.csv", original_name="r.csv", status=ImportStatus.RUNNING
    )
    changelist = reverse("admin:leads_importjob_changelist")
    assert stored_files(media_root)

    refused = admin_client.post(
        changelist, {"action": "delete_selected", "_selected_action": [done.pk, running.pk], "post": "yes"}
    )
    # Why, rather than "your account doesn't have permission" (to a superuser).
    assert (
        f"Import {running.pk}: r.csv is running: it can be deleted once it has ended."
        in refused.content.decode()
    )
    assert "permission" not in refused.content.decode()
    assert ImportJob.objects.count() == 2
    page = admin_client.get(reverse("admin:leads_importjob_delete", args=[running.pk]))
    assert "it can be deleted once it has ended" in page.content.decode()
    admin_client.post(reverse("admin:leads_importjob_delete", args=[running.pk]), {"post": "yes"})
    assert ImportJob.objects.count() == 2

    admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [done.pk], "post": "yes"})

    assert list(ImportJob.objects.values_list("pk", flat=True)) == [running.pk]
    assert stored_files(media_root) == []


@pytest.mark.django_db
def test_the_upload_still_checks_the_csrf_token(admin_user, campaign):
    # The upload view installs its size limit before the body is parsed, which means it
    # does its CSRF check itself rather than through the middleware.
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    form_page = client.get(UPLOAD_URL)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form_page.content.decode()).group(1)
    body = {"file": SimpleUploadedFile("l.csv", b"external_id,lead_type\nA,live\n"), "campaign": campaign.pk}

    without = client.post(UPLOAD_URL, body)
    body["file"].seek(0)
    with_token = client.post(UPLOAD_URL, {**body, "csrfmiddlewaretoken": token})

    assert without.status_code == 403
    assert with_token.status_code == 302
    assert ImportJob.objects.count() == 1


@pytest.mark.django_db
def test_an_old_preview_opened_by_someone_who_cannot_import_is_left_as_it_is(
    admin_client, client, django_user_model, campaign
):
    # As migration 0011 leaves a job that was waiting for confirmation: previewed, nothing kept.
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    ImportJob.objects.filter(pk=job.pk).update(preview=None)
    before = ImportJob.objects.values().get(pk=job.pk)
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(viewer)

    response = client.get(preview_url(job), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(reverse("admin:leads_importjob_changelist"), 302)]
    assert "must be checked again by someone who can import leads" in response.content.decode()
    assert ImportJob.objects.values().get(pk=job.pk) == before
    assert before["status"] == ImportStatus.PREVIEWED


# --- Jobs whose worker died -----------------------------------------------------------------


def running_job(
    *, heartbeat_minutes_ago: float | None, started_minutes_ago: float = 30, **fields
) -> ImportJob:
    now = timezone.now()
    return ImportJob.objects.create(
        original_name="leads.csv",
        status=fields.pop("status", ImportStatus.RUNNING),
        started_at=now - dt.timedelta(minutes=started_minutes_ago),
        heartbeat_at=None
        if heartbeat_minutes_ago is None
        else now - dt.timedelta(minutes=heartbeat_minutes_ago),
        **fields,
    )


@pytest.mark.django_db
def test_a_running_job_renews_its_heartbeat_as_chunks_are_stored(admin_client, campaign):
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    admin_client.get(preview_url(job))
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.QUEUED)
    before = timezone.now()

    run_import_job(job.pk)

    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    assert job.heartbeat_at is not None
    assert job.heartbeat_at >= before
    assert job.heartbeat_at >= job.started_at


@pytest.mark.django_db
def test_a_running_job_without_a_sign_of_life_is_failed_with_what_was_stored(settings):
    settings.LEADRANK_IMPORT_STALL_MINUTES = 15
    stalled = running_job(heartbeat_minutes_ago=20, processed_rows=40_000)
    never_beat = running_job(heartbeat_minutes_ago=None, started_minutes_ago=20)
    alive = running_job(heartbeat_minutes_ago=1)
    long_queued = running_job(heartbeat_minutes_ago=None, status=ImportStatus.QUEUED, started_minutes_ago=60)
    done = running_job(heartbeat_minutes_ago=60, status=ImportStatus.DONE)

    assert sweep_import_jobs() == {"failed": 2, "sent_again": 0, "files_removed": 0}

    stalled.refresh_from_db()
    assert stalled.status == ImportStatus.FAILED
    assert stalled.finished_at is not None
    assert "no sign of life for 15 minutes" in stalled.message
    assert "first 40,000 had already been stored" in stalled.message
    assert "importing the file again is safe" in stalled.message
    assert ImportJob.objects.get(pk=never_beat.pk).status == ImportStatus.FAILED
    for untouched, status in (
        (alive, ImportStatus.RUNNING),
        (long_queued, ImportStatus.QUEUED),
        (done, ImportStatus.DONE),
    ):
        assert ImportJob.objects.get(pk=untouched.pk).status == status
    assert sweep_import_jobs() == {"failed": 0, "sent_again": 0, "files_removed": 0}  # nothing left to fail


@pytest.mark.django_db
def test_a_check_without_a_sign_of_life_is_failed_but_one_waiting_for_a_worker_is_not(settings, media_root):
    settings.LEADRANK_IMPORT_STALL_MINUTES = 15
    silent = running_job(heartbeat_minutes_ago=20, status=ImportStatus.CHECKING, processed_rows=5_000)
    waiting = running_job(heartbeat_minutes_ago=None, status=ImportStatus.CHECKING, started_minutes_ago=60)
    alive = running_job(heartbeat_minutes_ago=1, status=ImportStatus.CHECKING)

    assert sweep_import_jobs()["failed"] == 1

    silent.refresh_from_db()
    assert silent.status == ImportStatus.FAILED
    assert silent.message.startswith("The check of the file stopped: its background worker gave no sign")
    assert "stored" not in silent.message  # a check writes no lead
    for untouched in (waiting, alive):
        assert ImportJob.objects.get(pk=untouched.pk).status == ImportStatus.CHECKING
    # A check that ended between the sweep's read and its write keeps its preview.
    ImportJob.objects.filter(pk=alive.pk).update(status=ImportStatus.PREVIEWED)
    assert fail_check(alive.pk, "stalled", only_if=ImportJob.objects.all()) == 0


@pytest.mark.django_db
def test_a_job_that_finished_meanwhile_keeps_its_result(settings):
    # The sweep selects a stalled job, then the job's worker finishes before the sweep writes.
    settings.LEADRANK_IMPORT_STALL_MINUTES = 15
    job = running_job(heartbeat_minutes_ago=20)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.DONE, message="10 rows: 10 created.")

    assert _fail(job.pk, "stalled", only_if=ImportJob.objects.filter(status=ImportStatus.RUNNING)) == 0

    job.refresh_from_db()
    assert (job.status, job.message) == (ImportStatus.DONE, "10 rows: 10 created.")


@pytest.mark.django_db
def test_a_job_no_worker_took_is_sent_again_and_one_sent_lately_is_not(settings, sent_to_broker, checks_sent):
    # Redis without persistence loses its queued messages when it restarts: without a second
    # send such a job would wait for ever.
    settings.LEADRANK_IMPORT_STALL_MINUTES = 15
    now = timezone.now()

    def ago(minutes: float) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    lost_import = running_job(heartbeat_minutes_ago=None, status=ImportStatus.QUEUED, sent_at=ago(20))
    lost_check = running_job(heartbeat_minutes_ago=None, status=ImportStatus.CHECKING, sent_at=ago(20))
    # Sent before sent_at was recorded: counted from its upload.
    old_check = running_job(heartbeat_minutes_ago=None, status=ImportStatus.CHECKING, created_at=ago(60))
    recent_import = running_job(heartbeat_minutes_ago=None, status=ImportStatus.QUEUED, sent_at=ago(5))
    begun_check = running_job(heartbeat_minutes_ago=1, status=ImportStatus.CHECKING, sent_at=ago(20))
    previewed = running_job(heartbeat_minutes_ago=None, status=ImportStatus.PREVIEWED, sent_at=ago(20))

    assert sweep_import_jobs() == {"failed": 0, "sent_again": 3, "files_removed": 0}

    assert sent_to_broker == [lost_import.pk]
    assert sorted(checks_sent) == sorted([lost_check.pk, old_check.pk])
    for job in (lost_import, lost_check, old_check):
        job.refresh_from_db()
        assert job.sent_at >= now
        assert job.status in (ImportStatus.QUEUED, ImportStatus.CHECKING)
    assert ImportJob.objects.get(pk=recent_import.pk).sent_at == ago(5)
    for untouched in (begun_check, previewed):
        assert ImportJob.objects.get(pk=untouched.pk).sent_at == ago(20)
    # Sent again just now: the next sweep leaves them alone.
    assert sweep_import_jobs() == {"failed": 0, "sent_again": 0, "files_removed": 0}


@pytest.mark.django_db
def test_a_second_copy_of_a_check_does_nothing_once_the_first_has_begun(admin_client, settings, campaign):
    # The sweep sends a check again when no worker took it in time, which may only mean
    # that the workers were busy: the first copy to begin claims it.
    settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES = 10
    job = job_from(upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\n", campaign=campaign.pk))
    began = timezone.now() - dt.timedelta(seconds=5)
    ImportJob.objects.filter(pk=job.pk).update(heartbeat_at=began, processed_rows=7)

    assert check_import_job(job.pk) == "skipped"

    job.refresh_from_db()
    assert (job.status, job.preview, job.processed_rows, job.heartbeat_at) == (
        ImportStatus.CHECKING,
        None,
        7,
        began,
    )


@pytest.mark.django_db
def test_both_copies_of_a_job_sent_again_import_it_once(settings, admin_client, campaign):
    settings.LEADRANK_IMPORT_STALL_MINUTES = 15
    job = job_from(
        upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\nB,live\n", campaign=campaign.pk)
    )
    admin_client.get(preview_url(job))
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportStatus.QUEUED, sent_at=timezone.now() - dt.timedelta(minutes=30)
    )
    assert sweep_import_jobs()["sent_again"] == 1

    first, second = run_import_job(job.pk), run_import_job(job.pk)

    assert first["status"] == ImportStatus.DONE
    assert second == {"job_id": job.pk, "status": "skipped"}
    assert Lead.objects.filter(campaign=campaign).count() == 2


@pytest.mark.django_db
def test_a_job_the_broker_refuses_to_take_again_keeps_waiting(settings, monkeypatch):
    # Its first message may still be queued behind busy workers: a broker that is down for a
    # moment must not fail a healthy job. A later sweep sends it again.
    settings.LEADRANK_IMPORT_STALL_MINUTES = 15

    def unreachable(job_id: int) -> None:
        raise BrokerError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(run_import_job, "delay", unreachable)
    job = running_job(
        heartbeat_minutes_ago=None,
        status=ImportStatus.QUEUED,
        sent_at=timezone.now() - dt.timedelta(minutes=20),
    )

    assert sweep_import_jobs() == {"failed": 0, "sent_again": 0, "files_removed": 0}

    job.refresh_from_db()
    assert (job.status, job.message) == (ImportStatus.QUEUED, "")


@pytest.mark.django_db
def test_sending_a_job_notes_when_and_its_page_shows_it(admin_client, campaign, sent_to_broker):
    job = ImportJob.objects.create(original_name="l.csv", campaign=campaign, status=ImportStatus.QUEUED)
    before = timezone.now()

    enqueue_import_job(job.pk)

    job.refresh_from_db()
    assert sent_to_broker == [job.pk]
    assert job.sent_at >= before
    page = admin_client.get(progress_url(job)).content.decode()
    assert 'Sent to the workers</th><td class="sent-at">' in page


@pytest.mark.django_db
def test_the_import_job_sweep_is_a_periodic_task():
    call_command("setup_periodic_tasks")
    task = PeriodicTask.objects.get(task="leads.tasks.sweep_import_jobs")
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (300, "seconds")


@pytest.mark.django_db
@pytest.mark.parametrize(("lead_perm", "status"), [(None, 403), ("view_lead", 200), ("change_lead", 200)])
def test_an_imports_preview_and_error_report_are_for_staff_who_may_view_leads(
    admin_client, client, django_user_model, campaign, lead_perm, status
):
    # Both show the file's rows (the preview as leads, the report quoting rejected values).
    previewed = job_from(
        upload(
            admin_client,
            "l.csv",
            b"external_id,lead_type,city\nA,live,Pune\nB,hot,Agra\n",
            campaign=campaign.pk,
        )
    )
    done = job_from_second_upload(admin_client, campaign)
    ImportJob.objects.filter(pk=done.pk).update(error_report=ImportJob.objects.get(pk=done.pk).file.name)
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    codenames = ["view_importjob", *([lead_perm] if lead_perm else [])]
    viewer.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="leads", codename__in=codenames)
    )
    client.force_login(viewer)

    preview = client.get(preview_url(previewed))
    report = client.get(reverse("admin:leads_importjob_error_report", kwargs={"job_id": done.pk}))

    assert preview.status_code == status
    assert ("Pune" in preview.content.decode()) == (status == 200)
    assert ("is not one of: live, stale" in preview.content.decode()) == (status == 200)
    assert report.status_code == status
    # The job's progress page (counts, no rows) stays theirs to see, offering the report
    # only to those it is served to.
    progress = client.get(progress_url(done))
    assert progress.status_code == 200
    assert ("error-report-link" in progress.content.decode()) == (status == 200)


@pytest.mark.django_db
@pytest.mark.parametrize("size", ["small", "large"])
def test_uploaded_files_and_error_reports_are_not_readable_by_other_users_of_the_machine(
    admin_client, campaign, media_root, settings, size
):
    # They hold customers' leads. A small upload is written from memory (the process's umask
    # decided: world-readable), a large one moved from a temporary file (owner only).
    if size == "large":
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10
    job = job_from(
        upload(admin_client, "l.csv", b"external_id,lead_type\nA,live\nB,hot\n", campaign=campaign.pk)
    )
    admin_client.post(preview_url(job), {"confirm": "1"})
    job.refresh_from_db()
    assert job.status == ImportStatus.DONE
    assert job.error_report

    for path in (Path(job.file.path), Path(job.error_report.path)):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o007 == 0, f"{path.name}: {oct(mode)}"
        assert mode & 0o600 == 0o600, f"{path.name}: {oct(mode)}"  # the web and worker processes
        assert path.parent.stat().st_mode & 0o007 == 0


def uploaded(client, campaign, name: str, rows: bytes) -> ImportJob:
    """The job of one more upload (``job_from`` expects the only one)."""
    response = upload(client, name, b"external_id,lead_type\n" + rows, campaign=campaign.pk)
    assert response.status_code == 302, response.content.decode()[:2000]
    return ImportJob.objects.get(pk=int(response.url.rstrip("/").split("/")[-2]))


@pytest.mark.django_db
def test_files_of_jobs_ended_past_the_retention_period_are_removed_and_the_jobs_kept(
    admin_client, campaign, media_root, settings
):
    # Uploads and error reports hold customers' leads; nothing reads them once a job ended.
    settings.LEADRANK_IMPORT_RETENTION_DAYS = 30
    old = uploaded(admin_client, campaign, "old.csv", b"A,live\nB,hot\n")
    admin_client.post(preview_url(old), {"confirm": "1"})
    recent = job_from_second_upload(admin_client, campaign)
    unconfirmed = uploaded(admin_client, campaign, "wait.csv", b"W,live\n")
    fresh_preview = uploaded(admin_client, campaign, "new.csv", b"N,live\n")
    long_ago = timezone.now() - dt.timedelta(days=31)
    ImportJob.objects.filter(pk=old.pk).update(finished_at=long_ago)
    ImportJob.objects.filter(pk=unconfirmed.pk).update(created_at=long_ago)
    old.refresh_from_db()
    assert old.status == ImportStatus.DONE
    assert old.error_report
    assert len(stored_files(media_root)) == 5  # four uploads and one error report

    assert sweep_import_jobs()["files_removed"] == 2

    old.refresh_from_db()
    unconfirmed.refresh_from_db()
    assert (old.status, old.file.name, old.error_report.name) == (ImportStatus.DONE, "", "")
    assert (old.created_count, old.rejected_count) == (1, 1)  # the job and its counts stay
    assert unconfirmed.status == ImportStatus.CANCELLED
    assert "Not confirmed within 30 days" in unconfirmed.message
    assert unconfirmed.file.name == ""
    assert sorted(p.name for p in stored_files(media_root)) == sorted(
        Path(job.file.name).name for job in (recent, fresh_preview)
    )
    # The ended job's page no longer offers the report, and nothing is removed twice.
    assert "error-report-link" not in admin_client.get(progress_url(old)).content.decode()
    assert sweep_import_jobs()["files_removed"] == 0


@pytest.mark.django_db
def test_a_job_confirmed_while_the_retention_sweep_runs_keeps_its_file(
    admin_client, campaign, media_root, settings
):
    settings.LEADRANK_IMPORT_RETENTION_DAYS = 1
    job = uploaded(admin_client, campaign, "late.csv", b"L,live\n")
    # Confirmed between the sweep's read of unconfirmed jobs and its conditional cancel.
    ImportJob.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - dt.timedelta(days=2), status=ImportStatus.QUEUED
    )

    assert remove_expired_import_files(now=timezone.now()) == 0

    job.refresh_from_db()
    assert job.status == ImportStatus.QUEUED
    assert job.file.name
    assert stored_files(media_root)


@pytest.mark.django_db
def test_the_preview_leaves_out_the_empty_header_cells_after_the_last_name(campaign, tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("external_id,,lead_type" + "," * 500 + "\nA,,live\n")

    preview = preview_import(
        path, mapping=LeadMapping(), customer_id=campaign.customer_id, campaign_id=campaign.pk
    )

    assert preview.header == ["external_id", "", "lead_type"]  # a nameless column between stays
    assert preview.valid_rows == 1
