"""Policy settings forms and the admin's policy preview.

The policy change form and the preview screen share one set of fields: every editable
field of :class:`~prioritization.models.PolicyVersion`, validated exactly as the model
validates a version (``clean()`` and its ``CheckConstraint``s), so a value the database
would refuse is a form error, never a 500.

The preview ranks a customer's leads twice at one instant: as the claim path sees them
now (stored keys, stored policy versions, the claim's bands and tie-break) and as a draft
policy would rank them (keys recomputed from the draft with :mod:`prioritization.scoring`).
It reads each active campaign's first leads through the claim's indexes, never the whole
queue (a customer may queue a million leads). Nothing is written.
"""

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from leads.admin_widgets import may_view_leads
from leads.ids import parse_id
from leads.models import Campaign, Customer, Lead
from prioritization import services
from prioritization.models import (
    ModelVersion,
    PolicyVersion,
    PriorityPolicy,
    WeightsSource,
    foreign_model_error,
    version_field_names,
    version_values,
)
from prioritization.scoring import (
    Band,
    Candidate,
    LeadFacts,
    PolicyParams,
    Ranked,
    explain,
    priority_key,
    rank,
    score_from_log,
    sla_deadline,
)
from prioritization.training import model_for_policy

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

    PolicyModelAdmin = ModelAdmin[PriorityPolicy]
else:
    PolicyModelAdmin = Any

# Leads shown in each column of the preview.
PREVIEW_TOP_LEADS = 25
JSON_FIELDS = ("city_weights", "source_weights", "stage_weights", "plan_weights")
# Version fields that only live on the model side of a version (not the database's
# identity or audit columns): what ``validate_constraints`` must not look at.
_CONSTRAINT_EXCLUDE = {"policy", "number", "created_at", "created_by", "note"}


# --- The settings fields ---------------------------------------------------------------------


class WeightsField(forms.JSONField):
    """Weights as JSON text. Django's field lets the decoder's RecursionError out (a 500)
    for text nested too deeply, when reading it and when showing it back."""

    default_error_messages = {"too_deep": "Enter valid JSON: this is nested too deeply."}

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(self.error_messages["too_deep"], code="too_deep") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)


def settings_form_fields() -> dict[str, forms.Field]:
    """Fresh form fields for every editable version field (JSON weights as JSON text)."""
    fields = forms.fields_for_model(
        PolicyVersion,
        fields=version_field_names(),
        field_classes=dict.fromkeys(JSON_FIELDS, WeightsField),
    )
    made: dict[str, forms.Field] = {}
    for name, field in fields.items():
        assert field is not None
        if name in JSON_FIELDS:
            field.widget = forms.Textarea(attrs={"rows": 3, "cols": 60, "class": "vLargeTextField"})
        if isinstance(field, forms.ModelChoiceField) and field.queryset is not None:
            # A model's label names its customer: read with it, not one query per option (the
            # simulator's form, which keeps these choices, made 1,000 queries for 1,000 models).
            field.queryset = field.queryset.select_related("customer")
        made[name] = field
    return made


def default_version() -> PolicyVersion | None:
    """The default policy's current version (``None`` before the first one is made)."""
    policy = PriorityPolicy.objects.filter(customer__isnull=True).select_related("current_version").first()
    return policy.current_version if policy is not None else None


# Every training adds a model per customer and a pooled one: a list of them all grew by
# thousands of options a year. The forms offer the newest few, and the one in use.
LEARNED_MODEL_CHOICES = 50


def offer_learned_models(
    form: forms.BaseForm, choices: QuerySet[ModelVersion], *, start: PolicyVersion | None
) -> None:
    """Let the form's learned-model field offer the newest :data:`LEARNED_MODEL_CHOICES` of
    ``choices`` (newest first) and, if among them, the model of ``start``: the version the
    draft starts from, whose model the form shows selected."""
    if "learned_model" not in form.fields:
        return
    field = cast(forms.ModelChoiceField, form.fields["learned_model"])  # type: ignore[type-arg]
    choices = choices.select_related("customer").order_by("-trained_at", "-id")
    offered = Q(pk__in=choices.values("pk")[:LEARNED_MODEL_CHOICES])
    if start is not None and start.learned_model_id is not None:
        offered |= Q(pk=start.learned_model_id)
    field.queryset = choices.filter(offered)
    offer = f"The newest {LEARNED_MODEL_CHOICES} models are offered, and the one in use."
    if offer not in field.help_text:
        field.help_text = f"{field.help_text} {offer}".strip()


def clean_settings(form: forms.BaseForm, cleaned: dict[str, Any]) -> dict[str, Any] | None:
    """Validate the settings of ``cleaned`` as a version; add errors to ``form``.

    Returns the version values when they are valid, else ``None``.
    """
    names = version_field_names()
    for name in JSON_FIELDS:
        if name in cleaned and cleaned[name] is None:
            cleaned[name] = {}  # an emptied text area means "no weights"
    if any(name not in cleaned for name in names):
        return None  # a field already failed its own validation
    values = {name: cleaned[name] for name in names}
    draft = PolicyVersion(**values)
    valid = True
    flagged: set[str] = set()
    try:
        draft.clean()
    except ValidationError as exc:
        flagged = set(exc.message_dict)
        form.add_error(None, exc)
        valid = False
    try:
        # The columns' own limits (a stale_every or a cap beyond its smallint or integer column):
        # the form fields have no upper bound, and the insert would fail with a DataError.
        draft.clean_fields(exclude=_CONSTRAINT_EXCLUDE | flagged)
    except ValidationError as exc:
        form.add_error(None, exc)
        valid = False
    try:
        # The same CheckConstraints the database enforces, checked before any write.
        draft.validate_constraints(exclude=_CONSTRAINT_EXCLUDE)
    except ValidationError as exc:
        if valid:  # clean() already explains what the constraints would refuse
            form.add_error(None, exc)
        valid = False
    return values if valid else None


def refuse_foreign_model(
    form: forms.BaseForm, values: dict[str, Any] | None, *, customer_id: int | None
) -> dict[str, Any] | None:
    """``values``, or ``None`` with an error on ``learned_model`` when they score with another
    customer's model than ``customer_id``'s (``None``: the default policy's, pooled only)."""
    if values is None:
        return None
    foreign = foreign_model_error(values.get("learned_model"), customer_id=customer_id)
    if foreign is None:
        return values
    form.add_error("learned_model", foreign)
    return None


def values_to_apply(values: dict[str, Any], *, policy: PriorityPolicy) -> dict[str, Any]:
    """The version values a save applies: a learned or blend policy without a model chosen
    gets the newest one of its customer (else the pooled one); none yet means manual
    weights until the first training. The preview ranks with the same values."""
    if values.get("weights_source") != WeightsSource.MANUAL and values.get("learned_model") is None:
        return {**values, "learned_model": model_for_policy(policy=policy)}
    return values


def draft_params(values: dict[str, Any]) -> PolicyParams:
    """Scoring parameters of unsaved version values (version id 0: not a stored version)."""
    return dataclasses.replace(PolicyVersion(**values).params(), version_id=0)


# --- The preview form ----------------------------------------------------------------------------


def starting_values(start: PolicyVersion | None) -> dict[str, Any]:
    """A draft's settings before any change: those of ``start``, the version it starts from
    (:func:`draft_start`), or the fields' defaults where there is none yet."""
    return version_values(start or PolicyVersion())


def draft_start(policy: PriorityPolicy | None) -> PolicyVersion | None:
    """The version a preview's draft starts from: the policy's current one; for a new
    policy (or one without a version yet), the default policy's."""
    if policy is not None and policy.current_version is not None:
        return policy.current_version
    return default_version()


class _PreviewFormBase(forms.Form):
    preview_customer = forms.ModelChoiceField(
        queryset=Customer.objects.none(),
        required=False,
        label="Customer",
        help_text="Whose leads to rank (customers that follow this policy).",
    )

    def __init__(self, *args: Any, policy: PriorityPolicy | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy
        field = cast(forms.ModelChoiceField, self.fields["preview_customer"])  # type: ignore[type-arg]
        field.queryset = customers_for_preview(policy)
        choices = ModelVersion.objects.all()
        if policy is not None:
            # The models the policy's page offers: its customer's and the pooled ones (the
            # default policy: the pooled ones). Another customer's multipliers are theirs.
            choices = choices.filter(
                Q(customer__isnull=True) | Q(customer_id=policy.customer_id)
                if policy.customer_id is not None
                else Q(customer__isnull=True)
            )
        offer_learned_models(self, choices, start=draft_start(policy))
        if policy is not None and policy.customer_id is not None:
            field.initial = policy.customer_id
            field.disabled = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        self.settings_values = clean_settings(self, cleaned)
        # A policy being created is for the customer previewed: its model is checked as its add
        # form will (the choices offer every model, its customer not being known yet).
        customer: Customer | None = cleaned.get("preview_customer")
        if self.policy is not None or customer is not None:
            customer_id = (
                self.policy.customer_id if self.policy is not None else getattr(customer, "pk", None)
            )
            self.settings_values = refuse_foreign_model(self, self.settings_values, customer_id=customer_id)
        return cleaned


PolicyPreviewForm = cast(
    type[_PreviewFormBase],
    type("PolicyPreviewForm", (_PreviewFormBase,), {"__module__": __name__, **settings_form_fields()}),
)


def customers_for_preview(policy: PriorityPolicy | None) -> QuerySet[Customer]:
    """A customer policy previews its customer; the default policy (or a policy being
    created) previews customers that have no policy of their own."""
    if policy is not None and policy.customer_id is not None:
        return Customer.objects.filter(pk=policy.customer_id)
    return Customer.objects.filter(priority_policy__isnull=True).order_by("name")


# --- The ranking ---------------------------------------------------------------------------------

# "More than this many" eligible leads: the count stops here (a customer may queue millions).
ELIGIBLE_COUNT_CAP = 10_000

# Leads a claim would wake first (due again, or their lease ran out): as the claim's wake.
_WOKEN_WHERE = (
    "campaign_id = c.campaign_id AND ((status = 'waiting' AND due_at <= %(now)s) "
    "OR (status = 'held' AND lease_expires_at <= %(now)s AND due_at <= %(now)s))"
)

# The leads the preview ranks, per active campaign: the first %(top)s of each list a claim
# reads the first of (best live and best stale by stored key on lead_claim_ready, nearest
# SLA deadline still ahead on lead_claim_sla), and of the leads a claim would wake (due
# again, or their lease ran out; few: the claim and beat wake them), the first %(top)s by
# key per type and by deadline. Index lookups of %(top)s rows, never the whole queue: a
# lead outside these lists has %(top)s leads of its own campaign before it in today's
# order, so today's first %(top)s are all read. One lateral lookup per campaign by its key
# (a `campaign_id = ANY(...)` lets the planner scan the queue instead).
_POOL_SQL = f"""
SELECT x.* FROM unnest(%(campaigns)s::bigint[]) AS c(campaign_id)
CROSS JOIN LATERAL (
    (SELECT {services.CANDIDATE_COLUMNS} FROM leads_lead
     WHERE campaign_id = c.campaign_id AND status = 'ready' AND lead_type = 'live'
     ORDER BY priority_key DESC NULLS LAST, id LIMIT %(top)s)
    UNION ALL
    (SELECT {services.CANDIDATE_COLUMNS} FROM leads_lead
     WHERE campaign_id = c.campaign_id AND status = 'ready' AND lead_type = 'stale'
     ORDER BY priority_key DESC NULLS LAST, id LIMIT %(top)s)
    UNION ALL
    (SELECT {services.CANDIDATE_COLUMNS} FROM leads_lead
     WHERE campaign_id = c.campaign_id AND status = 'ready' AND lead_type = 'live'
       AND first_attempt_at IS NULL AND sla_deadline > %(now)s
     ORDER BY sla_deadline, id LIMIT %(top)s)
    UNION ALL
    SELECT {services.CANDIDATE_COLUMNS} FROM (
        SELECT {services.CANDIDATE_COLUMNS},
               row_number() OVER (PARTITION BY lead_type ORDER BY priority_key DESC NULLS LAST, id) AS by_key,
               row_number() OVER (
                   ORDER BY CASE WHEN lead_type = 'live' AND first_attempt_at IS NULL
                                  AND sla_deadline > %(now)s THEN 0 ELSE 1 END, sla_deadline, id
               ) AS by_deadline
        FROM leads_lead WHERE {_WOKEN_WHERE}
    ) woken
    WHERE by_key <= %(top)s OR by_deadline <= %(top)s
) x
"""  # noqa: S608 (constant text)

# How many leads are eligible, counted up to ELIGIBLE_COUNT_CAP + 1.
_ELIGIBLE_SQL = f"""
SELECT count(*) FROM (
    SELECT 1 FROM unnest(%(campaigns)s::bigint[]) AS c(campaign_id)
    CROSS JOIN LATERAL (
        SELECT 1 FROM leads_lead WHERE campaign_id = c.campaign_id AND status = 'ready'
        UNION ALL
        SELECT 1 FROM leads_lead WHERE {_WOKEN_WHERE}
    ) x
    LIMIT %(cap)s
) e
"""  # noqa: S608 (constant text)


@dataclass(frozen=True)
class PreviewRow:
    lead: Lead
    position: int  # 1-based, in the ranking of this column
    other_position: int  # 1-based, in the other column's ranking of the leads read
    band: str
    score: float
    reasons: list[str]
    top: int = PREVIEW_TOP_LEADS  # positions past it are among the leads read only: not told

    @property
    def other_known(self) -> bool:
        """Whether ``other_position`` is a place in the other column's top (past it, only a
        lower bound: leads that were not read may come before)."""
        return self.other_position <= self.top

    @property
    def moved(self) -> int:
        """Places gained from the other ranking to this one (negative: lost)."""
        return self.other_position - self.position

    @property
    def other_label(self) -> str:
        return f"#{self.other_position}" if self.other_known else f"below #{self.top}"

    @property
    def movement(self) -> str:
        if not self.other_known:
            return f"new in the top {self.top}"
        if self.moved > 0:
            return f"up {self.moved}"
        if self.moved < 0:
            return f"down {-self.moved}"
        return "same place"

    @property
    def direction(self) -> str:
        return "up" if self.moved > 0 else "down" if self.moved < 0 else "same"


@dataclass(frozen=True)
class Preview:
    customer: Customer
    now: dt.datetime
    campaigns: list[Campaign]
    eligible: int  # eligible leads, counted up to ELIGIBLE_COUNT_CAP (more_eligible: more)
    more_eligible: bool
    read: int  # leads read and ranked in both columns
    current: list[PreviewRow]
    draft: list[PreviewRow]

    @property
    def moved_in_top(self) -> int:
        return sum(1 for row in self.draft if row.moved != 0)


def _score(ranked: Ranked) -> float:
    return score_from_log(ranked.log_score)


def _read_pool(
    *, campaign_ids: list[int], in_force: PolicyVersion, now: dt.datetime, top: int
) -> tuple[list[Candidate], dict[int, LeadFacts]]:
    """The candidates :data:`_POOL_SQL` reads, keyed as the claim keys them."""
    with transaction.atomic(), connection.cursor() as cursor:
        # The planner's cost of a few hundred small index lookups passes jit_above_cost:
        # compiling the plan took 0.44 s for a statement that runs in 30 ms (200 campaigns).
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(_POOL_SQL, {"campaigns": campaign_ids, "now": now, "top": top})
        rows = cursor.fetchall()
    unique = list({row[0]: row for row in rows}.values())  # a live lead near its deadline is in two lists
    return services.candidates_from_rows(unique, dict.fromkeys(campaign_ids, in_force))


def _count_eligible(campaign_ids: list[int], now: dt.datetime) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")  # as for _POOL_SQL
        cursor.execute(_ELIGIBLE_SQL, {"campaigns": campaign_ids, "now": now, "cap": ELIGIBLE_COUNT_CAP + 1})
        (count,) = cursor.fetchone() or (0,)
    return int(count)


def build_preview(
    *, customer: Customer, params: PolicyParams, now: dt.datetime, top: int = PREVIEW_TOP_LEADS
) -> Preview:
    """The customer's top leads now (stored keys and versions, as a claim ranks them) and
    under ``params``, with moves.

    Reads a bounded number of leads through the claim's indexes (:data:`_POOL_SQL`: each
    active campaign's first ``top`` of each list a claim reads), never the whole queue: the
    first column is exactly today's first ``top``; the draft reorders the leads read, so a
    lead the draft would lift from deeper in its campaign's queue is not shown.
    """
    campaigns = list(Campaign.objects.filter(customer=customer, active=True).order_by("name"))
    campaign_ids = [campaign.pk for campaign in campaigns]
    candidates: list[Candidate] = []
    facts: dict[int, LeadFacts] = {}
    eligible = 0
    if campaign_ids:
        in_force = services.current_versions([customer.pk])[customer.pk]
        candidates, facts = _read_pool(campaign_ids=campaign_ids, in_force=in_force, now=now, top=top)
        eligible = _count_eligible(campaign_ids, now) if candidates else 0

    current = sorted((rank(candidate, now) for candidate in candidates), key=lambda r: r.sort_key)
    draft = sorted(
        (
            rank(
                dataclasses.replace(
                    candidate,
                    key=priority_key(facts[candidate.lead_id], params),
                    deadline=sla_deadline(facts[candidate.lead_id], params),
                    policy=params,
                ),
                now,
            )
            for candidate in candidates
        ),
        key=lambda r: r.sort_key,
    )

    current_positions = {r.candidate.lead_id: i for i, r in enumerate(current, start=1)}
    draft_positions = {r.candidate.lead_id: i for i, r in enumerate(draft, start=1)}
    shown = {r.candidate.lead_id for r in current[:top]} | {r.candidate.lead_id for r in draft[:top]}
    leads = Lead.objects.in_bulk(sorted(shown)) if shown else {}

    def rows(ranking: Sequence[Ranked], others: dict[int, int]) -> list[PreviewRow]:
        made = []
        for position, ranked in enumerate(ranking[:top], start=1):
            lead_id = ranked.candidate.lead_id
            made.append(
                PreviewRow(
                    lead=leads[lead_id],
                    position=position,
                    other_position=others[lead_id],
                    band=Band(ranked.band).name.lower().replace("_", " "),
                    score=_score(ranked),
                    reasons=explain(facts[lead_id], ranked.candidate.policy, now=now, band=ranked.band),
                    top=top,
                )
            )
        return made

    return Preview(
        customer=customer,
        now=now,
        campaigns=campaigns,
        eligible=min(eligible, ELIGIBLE_COUNT_CAP),
        more_eligible=eligible > ELIGIBLE_COUNT_CAP,
        read=len(candidates),
        current=rows(current, draft_positions),
        draft=rows(draft, current_positions),
    )


def preview_now() -> dt.datetime:
    """The instant both rankings are computed at (one read of the clock per preview)."""
    return timezone.now()


# --- The view ------------------------------------------------------------------------------------


def preview_view(
    model_admin: PolicyModelAdmin, request: HttpRequest, object_id: str | None = None
) -> HttpResponse:
    """GET: the policy's current settings; POST: draft settings (from this screen or from
    the policy's change form, whose fields it shares) ranked for the chosen customer.

    Never writes: the form is validated and scored, not saved.
    """
    policy: PriorityPolicy | None = None
    if object_id is not None:
        policy = model_admin.get_object(request, object_id)
        if policy is None:
            raise Http404("No priority policy with this id.")
    if not model_admin.has_view_permission(request, policy):
        raise PermissionDenied
    # The rankings show leads (ids, city, source, stage): staff who may view leads only.
    if not may_view_leads(request):
        raise PermissionDenied

    preview: Preview | None = None
    if request.method == "POST":
        data = request.POST.copy()
        if not data.get("preview_customer") and data.get("customer"):
            # Posted from the add form: preview for the customer being given a policy.
            data.setlist("preview_customer", data.getlist("customer"))
        form = PolicyPreviewForm(data, policy=policy)
        if form.is_valid() and form.settings_values is not None:
            customer = form.cleaned_data.get("preview_customer")
            if customer is None:
                form.add_error("preview_customer", "Choose the customer whose leads to rank.")
            else:
                # A policy being created is the customer's (the model a save would pick is its).
                owner = policy if policy is not None else PriorityPolicy(customer=customer)
                values = values_to_apply(form.settings_values, policy=owner)
                preview = build_preview(customer=customer, params=draft_params(values), now=preview_now())
    else:
        # The settings in force, and today's order when the customer is known already.
        settings = starting_values(draft_start(policy))
        customers = customers_for_preview(policy)
        chosen = parse_id(request.GET.get("customer"))
        if policy is not None and policy.customer_id is not None:
            customer = customers.first()
        else:
            customer = customers.filter(pk=chosen).first() if chosen is not None else None
        initial = {**settings, "preview_customer": customer.pk if customer else None}
        form = PolicyPreviewForm(initial=initial, policy=policy)
        if customer is not None:
            preview = build_preview(customer=customer, params=draft_params(settings), now=preview_now())

    opts = model_admin.opts
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": f"Preview {policy}" if policy is not None else "Preview a new policy",
        "policy": policy,
        "form": form,
        "preview": preview,
        "top": PREVIEW_TOP_LEADS,
        "has_view_permission": model_admin.has_view_permission(request),
        "lead_url_name": "admin:leads_lead_change",
    }
    return TemplateResponse(request, "admin/prioritization/policy_preview.html", context)
