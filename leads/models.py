"""The lead data store: customers, campaigns, contractors, leads and their history.

Enumerations are text columns guarded by CHECK constraints so that the admin, the
importers, raw SQL and the shell all hit the same rule. Each index says which query
it serves; the claim indexes are partial so that leads that cannot be handed out
(waiting for a reschedule, held by a contractor, closed) never sit in their scan path.
"""

import datetime as dt
import zoneinfo

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey


def _choices_check(field: str, choices: type[models.TextChoices], name: str) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(**{f"{field}__in": choices.values}), name=name)


class PricingPlan(models.TextChoices):
    STARTER = "starter", "Starter"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class LeadType(models.TextChoices):
    LIVE = "live", "Live"
    STALE = "stale", "Stale"


class QueueStatus(models.TextChoices):
    # Eligible later: rescheduled or a callback in the future. Kept out of the claim index.
    WAITING = "waiting", "Waiting"
    # Eligible now: in the claim index.
    READY = "ready", "Ready"
    # Handed to a contractor until an outcome arrives or the lease expires.
    HELD = "held", "Held"
    # Finished: converted, not interested, wrong number, do not call or withdrawn.
    CLOSED = "closed", "Closed"


class CloseReason(models.TextChoices):
    CONVERTED = "converted", "Converted"
    NOT_INTERESTED = "not_interested", "Not interested"
    WRONG_NUMBER = "wrong_number", "Wrong number"
    DO_NOT_CALL = "do_not_call", "Do not call"
    WITHDRAWN = "withdrawn", "Withdrawn by the customer"
    # Leads imported with a past outcome (a mapped "converted" column): history that trains
    # the learned model, stored closed so that it never enters the queue, never called here.
    PAST_CONVERTED = "past_converted", "Converted (imported past outcome)"
    PAST_NOT_CONVERTED = "past_not_converted", "Not converted (imported past outcome)"


# Names in the system's zone folder (which available_timezones() lists whole) that are not a
# place's clock. "localtime" is the host's own setting, a link to /etc/localtime: calling
# hours would follow whichever machine runs the claim, and where the file is missing,
# ZoneInfo("localtime") fails there. "Factory" is tzdata's zone for a machine whose zone was
# never set: UTC under the name "-00".
_NOT_A_PLACE = {
    "localtime": "the clock setting of whichever machine runs leadrank",
    "Factory": "tzdata's placeholder for a machine with no zone set",
}


def _validate_time_zone(value: str) -> None:
    # One check for the admin's form and the API's serializer (DRF copies model validators).
    if value in _NOT_A_PLACE:
        raise ValidationError(
            f"{value!r} is {_NOT_A_PLACE[value]}, not a place's time zone: name one (e.g. Europe/Berlin)."
        )
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin).")


class Customer(models.Model):
    name = models.CharField(max_length=200, unique=True)
    pricing_plan = models.CharField(max_length=20, choices=PricingPlan.choices, default=PricingPlan.STARTER)
    created_at = models.DateTimeField(default=timezone.now)
    # Alerts about this customer (prioritization.alerts) are POSTed here as JSON.
    alert_webhook_url = models.URLField(
        max_length=500,
        blank=True,
        default="",
        db_default="",  # rows inserted by raw SQL (benchmarks, scripts) need no value
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Optional. Alerts (SLA at risk, empty queue) are POSTed here as JSON when they "
        "open and when they clear.",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            _choices_check("pricing_plan", PricingPlan, "customer_pricing_plan_valid"),
            models.CheckConstraint(
                condition=Q(alert_webhook_url="") | Q(alert_webhook_url__regex=r"^https?://"),
                name="customer_alert_webhook_http",
            ),
        ]

    def __str__(self) -> str:
        return self.name


# Calling hours default to a working day in the campaign's zone, Monday to Friday.
DEFAULT_CALLING_START = dt.time(8, 0)
DEFAULT_CALLING_END = dt.time(20, 0)
ALL_WEEKDAYS = [0, 1, 2, 3, 4, 5, 6]  # Monday = 0, as datetime.weekday()


def default_calling_days() -> list[int]:
    return [0, 1, 2, 3, 4]


class Campaign(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="campaigns")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[_validate_time_zone])
    calling_hours_start = models.TimeField(default=DEFAULT_CALLING_START)
    calling_hours_end = models.TimeField(default=DEFAULT_CALLING_END)
    calling_days = ArrayField(
        models.PositiveSmallIntegerField(),
        default=default_calling_days,
        help_text="Weekdays with calling hours, Monday = 0 … Sunday = 6.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["customer_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["customer", "name"], name="campaign_name_unique_per_customer"),
            models.CheckConstraint(
                condition=Q(calling_hours_start__lt=models.F("calling_hours_end")),
                name="campaign_calling_hours_ordered",
            ),
            models.CheckConstraint(
                condition=Q(calling_days__contained_by=ALL_WEEKDAYS) & ~Q(calling_days=[]),
                name="campaign_calling_days_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.customer_id})"

    def clean(self) -> None:
        if self.calling_hours_start >= self.calling_hours_end:
            raise ValidationError({"calling_hours_end": "Calling hours must end after they start."})
        if not self.calling_days or not set(self.calling_days) <= set(ALL_WEEKDAYS):
            raise ValidationError({"calling_days": "Use weekday numbers 0 (Monday) to 6 (Sunday)."})


class Contractor(models.Model):
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    campaigns = models.ManyToManyField(Campaign, related_name="contractors", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Claims so far; a policy may reserve every n-th claim for a stale lead.
    claims_made = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Lead(models.Model):
    # --- The schema's fields, as the customer sends them -------------------------------
    # customer_id is indexed by the (customer, external_id) unique constraint's prefix.
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, db_index=False)
    # No plain campaign_id index: every per-campaign query of the engine is served by the
    # partial indexes below, and one index fewer keeps imports faster.
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, db_index=False)
    external_id = models.CharField(max_length=200)
    lead_type = models.CharField(max_length=10, choices=LeadType.choices)
    city = models.CharField(max_length=200, blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="")
    last_activity = models.DateTimeField(null=True, blank=True)
    stage = models.CharField(max_length=200, blank=True, default="")
    pricing_plan = models.CharField(max_length=20, choices=PricingPlan.choices)
    rescheduled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    # --- What the engine keeps ---------------------------------------------------------
    status = models.CharField(max_length=10, choices=QueueStatus.choices)
    # When the lead became (or becomes) eligible: created_at, or its reschedule/callback.
    due_at = models.DateTimeField()
    holder = models.ForeignKey(
        Contractor,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        db_index=False,
        related_name="held_leads",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempt_count = models.PositiveIntegerField(default=0)
    reschedule_count = models.PositiveIntegerField(default=0)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_reason = models.CharField(max_length=20, choices=CloseReason.choices, blank=True, default="")
    # Time-invariant ordering key within a campaign; see prioritization.scoring.
    priority_key = models.FloatField(null=True, blank=True)
    sla_deadline = models.DateTimeField(null=True, blank=True)
    # Id of the prioritization.PolicyVersion the key was computed with. A plain number,
    # not a foreign key: versions are never deleted, and imports skip one FK check per row.
    scored_version = models.PositiveIntegerField(null=True, blank=True)

    received_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # The idempotency key of pushes and imports: ON CONFLICT target of the upsert.
            models.UniqueConstraint(fields=["customer", "external_id"], name="lead_external_id_unique"),
            _choices_check("lead_type", LeadType, "lead_type_valid"),
            _choices_check("pricing_plan", PricingPlan, "lead_pricing_plan_valid"),
            _choices_check("status", QueueStatus, "lead_status_valid"),
            models.CheckConstraint(
                condition=Q(closed_reason="") | Q(closed_reason__in=CloseReason.values),
                name="lead_closed_reason_valid",
            ),
            # A held lead always has a holder and a lease; nothing else has either.
            models.CheckConstraint(
                condition=(
                    Q(status=QueueStatus.HELD, holder__isnull=False, lease_expires_at__isnull=False)
                    | (~Q(status=QueueStatus.HELD) & Q(holder__isnull=True, lease_expires_at__isnull=True))
                ),
                name="lead_held_iff_holder",
            ),
            # A closed lead says why and when; an open one has no reason.
            models.CheckConstraint(
                condition=(Q(status=QueueStatus.CLOSED, closed_at__isnull=False) & ~Q(closed_reason=""))
                | (~Q(status=QueueStatus.CLOSED) & Q(closed_reason="")),
                name="lead_closed_iff_reason",
            ),
            # A contractor holds one lead at a time. Claims take leads without locking the
            # contractor, so this is what stops two concurrent requests of one contractor
            # from taking two leads: the second take waits for the first to commit and
            # fails here (the engine then answers with the lead the first one took). It is
            # also the "which lead does contractor X hold?" lookup of a retried next-lead:
            #   WHERE holder_id = X [AND lease_expires_at <= / > now]
            # Partial on "has a holder" (the same rows as status = 'held', by
            # lead_held_iff_holder) rather than on the status, so that each lookup of held
            # leads can use one index only: a query stating status = 'held' (per campaign,
            # lead_held_lease) cannot use this one, and one stating holder_id = X without the
            # status cannot use lead_held_lease. With both on the same predicate, a generic
            # plan made while few leads were held (the statistics say both indexes are
            # empty) could scan all held leads of one for a lookup meant for the other.
            models.UniqueConstraint(
                fields=["holder"], condition=Q(holder__isnull=False), name="lead_one_held_per_holder"
            ),
        ]
        indexes = [
            # Claim path, "best live/stale lead of campaign C now":
            #   WHERE campaign_id = C AND status = 'ready' AND lead_type = T
            #   ORDER BY priority_key DESC NULLS LAST, id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED
            models.Index(
                "campaign",
                "lead_type",
                models.F("priority_key").desc(nulls_last=True),
                "id",
                name="lead_claim_ready",
                condition=Q(status=QueueStatus.READY),
            ),
            # Claim path, SLA protection, "earliest deadline not yet passed in campaign C":
            #   WHERE campaign_id = C AND status = 'ready' AND lead_type = 'live'
            #     AND first_attempt_at IS NULL AND sla_deadline > now ORDER BY sla_deadline, id
            models.Index(
                "campaign",
                "sla_deadline",
                "id",
                name="lead_claim_sla",
                condition=Q(status=QueueStatus.READY, lead_type=LeadType.LIVE, first_attempt_at__isnull=True),
            ),
            # Promotion of due leads, "waiting leads of campaigns C… due by now" (claim time
            # and the beat promoter): WHERE status = 'waiting' AND campaign_id = ANY(C) AND due_at <= now
            models.Index(
                "campaign", "due_at", name="lead_waiting_due", condition=Q(status=QueueStatus.WAITING)
            ),
            # Lease expiry, "held leads of campaigns C whose lease ran out" (claim time, beat):
            #   WHERE campaign_id = C AND status = 'held' AND lease_expires_at <= now
            # (lookups by holder leave the status out: see lead_one_held_per_holder).
            models.Index(
                "campaign",
                "lease_expires_at",
                name="lead_held_lease",
                condition=Q(status=QueueStatus.HELD),
            ),
            # SLA figures (prioritization.sla), "leads of customers K created in [a, b)": today's
            # figures are computed live through it and each day is rolled up through it once.
            # The other indexes are partial on the queue state and know nothing of creation
            # time; rows arrive in created_at order, so inserts only touch the right edge.
            models.Index("customer", "created_at", name="lead_customer_created"),
            # Rescoring walks the open leads in id order, a batch at a time:
            #   WHERE id > after AND status <> 'closed' ORDER BY id LIMIT n
            # Through the primary key that walk reads every closed lead's row too, so a pass
            # (every minute) would grow with the whole history rather than with the queue.
            # New rows land at its right edge; an update of an open lead that is not HOT (the
            # claim, outcome and rescoring writes change indexed columns) adds an entry at its id.
            models.Index("id", name="lead_open_id", condition=~Q(status=QueueStatus.CLOSED)),
        ]

    def __str__(self) -> str:
        return f"Lead {self.pk} ({self.external_id})"


class EventKind(models.TextChoices):
    CLAIMED = "claimed", "Claimed"
    RELEASED = "released", "Released"
    LEASE_EXTENDED = "lease_extended", "Lease extended"
    LEASE_EXPIRED = "lease_expired", "Lease expired"
    ATTEMPT = "attempt", "Call attempt"
    RESCHEDULED = "rescheduled", "Rescheduled"
    BECAME_STALE = "became_stale", "Became stale"
    CLOSED = "closed", "Closed"
    UPDATED = "updated", "Updated by the Contract app"
    WITHDRAWN = "withdrawn", "Withdrawn"


class Disposition(models.TextChoices):
    NO_ANSWER = "no_answer", "No answer"
    BUSY = "busy", "Busy"
    NOT_INTERESTED = "not_interested", "Connected, not interested"
    CALLBACK = "callback", "Connected, callback requested"
    CONVERTED = "converted", "Qualified / converted"
    WRONG_NUMBER = "wrong_number", "Wrong number"
    DO_NOT_CALL = "do_not_call", "Do not call"


class LeadEvent(models.Model):
    """What happened to a lead, when, and by whom: the lead's history and call attempts."""

    # Serves a lead's history, newest first: WHERE lead_id = L ORDER BY at DESC.
    lead = models.ForeignKey(Lead, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    at = models.DateTimeField()
    contractor = models.ForeignKey(
        Contractor, on_delete=models.PROTECT, null=True, blank=True, db_index=False
    )
    disposition = models.CharField(max_length=20, choices=Disposition.choices, blank=True, default="")
    idempotency_key = models.CharField(max_length=100, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        constraints = [
            _choices_check("kind", EventKind, "lead_event_kind_valid"),
            models.CheckConstraint(
                condition=Q(disposition="") | Q(disposition__in=Disposition.values),
                name="lead_event_disposition_valid",
            ),
            # An attempt reported twice with the same key is one attempt.
            models.UniqueConstraint(
                fields=["lead", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="lead_event_idempotency_unique",
            ),
        ]
        indexes = [
            models.Index("lead", models.F("at").desc(), name="lead_event_history"),
            # A contractor's recent activity (caps, admin filter by contractor).
            models.Index("contractor", models.F("at").desc(), name="lead_event_contractor"),
            # The leases-expired counter of /metrics (prioritization.metrics): a count over
            # this index, which holds expiries only (claims and outcomes never enter it).
            models.Index("at", name="lead_event_lease_expired", condition=Q(kind=EventKind.LEASE_EXPIRED)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of lead {self.lead_id} at {self.at:%Y-%m-%d %H:%M}"


class ApiScope(models.TextChoices):
    INGEST = "ingest", "Ingest (one customer's leads and campaigns)"
    CONTRACT_APP = "contract-app", "Contract app (leads read/patch, next lead, outcomes)"
    ADMIN = "admin", "Admin (everything)"


class ApiKey(AbstractAPIKey):
    """An API key; stored as a SHA-512 hash by djangorestframework-api-key."""

    scope = models.CharField(max_length=20, choices=ApiScope.choices)
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            _choices_check("scope", ApiScope, "api_key_scope_valid"),
            # An ingest key is bound to exactly one customer; other scopes to none.
            models.CheckConstraint(
                condition=Q(scope=ApiScope.INGEST, customer__isnull=False)
                | (~Q(scope=ApiScope.INGEST) & Q(customer__isnull=True)),
                name="api_key_ingest_has_customer",
            ),
        ]


class ImportStatus(models.TextChoices):
    CHECKING = "checking", "Checking the file"
    PREVIEWED = "previewed", "Previewed, waiting for confirmation"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


def import_upload_path(instance: "ImportJob", filename: str) -> str:
    return f"imports/{timezone.now():%Y/%m/%d}/{filename}"


class ImportJob(models.Model):
    """One file import from the admin: uploaded, checked (the preview), confirmed, run in the
    background."""

    file = models.FileField(upload_to=import_upload_path)
    original_name = models.CharField(max_length=255)
    status = models.CharField(max_length=20, choices=ImportStatus.choices, default=ImportStatus.CHECKING)
    # Defaults for rows whose file has no customer / campaign column.
    customer = models.ForeignKey(Customer, on_delete=models.SET_NULL, null=True, blank=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.SET_NULL, null=True, blank=True)
    mapping = models.JSONField(default=dict, blank=True)
    # The whole file's check (leads.services.ImportPreview.to_json), kept for the preview
    # page: a large file is checked once, in the background, not on every page view.
    preview = models.JSONField(null=True, blank=True)
    total_rows = models.PositiveIntegerField(null=True, blank=True)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    # Every rejected row (row, column, reason) as CSV, downloadable from the admin.
    error_report = models.FileField(upload_to="imports/errors/", blank=True)
    message = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # When its task (the check of the file, then the import once confirmed) was last sent to
    # the workers: a job still waiting for one a stall period later is sent again
    # (leads.tasks.sweep_import_jobs), as the broker may have lost the message.
    sent_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # The running job's last sign of life (its start, then every stored chunk): a job whose
    # worker died stops renewing it and is failed by leads.tasks.sweep_import_jobs.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [_choices_check("status", ImportStatus, "import_job_status_valid")]

    def __str__(self) -> str:
        return f"Import {self.pk}: {self.original_name}"

    def delete_files(self) -> None:
        """Remove the uploaded file and the error report from storage (the fields are left
        for the caller to save)."""
        for stored in (self.file, self.error_report):
            if stored:
                stored.delete(save=False)

    @property
    def progress_percent(self) -> int:
        if not self.total_rows:
            return 100 if self.status == ImportStatus.DONE else 0
        return min(100, round(100 * self.processed_rows / self.total_rows))
