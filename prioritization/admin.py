"""Django admin of the engine: priority policies (versioned), their versions, the decision log.

A policy's page edits its *settings*, but a save never changes a version in place: when
any setting changed it adds a :class:`~prioritization.models.PolicyVersion` (who, when,
why), points the policy at it and enqueues a rescoring once the transaction commits.
Versions and decisions are read-only records.

URLs: ``/admin/prioritization/prioritypolicy/`` (list, add, ``<id>/change/``,
``<id>/preview/``, ``preview/`` for a policy being created),
``/admin/prioritization/policyversion/`` and ``/admin/prioritization/decision/``.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from leads.admin import CascadesToRecordsAdmin, LargeTableAdmin, PostedIdAutocompleteAdmin
from leads.admin_widgets import BaseAdmin, may_view_leads
from leads.ids import parse_id
from prioritization import (
    admin_alerts,  # noqa: F401 (registers the alert admin)
    admin_models,  # noqa: F401 (registers the learned models' admin)
    admin_simulation,  # noqa: F401 (registers the simulator's admin)
)
from prioritization.admin_preview import (
    clean_settings,
    draft_start,
    offer_learned_models,
    preview_view,
    refuse_foreign_model,
    settings_form_fields,
    starting_values,
    values_to_apply,
)
from prioritization.models import (
    Decision,
    ModelVersion,
    PolicyVersion,
    PriorityPolicy,
    version_field_names,
    version_values,
)
from prioritization.scoring import Band
from prioritization.services import PolicyChangedMeanwhile, enqueue_rescoring, save_policy_settings

logger = logging.getLogger(__name__)

# --- Saving a policy -------------------------------------------------------------------------


# --- Version history -------------------------------------------------------------------------


# Versions the policy's page lists, newest first; the version list has them all. A learned
# policy gets a version at every training (one a day), so a page listing all of them grew
# by a table row a day (3,000 versions: 1.1 MB and 1.8 s).
HISTORY_VERSIONS = 50


@dataclass(frozen=True)
class HistoryRow:
    version: PolicyVersion
    changes: list[tuple[str, Any, Any]]  # (field, before, after) against the previous version
    current: bool
    first: bool  # the policy's first version (nothing before it to compare with)


def version_history(
    policy: PriorityPolicy, *, limit: int = HISTORY_VERSIONS
) -> tuple[list[HistoryRow], bool]:
    """The policy's newest ``limit`` versions, newest first, with what each one changed, and
    whether older ones were left out. One query (the policy_version_number_unique index), one
    version more than shown: the oldest shown is compared with it."""
    newest = list(
        policy.versions.select_related("created_by", "learned_model__customer").order_by("-number")[
            : limit + 1
        ]
    )
    more = len(newest) > limit
    versions = newest[::-1]
    rows = []
    previous: dict[str, Any] | None = None
    for version in versions:
        values = version_values(version)
        changes = (
            [(name, previous[name], value) for name, value in values.items() if previous[name] != value]
            if previous is not None
            else []
        )
        rows.append(HistoryRow(version, changes, version.pk == policy.current_version_id, previous is None))
        previous = values
    if more:
        rows = rows[1:]  # read only to compare the oldest shown with
    return rows[::-1], more


# --- Priority policies ---------------------------------------------------------------------


class _PolicyFormBase(forms.ModelForm[PriorityPolicy]):
    note = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Why this change (kept with the new version).",
    )
    base_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = PriorityPolicy
        fields = ("name", "customer")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.current_version if self.instance.pk else None
        # A new customer policy starts from the default policy's current values.
        start = draft_start(self.instance if self.instance.pk else None)
        for name, value in starting_values(start).items():
            self.initial.setdefault(name, value)
        self.initial.setdefault("base_version", current.number if current is not None else None)
        if "customer" in self.fields:
            # Only the add form has it: there is one default policy, made by a migration.
            self.fields["customer"].required = True
            self.fields["customer"].help_text = "The customer this policy is for."
        # A saved policy may use its customer's models or the pooled ones (the default policy:
        # the pooled ones); a new policy any of them.
        choices = ModelVersion.objects.all()
        if self.instance.pk:
            mine = models.Q(customer__isnull=True)
            if self.instance.customer_id is not None:
                mine |= models.Q(customer_id=self.instance.customer_id)
            choices = choices.filter(mine)
        offer_learned_models(self, choices, start=start)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        current = self.instance.current_version if self.instance.pk else None
        base = cleaned.get("base_version")
        if current is not None and base is not None and base != current.number:
            who = current.created_by or "someone"
            self.add_error(
                None,
                f"This policy changed while you edited it: version {current.number} was saved by "
                f"{who} at {current.created_at:%Y-%m-%d %H:%M} UTC. Reload the page and apply your "
                "changes again.",
            )
        self.settings_values = clean_settings(self, cleaned)
        customer = self.instance.customer if self.instance.pk else cleaned.get("customer")
        if self.instance.pk or customer is not None:
            # The add form offers every model (its customer is not known yet): check it here.
            self.settings_values = refuse_foreign_model(
                self, self.settings_values, customer_id=customer.pk if customer else None
            )
        return cleaned


PriorityPolicyForm = cast(
    type[_PolicyFormBase],
    type("PriorityPolicyForm", (_PolicyFormBase,), {"__module__": __name__, **settings_form_fields()}),
)

SETTINGS_FIELDSETS: tuple[tuple[str, list[str]], ...] = (
    ("SLA", ["sla_window_minutes", "sla_target", "sla_protect_minutes"]),
    (
        "Scoring",
        [
            "ordering",
            "live_decay_minutes",
            "live_activity_decay_hours",
            "stale_activity_decay_days",
            "city_weights",
            "source_weights",
            "stage_weights",
            "plan_weights",
            "stale_every",
        ],
    ),
    ("Learned model", ["weights_source", "learned_share", "learned_model"]),
    (
        "Reschedules, leases and caps",
        [
            "reschedule_min_hours",
            "reschedule_max_hours",
            "reschedule_limit",
            "lease_seconds",
            "claims_per_hour_cap",
            "claims_per_day_cap",
        ],
    ),
)


def _settings_fieldsets() -> list[tuple[str, dict[str, Any]]]:
    """The settings grouped for the form; a version field not listed lands in "Other"."""
    listed = {name for _, names in SETTINGS_FIELDSETS for name in names}
    fieldsets = [(title, {"fields": names}) for title, names in SETTINGS_FIELDSETS]
    others = [name for name in version_field_names() if name not in listed]
    if others:
        fieldsets.append(("Other", {"fields": others}))
    return [(title, opts) for title, opts in fieldsets if opts["fields"]]


@admin.register(PriorityPolicy)
class PriorityPolicyAdmin(CascadesToRecordsAdmin[PriorityPolicy], PostedIdAutocompleteAdmin[PriorityPolicy]):
    form = PriorityPolicyForm
    # Versions are read-only records of their policy, deleted with it, never on their own.
    cascade_records = (PolicyVersion,)
    list_display = ("name", "customer_or_default", "version_number", "updated_at", "updated_by")
    list_select_related = ("customer", "current_version", "current_version__created_by")
    search_fields = ("customer__name", "name")
    search_help_text = "Customer or policy name."
    ordering = ("customer__name",)
    autocomplete_fields = ("customer",)
    change_form_template = "admin/prioritization/prioritypolicy/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[PriorityPolicy]:
        return super().get_queryset(request).select_related("customer", "current_version__created_by")

    @admin.display(description="customer", ordering="customer__name")
    def customer_or_default(self, obj: PriorityPolicy) -> str:
        return str(obj.customer) if obj.customer is not None else "default"

    @admin.display(description="version", ordering="current_version__number")
    def version_number(self, obj: PriorityPolicy) -> int | None:
        return obj.current_version.number if obj.current_version is not None else None

    @admin.display(description="updated at", ordering="current_version__created_at")
    def updated_at(self, obj: PriorityPolicy) -> Any:
        return obj.current_version.created_at if obj.current_version is not None else None

    @admin.display(description="by")
    def updated_by(self, obj: PriorityPolicy) -> str:
        version = obj.current_version
        if version is None or version.created_by is None:
            return "-"
        return str(version.created_by)

    @admin.display(description="versions")
    def history(self, obj: PriorityPolicy) -> SafeString:
        if obj.pk is None:
            return SafeString("")
        rows, more = version_history(obj)
        versions_url = (
            reverse("admin:prioritization_policyversion_changelist") + f"?policy__id__exact={obj.pk}"
        )
        return SafeString(
            render_to_string(
                "admin/prioritization/version_history.html",
                {"rows": rows, "more": more, "shown": HISTORY_VERSIONS, "versions_url": versions_url},
            )
        )

    @admin.display(description="settings in force")
    def current_settings(self, obj: PriorityPolicy) -> SafeString:
        version = obj.current_version
        if version is None:
            return SafeString("-")
        fields = {field.name: field for field in PolicyVersion._meta.concrete_fields}
        rows = ((fields[name].verbose_name, value) for name, value in version_values(version).items())
        return format_html(
            '<table class="policy-settings">{}</table>',
            format_html_join("", "<tr><th scope='row'>{}</th><td>{}</td></tr>", rows),
        )

    def get_fieldsets(self, request: HttpRequest, obj: PriorityPolicy | None = None) -> Any:
        if obj is not None and not self.has_change_permission(request, obj):
            # Staff who may only view: the settings as a table. The edit form's fields are a
            # version's, not the policy's, which Django's read-only rendering cannot look up.
            return [
                (None, {"fields": ["name", "customer_or_default"]}),
                (
                    f"Version {obj.current_version.number if obj.current_version else '-'}",
                    {"fields": ["current_settings"]},
                ),
                ("Version history", {"fields": ["history"]}),
            ]
        identity = ["name", "customer"] if obj is None else ["name", "customer_or_default"]
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [(None, {"fields": identity})]
        fieldsets += _settings_fieldsets()
        fieldsets.append(("This change", {"fields": ["note", "base_version"]}))
        if obj is not None:
            fieldsets.append(("Version history", {"fields": ["history"]}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: PriorityPolicy | None = None) -> Any:
        return ("customer_or_default", "history") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: PriorityPolicy | None = None) -> bool:
        if obj is not None and obj.is_default:
            return False  # no Delete button on its page; the bulk action says why (kept_history)
        return super().has_delete_permission(request, obj)

    def kept_history(self, objs: list[PriorityPolicy]) -> list[str]:
        # Said before Django's collector would list every decision of the policy's versions
        # (200,000 decisions: 14 s and 1.1 GB for a page whose answer is "no").
        kept = [
            f"{policy}: every customer without a policy of its own follows it."
            for policy in objs
            if policy.is_default
        ]
        decided = Decision.objects.filter(policy_version__policy=OuterRef("pk"))
        kept += [
            f"{policy}: the decision log names its versions, and decisions are kept."
            for policy in PriorityPolicy.objects.filter(Exists(decided), pk__in=[obj.pk for obj in objs])
        ]
        return kept

    def get_deleted_objects(
        self, objs: Sequence[PriorityPolicy] | QuerySet[PriorityPolicy], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if deleted:
            # Nothing in kept_history, so Django's collector ran: what it found protecting the
            # versions is the policy's own pointer at its current one, cleared before deleting.
            protected = []
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: PriorityPolicy) -> None:
        with transaction.atomic():
            PriorityPolicy.objects.filter(pk=obj.pk).update(current_version=None)
            obj.current_version = None
            obj.delete()
            # The customer's leads fall back to the default policy.
            transaction.on_commit(enqueue_rescoring)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PriorityPolicy]) -> None:
        for policy in queryset.filter(customer__isnull=False):  # the default is kept (kept_history)
            self.delete_model(request, policy)

    def save_model(self, request: HttpRequest, obj: PriorityPolicy, form: Any, change: bool) -> None:
        # A change writes the name only: the instance's current_version is the one the form was
        # loaded with, and writing it back would undo a version saved meanwhile (and hide it
        # from the base-version check below). save_policy_settings moves it, under its lock.
        obj.save(update_fields=["name"] if change else None)
        assert form.settings_values is not None  # the form is valid
        values = values_to_apply(form.settings_values, policy=obj)
        version = save_policy_settings(
            policy=obj,
            values=values,
            note=form.cleaned_data.get("note", ""),
            user=request.user,
            # The form checked its base version without a lock; the service checks it again
            # under the policy's row lock (PolicyChangedMeanwhile, see changeform_view).
            base_version=form.cleaned_data.get("base_version") if change else None,
        )
        if version is None:
            number = obj.current_version.number if obj.current_version else "?"
            self.message_user(request, f"No setting changed: the policy stays at version {number}.")
        else:
            self.message_user(
                request,
                f"Saved as version {version.number}. New leads use it at once; queued leads are "
                "rescored within a minute.",
                messages.SUCCESS,
            )

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The preview ranks leads: offered to staff who may view them (as its view checks).
        extra_context = {
            **(extra_context or {}),
            "can_preview": may_view_leads(request),
        }
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except PolicyChangedMeanwhile:
            # Another save landed between this form's validation and its save; the view's
            # transaction rolled back. Validating the form again shows its "changed while you
            # edited it" error, now against the version the other save made.
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        app_label, model_name = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path(
                "preview/",
                view(lambda request: preview_view(self, request)),
                name=f"{app_label}_{model_name}_preview_new",
            ),
            path(
                "<path:object_id>/preview/",
                view(lambda request, object_id: preview_view(self, request, object_id)),
                name=f"{app_label}_{model_name}_preview",
            ),
            *super().get_urls(),
        ]


# --- Versions ----------------------------------------------------------------------------------


M = TypeVar("M", bound=models.Model)


class ReadOnlyAdmin(BaseAdmin[M]):
    """Records the engine writes: listed and shown, never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False


@admin.register(PolicyVersion)
class PolicyVersionAdmin(ReadOnlyAdmin[PolicyVersion]):
    list_display = ("policy", "number", "created_at", "created_by", "note")
    list_filter = ("policy",)
    list_select_related = ("policy", "created_by")
    ordering = ("policy__name", "-number")


# --- Decisions -----------------------------------------------------------------------------


BAND_CHOICES = [(band.name.lower(), band.name.lower().replace("_", " ")) for band in reversed(Band)]


class BandFilter(admin.SimpleListFilter):
    """The bands the engine writes (a distinct-values filter would scan the log)."""

    title = "band"
    parameter_name = "band"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return BAND_CHOICES

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # Any other value is no band and is ignored (some, such as a NUL, the database refuses).
        value = self.value()
        if value in {band for band, _ in BAND_CHOICES}:
            return queryset.filter(band=value)
        return queryset


@admin.register(Decision)
class DecisionAdmin(LargeTableAdmin[Decision], ReadOnlyAdmin[Decision]):
    """The log of next-lead answers: who got which lead, for which tuple, and why."""

    list_display = (
        "decided_at",
        "lead_link",
        "contractor",
        "campaigns",
        "band",
        "score",
        "policy_version",
    )
    list_select_related = ("contractor", "policy_version__policy")
    list_filter = (BandFilter, "decided_at")
    search_fields = ("lead__id",)  # shows the box; the search itself is get_search_results
    search_help_text = "Exact lead id or contractor id."
    ordering = ("-decided_at", "-id")
    sortable_by = ("decided_at",)
    fields = (
        "decided_at",
        "lead_link",
        "contractor",
        "campaigns",
        "band",
        "score",
        "log_score",
        "priority_key",
        "policy_version",
        "lease_expires_at",
        "reasons_list",
    )
    readonly_fields = fields

    @admin.display(description="lead", ordering="lead_id")
    def lead_link(self, obj: Decision) -> SafeString:
        return format_html(
            '<a href="{}">Lead {}</a>', reverse("admin:leads_lead_change", args=[obj.lead_id]), obj.lead_id
        )

    @admin.display(description="campaigns")
    def campaigns(self, obj: Decision) -> str:
        return ", ".join(str(campaign_id) for campaign_id in obj.campaign_ids)

    @admin.display(description="reasons")
    def reasons_list(self, obj: Decision) -> SafeString:
        reasons = obj.reasons if isinstance(obj.reasons, list) else [obj.reasons]
        if not reasons:
            return SafeString("-")
        items = format_html_join("", "<li>{}</li>", ((str(reason),) for reason in reasons))
        return format_html('<ul class="decision-reasons">{}</ul>', items)

    def has_view_permission(self, request: HttpRequest, obj: Decision | None = None) -> bool:
        # Every row names a lead, links to its page and gives its facts (city, source, stage in
        # the reasons): the log is for staff who may view leads, as the other screens that show them.
        return super().has_view_permission(request, obj) and may_view_leads(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Decision]:
        # The detail page shows the contractor and version too: one query, not three.
        return super().get_queryset(request).select_related("contractor", "policy_version__policy")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Decision], search_term: str
    ) -> tuple[QuerySet[Decision], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        number = parse_id(term)
        if number is None:
            return queryset.none(), False
        # Both use an index: decision_lead and decision_contractor.
        return queryset.filter(models.Q(lead_id=number) | models.Q(contractor_id=number)), False
