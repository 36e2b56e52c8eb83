"""The admin's file import: upload → preview → confirm → progress and summary.

A small admin view over the same pipeline as the CLI (:mod:`leads.services`): the upload
is stored as an :class:`~leads.models.ImportJob`, :func:`leads.tasks.check_import_job`
validates the whole file without writing and keeps the preview on the job, and the
confirmed job runs :func:`leads.tasks.run_import_job`. Both run in the request for small
files and on a Celery worker otherwise, so that no request parses a large file (it would
hold a web worker, which also serves the Contract app, for as long). Every problem with a
file ends as a message on the page, never a 500.

URLs (under ``/admin/leads/importjob/``, wired by ``ImportJobAdmin.get_urls``):
``upload/``, ``<id>/preview/`` (GET: preview, POST: confirm or cancel), ``<id>/progress/``
and ``<id>/error-report/``.
"""

import json
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from leads.admin_widgets import PostedIdAutocompleteSelect, may_view_leads
from leads.importers import LEAD_FIELDS, ImportFileError, LeadMapping
from leads.models import Campaign, Customer, ImportJob, ImportStatus
from leads.services import ImportPreview, open_import
from leads.tasks import (
    PREVIEW_ERROR_ROWS,
    check_import_job,
    enqueue_check,
    enqueue_import_job,
    fail_check,
    run_import_job,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    ImportJobModelAdmin = ModelAdmin[ImportJob]
else:
    ImportJobModelAdmin = Any

# A mapping is a few hundred bytes; anything near this is not a mapping (and JSON this
# long could nest deeper than the decoder's recursion limit).
MAPPING_MAX_BYTES = 64 * 1024
# Room for the form's other parts in a multipart body (CSRF token, customer, campaign,
# mapping text, part headers): a body longer than file limit + this is refused unread.
FORM_OVERHEAD_BYTES = 64 * 1024 + MAPPING_MAX_BYTES
# The job pages reload themselves this often while the file is checked or imported.
PROGRESS_REFRESH_SECONDS = 2


# --- Upload -----------------------------------------------------------------------------


class UploadSizeLimit(FileUploadHandler):
    """Stops receiving the import file once it is known to exceed the limit.

    Runs before Django's own handlers, so an oversized file is never written to memory
    or disk: refused at once when the request's declared length is already too large,
    otherwise as soon as the bytes received pass the limit. The rest of the body is
    drained (``connection_reset=False``) so that the browser gets the page with the
    message rather than a reset connection.
    """

    def __init__(self, request: HttpRequest, *, field_name: str, max_bytes: int) -> None:
        super().__init__(request)
        self.field_name = field_name
        self.max_bytes = max_bytes
        self.too_large = False
        self._watching = False
        self._received = 0

    def handle_raw_input(
        self,
        input_data: IO[bytes],
        META: dict[str, str],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        if content_length > self.max_bytes + FORM_OVERHEAD_BYTES:
            self.too_large = True

    def new_file(self, field_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, *args, **kwargs)
        self._watching = field_name == self.field_name
        self._received = 0
        if self._watching and self.too_large:
            raise StopUpload(connection_reset=False)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if self._watching:
            self._received += len(raw_data)
            if self._received > self.max_bytes:
                self.too_large = True
                raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def _size_limit_message() -> str:
    return (
        f"The file is larger than the admin import limit of "
        f"{filesizeformat(settings.LEADRANK_IMPORT_MAX_BYTES)}. Split it, or import it with "
        "`python manage.py import_leads PATH`, which has no size limit."
    )


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label="File",
        help_text="CSV (UTF-8 unless the mapping says otherwise; comma, semicolon, tab or pipe "
        "separated), XLSX, XLS or ODS. The first row is the header; the first sheet not hidden is read.",
        error_messages={"empty": "The file is empty.", "required": "Choose a file to import."},
    )
    customer = forms.ModelChoiceField(
        Customer.objects.all(),
        required=False,
        help_text="Customer of every row, when the file has no customer_id column.",
    )
    campaign = forms.ModelChoiceField(
        Campaign.objects.all(),
        required=False,
        help_text="Campaign of every row, when the file has no campaign_id column "
        "(the customer then defaults to the campaign's).",
    )
    mapping_text = forms.CharField(
        label="Mapping (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80, "spellcheck": "false"}),
        help_text='Optional, e.g. {"columns": {"external_id": "Prospect ID"}, '
        '"constants": {"lead_type": "stale"}, "empty_values": ["Select"]}. '
        "Fields not mapped are matched by name (case and spacing ignored).",
    )
    mapping_file = forms.FileField(
        label="or mapping file", required=False, help_text="The same JSON, as a file."
    )

    def __init__(self, *args: Any, admin_site: Any, too_large: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.too_large = too_large
        if too_large:
            # The upload was cut short on purpose: report its size, not a missing file.
            self.fields["file"].required = False
        self.mapping = LeadMapping()
        for name in ("customer", "campaign"):
            field = self.fields[name]
            assert isinstance(field, forms.ModelChoiceField)
            field.widget = PostedIdAutocompleteSelect(ImportJob._meta.get_field(name), admin_site)
            field.widget.choices = field.choices

    def clean_file(self) -> UploadedFile[bytes] | None:
        uploaded: UploadedFile[bytes] | None = self.cleaned_data.get("file")
        if self.too_large or (
            uploaded is not None and (uploaded.size or 0) > settings.LEADRANK_IMPORT_MAX_BYTES
        ):
            raise forms.ValidationError(_size_limit_message())
        return uploaded

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        customer: Customer | None = cleaned.get("customer")
        campaign: Campaign | None = cleaned.get("campaign")
        if campaign is not None:
            if customer is None:
                cleaned["customer"] = campaign.customer
            elif campaign.customer_id != customer.pk:
                self.add_error(
                    "campaign",
                    f"Campaign {campaign.name!r} belongs to another customer than {customer.name!r}.",
                )
        text = (cleaned.get("mapping_text") or "").strip()
        mapping_file: UploadedFile[bytes] | None = cleaned.get("mapping_file")
        if text and mapping_file is not None:
            self.add_error("mapping_file", "Give the mapping as text or as a file, not both.")
            return cleaned
        if mapping_file is not None:
            if (mapping_file.size or 0) > MAPPING_MAX_BYTES:
                self.add_error(
                    "mapping_file", f"This file is too large to be a mapping ({_mapping_limit()})."
                )
                return cleaned
            try:
                text = mapping_file.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                self.add_error("mapping_file", "The mapping file is not UTF-8 text.")
                return cleaned
        if text:
            field = "mapping_file" if mapping_file is not None else "mapping_text"
            if len(text.encode("utf-8", "surrogatepass")) > MAPPING_MAX_BYTES:
                self.add_error(field, f"This is too long to be a mapping ({_mapping_limit()}).")
                return cleaned
            try:
                data = json.loads(text)
            except ValueError as exc:
                self.add_error(field, f"The mapping is not valid JSON: {exc}.")
                return cleaned
            except RecursionError:  # brackets nested deeper than the decoder can follow
                self.add_error(field, "The mapping is not valid JSON: it is nested too deeply.")
                return cleaned
            try:
                self.mapping = LeadMapping.from_json(data)
            except ImportFileError as exc:
                self.add_error(field, f"The mapping is not usable: {exc}")
        return cleaned


def _mapping_limit() -> str:
    return f"a mapping is at most {filesizeformat(MAPPING_MAX_BYTES)}"


def _can_import(request: HttpRequest, model_admin: ImportJobModelAdmin) -> bool:
    """Importing writes leads: it needs the right to add jobs and to add and change leads."""
    return model_admin.has_add_permission(request) and request.user.has_perms(
        ("leads.add_lead", "leads.change_lead")
    )


def _context(request: HttpRequest, model_admin: ImportJobModelAdmin, **extra: Any) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": ImportJob._meta,
        "app_label": ImportJob._meta.app_label,
        "has_view_permission": model_admin.has_view_permission(request),
        **extra,
    }


def upload_view(request: HttpRequest, model_admin: ImportJobModelAdmin) -> HttpResponse:
    """The upload form. CSRF-exempt on the outside only so that the size limit can be
    installed before anything parses the body; the CSRF check runs right after."""
    if not _can_import(request, model_admin):
        raise PermissionDenied
    limit: UploadSizeLimit | None = None
    if request.method == "POST":
        limit = UploadSizeLimit(request, field_name="file", max_bytes=settings.LEADRANK_IMPORT_MAX_BYTES)
        request.upload_handlers.insert(0, limit)
    inner = csrf_protect(partial(_upload, model_admin=model_admin, limit=limit))
    return inner(request)


def _upload(
    request: HttpRequest, *, model_admin: ImportJobModelAdmin, limit: UploadSizeLimit | None
) -> HttpResponse:
    if request.method == "POST":
        # Parsing the body (first access to POST/FILES) is what sets the size limit's flag.
        data, files = request.POST, request.FILES
        too_large = limit is not None and limit.too_large
        form = ImportUploadForm(data, files, admin_site=model_admin.admin_site, too_large=too_large)
        if form.is_valid():
            job = _create_job(request, form)
            if job is not None and job.status == ImportStatus.FAILED:  # checked here, and failed
                messages.error(request, f"{job.original_name}: {job.message}")
                return redirect("admin:leads_importjob_upload")
            if job is not None:
                return redirect("admin:leads_importjob_preview", job_id=job.pk)
    else:
        form = ImportUploadForm(admin_site=model_admin.admin_site)
    context = _context(
        request,
        model_admin,
        title="Import leads",
        form=form,
        media=model_admin.media + form.media,
        max_bytes=settings.LEADRANK_IMPORT_MAX_BYTES,
        inline_rows=settings.LEADRANK_IMPORT_INLINE_ROWS,
        inline_check_bytes=settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES,
    )
    return TemplateResponse(request, "admin/leads/import_upload.html", context)


def _create_job(request: HttpRequest, form: ImportUploadForm) -> ImportJob | None:
    """Store the upload as a job and run the cheap whole-file checks (format, encoding,
    columns, at least one data row), then start the check of every row; on a bad file the
    job is discarded and the form says why."""
    uploaded: UploadedFile[bytes] = form.cleaned_data["file"]
    customer: Customer | None = form.cleaned_data.get("customer")
    campaign: Campaign | None = form.cleaned_data.get("campaign")
    original_name = Path(uploaded.name or "upload").name[:255]
    job = ImportJob.objects.create(
        file=uploaded,
        original_name=original_name,
        status=ImportStatus.CHECKING,
        customer=customer,
        campaign=campaign,
        mapping=form.mapping.to_json() if form.mapping != LeadMapping() else {},
        created_by=request.user if request.user.is_authenticated else None,
    )
    try:
        _check_file(job, form.mapping)
    except ImportFileError as exc:
        _discard(job)
        form.add_error("file", f"{original_name}: {exc}")
        return None
    except OSError as exc:
        _discard(job)
        form.add_error("file", f"{original_name}: the stored file could not be read ({exc.strerror or exc}).")
        return None
    _start_check(job)
    job.refresh_from_db(fields=["status", "message"])
    return job


def _start_check(job: ImportJob) -> None:
    """Check every row of a ``checking`` job: here for a small file (its preview is there
    at once), on a Celery worker for a larger one (the preview page follows the check)."""
    try:
        size = job.file.size
    except OSError as exc:
        fail_check(job.pk, f"The uploaded file could not be read: {exc.strerror or exc}.")
        return
    if size <= settings.LEADRANK_IMPORT_CHECK_INLINE_BYTES:
        check_import_job(job.pk)
    else:
        transaction.on_commit(partial(enqueue_check, job.pk))


def _check_file(job: ImportJob, mapping: LeadMapping) -> None:
    table, _ = open_import(
        Path(job.file.path), mapping=mapping, customer_id=job.customer_id, campaign_id=job.campaign_id
    )
    rows = table.rows
    try:
        first = next(rows, None)
    finally:
        close = getattr(rows, "close", None)
        if callable(close):
            close()  # releases the open file of a CSV reader
    if first is None:
        raise ImportFileError("The file has a header but no data rows.")


def _discard(job: ImportJob) -> None:
    job.file.delete(save=False)
    job.delete()


# --- Preview and confirmation ---------------------------------------------------------------


def preview_view(request: HttpRequest, model_admin: ImportJobModelAdmin, job_id: int) -> HttpResponse:
    job = get_object_or_404(ImportJob.objects.select_related("customer", "campaign"), pk=job_id)
    if not model_admin.has_view_permission(request, job):
        raise PermissionDenied
    if request.method == "POST":
        if not _can_import(request, model_admin):
            raise PermissionDenied
        if "cancel" in request.POST:
            return _cancel(request, job)
        return _confirm(request, job)
    if job.status == ImportStatus.CHECKING:
        return TemplateResponse(
            request,
            "admin/leads/import_checking.html",
            _context(
                request,
                model_admin,
                title=f"Checking {job.original_name}",
                job=job,
                refresh_seconds=PROGRESS_REFRESH_SECONDS,
                can_import=_can_import(request, model_admin),
            ),
        )
    if job.status != ImportStatus.PREVIEWED:
        return redirect("admin:leads_importjob_progress", job_id=job.pk)
    if job.preview is None:
        # Uploaded before previews were kept on the job: check it now, as an upload is. That
        # changes the job (and reads the whole file), so only for someone who may import it.
        if not _can_import(request, model_admin):
            messages.warning(
                request,
                f"The preview of {job.original_name} must be checked again by someone who can "
                "import leads; nothing was changed.",
            )
            return redirect("admin:leads_importjob_changelist")
        if ImportJob.objects.filter(pk=job.pk, status=ImportStatus.PREVIEWED).update(
            status=ImportStatus.CHECKING, heartbeat_at=None
        ):
            _start_check(job)
        return redirect("admin:leads_importjob_preview", job_id=job.pk)
    # The preview shows the file's rows as leads (ids, cities, sources, stages), and its
    # errors quote their values: for staff who may view leads, as the screens of leads are.
    if not may_view_leads(request):
        raise PermissionDenied
    preview = ImportPreview.from_json(job.preview)
    context = _context(
        request,
        model_admin,
        title=f"Preview of {job.original_name}",
        job=job,
        preview=preview,
        sample=_sample_rows(preview),
        fields=LEAD_FIELDS,
        errors_truncated=len(preview.errors) >= PREVIEW_ERROR_ROWS,
        error_rows_limit=PREVIEW_ERROR_ROWS,
        mapping_json=json.dumps(job.mapping, indent=2) if job.mapping else "",
        can_import=_can_import(request, model_admin),
        runs_inline=preview.total_rows <= settings.LEADRANK_IMPORT_INLINE_ROWS,
    )
    return TemplateResponse(request, "admin/leads/import_preview.html", context)


def _sample_rows(preview: ImportPreview) -> list[list[str]]:
    rows = []
    for lead in preview.sample:
        cells = []
        for name in LEAD_FIELDS:
            value = getattr(lead, name)
            if value is None:
                value = {"pricing_plan": "(customer's plan)", "created_at": "(time of import)"}.get(name, "")
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            cells.append(str(value))
        rows.append(cells)
    return rows


def _confirm(request: HttpRequest, job: ImportJob) -> HttpResponse:
    job.refresh_from_db(fields=["total_rows"])
    inline = job.total_rows is not None and job.total_rows <= settings.LEADRANK_IMPORT_INLINE_ROWS
    with transaction.atomic():
        # Conditional: a double click or two staff members confirming at once import once.
        claimed = ImportJob.objects.filter(pk=job.pk, status=ImportStatus.PREVIEWED).update(
            status=ImportStatus.QUEUED, preview=None
        )
        if claimed and not inline:
            # Sent only once the job row says "queued" for every other connection.
            transaction.on_commit(partial(enqueue_import_job, job.pk))
    if not claimed:
        messages.warning(request, "This import was already confirmed or cancelled.")
    elif inline:
        # Small file: the same task function, run here so the summary is there at once.
        run_import_job(job.pk)
    else:
        messages.info(request, "The import was queued; this page follows its progress.")
    return redirect("admin:leads_importjob_progress", job_id=job.pk)


def _cancel(request: HttpRequest, job: ImportJob) -> HttpResponse:
    # While the file is being checked, too: the check then finds the job cancelled and
    # stores nothing.
    cancelled = ImportJob.objects.filter(
        pk=job.pk, status__in=(ImportStatus.CHECKING, ImportStatus.PREVIEWED)
    ).update(
        status=ImportStatus.CANCELLED,
        finished_at=timezone.now(),
        message="Cancelled before importing.",
        preview=None,
    )
    if cancelled:
        job.file.delete(save=False)
        messages.info(request, f"The import of {job.original_name} was cancelled; nothing was written.")
        return redirect("admin:leads_importjob_upload")
    messages.warning(request, "This import was already confirmed or cancelled.")
    return redirect("admin:leads_importjob_progress", job_id=job.pk)


# --- Progress, summary, error report ----------------------------------------------------------


def progress_view(request: HttpRequest, model_admin: ImportJobModelAdmin, job_id: int) -> HttpResponse:
    job = get_object_or_404(
        ImportJob.objects.select_related("customer", "campaign", "created_by").defer("preview"), pk=job_id
    )
    if not model_admin.has_view_permission(request, job):
        raise PermissionDenied
    if job.status in (ImportStatus.CHECKING, ImportStatus.PREVIEWED):
        return redirect("admin:leads_importjob_preview", job_id=job.pk)
    active = job.status in (ImportStatus.QUEUED, ImportStatus.RUNNING)
    context = _context(
        request,
        model_admin,
        title=f"Import of {job.original_name}",
        job=job,
        active=active,
        refresh_seconds=PROGRESS_REFRESH_SECONDS,
        mapping_json=json.dumps(job.mapping, indent=2) if job.mapping else "",
        # The error report quotes rejected rows: offered to whom error_report_view serves it.
        may_view_leads=may_view_leads(request),
    )
    return TemplateResponse(request, "admin/leads/import_job.html", context)


def error_report_view(request: HttpRequest, model_admin: ImportJobModelAdmin, job_id: int) -> FileResponse:
    """The rejected rows as CSV, served through the admin (permission-checked), never MEDIA_URL."""
    job = get_object_or_404(ImportJob, pk=job_id)
    # The rejected rows quote the file's values: lead data, as on the preview.
    if not model_admin.has_view_permission(request, job) or not may_view_leads(request):
        raise PermissionDenied
    if not job.error_report:
        raise Http404("This import has no error report.")
    try:
        handle = job.error_report.open("rb")
    except FileNotFoundError:
        raise Http404("The error report file is missing.") from None
    return FileResponse(
        handle,
        as_attachment=True,
        filename=f"{Path(job.original_name).stem}-errors.csv",
        content_type="text/csv; charset=utf-8",
    )


def import_urls(model_admin: ImportJobModelAdmin) -> list[URLPattern]:
    """The import views, wrapped by the admin site (login, staff, never-cache, CSRF)."""
    wrap = model_admin.admin_site.admin_view
    return [
        # csrf_exempt here only: upload_view runs the CSRF check itself (see its docstring).
        path(
            "upload/",
            wrap(csrf_exempt(partial(upload_view, model_admin=model_admin))),
            name="leads_importjob_upload",
        ),
        path(
            "<int:job_id>/preview/",
            wrap(partial(preview_view, model_admin=model_admin)),
            name="leads_importjob_preview",
        ),
        path(
            "<int:job_id>/progress/",
            wrap(partial(progress_view, model_admin=model_admin)),
            name="leads_importjob_progress",
        ),
        path(
            "<int:job_id>/error-report/",
            wrap(partial(error_report_view, model_admin=model_admin)),
            name="leads_importjob_error_report",
        ),
    ]


def job_url(job: ImportJob) -> str:
    """Where a job is best looked at: its check and preview until confirmed, its progress
    page after."""
    name = "preview" if job.status in (ImportStatus.CHECKING, ImportStatus.PREVIEWED) else "progress"
    return reverse(f"admin:leads_importjob_{name}", kwargs={"job_id": job.pk})
