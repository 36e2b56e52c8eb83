"""Policy settings forms and the admin's policy preview.

The policy change form and the preview screen share one set of fields: every editable
field of :class:`~prioritization.models.PolicyVersion`, validated exactly as the model
validates a version (``clean()`` and its ``CheckConstraint``s), so a value the database
would refuse is a form error, never a 500.

The preview ranks a customer's eligible leads twice at one instant: as the claim path
sees them now (stored keys, stored policy versions: :func:`services.ranked_leads_at`)
and as a draft policy would rank them (keys recomputed from the draft with
:mod:`prioritization.scoring`). Nothing is written.
"""

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.core.exceptions import PermissionDenied, ValidationError
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
    PolicyVersion,
    PriorityPolicy,
    WeightsSource,
    foreign_model_error,
    version_field_names,
    version_values,
)
from prioritization.scoring import (
    Band,
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
        made[name] = field
    return made


def default_settings() -> dict[str, Any]:
    """The values a new customer policy starts from: the default policy's current ones."""
    policy = PriorityPolicy.objects.filter(customer__isnull=True).select_related("current_version").first()
    if policy is not None and policy.current_version is not None:
        return version_values(policy.current_version)
    return version_values(PolicyVersion())


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
        if "learned_model" in self.fields:  # each option's label names the model's customer
            models_field = cast(forms.ModelChoiceField, self.fields["learned_model"])  # type: ignore[type-arg]
            assert models_field.queryset is not None
            choices = models_field.queryset.select_related("customer")
            if policy is not None:
                # The models the policy's page offers: its customer's and the pooled ones (the
                # default policy: the pooled ones). Another customer's multipliers are theirs.
                choices = choices.filter(
                    Q(customer__isnull=True) | Q(customer_id=policy.customer_id)
                    if policy.customer_id is not None
                    else Q(customer__isnull=True)
                )
            models_field.queryset = choices
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


@dataclass(frozen=True)
class PreviewRow:
    lead: Lead
    position: int  # 1-based, in the ranking of this column
    other_position: int  # 1-based, in the other column's ranking
    band: str
    score: float
    reasons: list[str]

    @property
    def moved(self) -> int:
        """Places gained from the other ranking to this one (negative: lost)."""
        return self.other_position - self.position

    @property
    def movement(self) -> str:
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
    eligible: int  # eligible leads ranked (both columns rank the same leads)
    current: list[PreviewRow]
    draft: list[PreviewRow]

    @property
    def moved_in_top(self) -> int:
        return sum(1 for row in self.draft if row.moved != 0)


def _score(ranked: Ranked) -> float:
    return score_from_log(ranked.log_score)


def build_preview(
    *, customer: Customer, params: PolicyParams, now: dt.datetime, top: int = PREVIEW_TOP_LEADS
) -> Preview:
    """The customer's top leads now (stored policy) and under ``params``, with moves.

    Ranks every eligible lead of the customer's active campaigns (a scan, like the
    oracle it reuses): a lead far down today's order may come first under the draft.
    """
    campaigns = list(Campaign.objects.filter(customer=customer, active=True).order_by("name"))
    campaign_ids = [campaign.pk for campaign in campaigns]
    current = services.ranked_leads_at(campaign_ids=campaign_ids, now=now) if campaign_ids else []
    leads = Lead.objects.in_bulk([ranked.candidate.lead_id for ranked in current])

    draft: list[Ranked] = []
    for ranked in current:
        facts = services.facts_of(leads[ranked.candidate.lead_id])
        candidate = dataclasses.replace(
            ranked.candidate,
            key=priority_key(facts, params),
            deadline=sla_deadline(facts, params),
            policy=params,
        )
        draft.append(rank(candidate, now))
    draft.sort(key=lambda r: r.sort_key)

    current_positions = {r.candidate.lead_id: i for i, r in enumerate(current, start=1)}
    draft_positions = {r.candidate.lead_id: i for i, r in enumerate(draft, start=1)}

    def rows(ranking: Sequence[Ranked], others: dict[int, int]) -> list[PreviewRow]:
        made = []
        for position, ranked in enumerate(ranking[:top], start=1):
            lead = leads[ranked.candidate.lead_id]
            made.append(
                PreviewRow(
                    lead=lead,
                    position=position,
                    other_position=others[lead.pk],
                    band=Band(ranked.band).name.lower().replace("_", " "),
                    score=_score(ranked),
                    reasons=explain(
                        services.facts_of(lead), ranked.candidate.policy, now=now, band=ranked.band
                    ),
                )
            )
        return made

    return Preview(
        customer=customer,
        now=now,
        campaigns=campaigns,
        eligible=len(current),
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
        settings = (
            version_values(policy.current_version)
            if policy is not None and policy.current_version is not None
            else default_settings()
        )
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
