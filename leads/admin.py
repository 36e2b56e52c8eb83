"""Django admin of the lead data store.

The lead and event lists are built for tables of millions of rows: no full COUNT (the
paginator estimates), no facet counts, joins instead of per-row queries, sorting only by
the primary key (the one index every filter combination can walk), and exact-match
search that can use an index. Edits to a lead go through :func:`leads.services.update_lead`
so that the queue state follows them, exactly as a PATCH from the Contract app.
"""

from functools import cached_property
from math import ceil
from typing import Any, ClassVar, TypeVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import EmptyPage, Paginator
from django.db import connections, models
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, reverse
from django.utils import timezone
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from leads.admin_import import import_urls, job_url
from leads.admin_widgets import BaseAdmin, PostedIdAutocompleteSelect, may_view_leads
from leads.authentication import forget_verified_keys
from leads.ids import parse_id
from leads.importers import (
    TIMESTAMP_RANGE_ERROR,
    future_moment_error,
    latest_moment_for,
    timestamp_in_range,
)
from leads.models import (
    ApiKey,
    ApiScope,
    Campaign,
    Contractor,
    Customer,
    ImportJob,
    ImportStatus,
    Lead,
    LeadEvent,
    QueueStatus,
)
from leads.services import LeadConflict, update_lead
from prioritization.models import Alert, Decision, ModelVersion, PolicyVersion

# The library's own APIKey model is not what authenticates requests here (leads.ApiKey
# is, with scope and customer); listing it would invite creating keys that never work.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)

# --- Large tables ---------------------------------------------------------------------------


class EstimatedCountPaginator(Paginator[Any]):
    """A paginator whose ``count`` never scans a whole large table.

    Unfiltered: PostgreSQL's planner estimate (``pg_class.reltuples``, kept fresh by
    autovacuum's ANALYZE). Filtered, or when the estimate is small or unknown: an exact
    count capped at :attr:`exact_count_limit` (``COUNT(*)`` over a ``LIMIT`` subquery), so
    its cost is bounded whatever the filter. ``count_kind`` tells the template how to
    phrase the figure: "exact", "estimate" ("about N") or "at_least" ("more than N").
    """

    exact_count_limit = 10_000

    count_kind = "exact"

    @cached_property
    def num_pages(self) -> int:
        """Pages of the first :attr:`exact_count_limit` rows only, whatever the count.

        A page is read with OFFSET, which walks the index past every row before it: the
        last page of an estimated million leads (linked from every page) took 1.4 s, of
        three million events 4 s, and more as the tables grow. Older rows are reached by
        search and filters, as past the cap of a filtered count.
        """
        if self.count == 0 and not self.allow_empty_first_page:
            return 0
        hits = max(1, min(self.count, self.exact_count_limit) - self.orphans)
        return ceil(hits / int(self.per_page))

    def validate_number(self, number: Any) -> int:
        try:
            return super().validate_number(number)
        except EmptyPage:
            # Past the last page offered (an old link, a typed URL): the last page, rather
            # than the admin's "something's wrong with your database installation".
            if int(number) > 1:
                return self.num_pages
            raise

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        if not queryset.query.where:
            estimate = self._estimate(queryset)
            if estimate > self.exact_count_limit:
                self.count_kind = "estimate"
                return estimate
        capped = queryset.order_by()[: self.exact_count_limit + 1].count()
        if capped > self.exact_count_limit:
            self.count_kind = "at_least"
            return self.exact_count_limit
        return capped

    @staticmethod
    def _estimate(queryset: QuerySet[Any]) -> int:
        """Rows in the table per the planner's statistics; -1 when never analyzed."""
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [queryset.model._meta.db_table],
            )
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else -1


_M = TypeVar("_M", bound=models.Model)


class LargeTableAdmin(BaseAdmin[_M]):
    """The list of a table that grows by the million (leads, their history, the decision log,
    alerts, model versions): its count estimated or capped (:class:`EstimatedCountPaginator`),
    never a ``COUNT(*)`` of the table, and no facet counts beside the filters."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER


class KeepsHistoryAdmin(BaseAdmin[_M]):
    """An admin whose objects cannot go while leads or their history name them.

    Leads are never deleted (they are withdrawn) and the history and decision log refer to
    contractors with PROTECT, so such an object could not be deleted anyway. Django's delete
    page would still first collect every row the deletion reaches, to list it: every lead of
    a customer or campaign and every event of those leads, every event and decision of a
    contractor. At a million leads that is minutes and gigabytes for a page whose answer is
    "no". :meth:`kept_history` answers with one index probe per kind of row instead.
    """

    def kept_history(self, objs: list[_M]) -> list[str]:
        """What keeps these objects, one line per object and kind of row; empty if nothing."""
        return []

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        kept = self.kept_history(list(objs))
        if kept:
            # As protected rows: the page says why, and posting it deletes nothing.
            return [], {}, set(), kept
        return super().get_deleted_objects(objs, request)


class CascadesToRecordsAdmin(KeepsHistoryAdmin[_M]):
    """An admin whose objects take read-only records with them when deleted.

    The records' own admins refuse to delete them (history the engine writes), and Django's
    delete page reads that as "your account doesn't have permission to delete" even for a
    superuser, so the parent could never be deleted. The records go only along with their
    parent: whoever may delete the parent may delete them. Anything else the deletion
    reaches keeps Django's checks (permissions, protected rows).
    """

    cascade_records: ClassVar[tuple[type[models.Model], ...]] = ()

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for model in self.cascade_records:
            perms_needed.discard(str(model._meta.verbose_name))
        return deleted, counts, perms_needed, protected


class PostedIdAutocompleteAdmin(BaseAdmin[_M]):
    """Autocomplete fields that redisplay a posted value that is no id instead of failing
    (:class:`~leads.admin_widgets.PostedIdAutocompleteSelect`)."""

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField[Any] | None:
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = PostedIdAutocompleteSelect(
                db_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


# --- Customers, campaigns, contractors ---------------------------------------------------------


class CustomerAdminForm(forms.ModelForm[Customer]):
    def clean_alert_webhook_url(self) -> str:
        url: str = self.cleaned_data["alert_webhook_url"]
        scheme, separator, rest = url.partition("://")
        # Schemes are case-insensitive (RFC 3986) and the URL validator takes "HTTPS://", but
        # the column's CHECK (customer_alert_webhook_http) wants them in lowercase.
        return f"{scheme.lower()}{separator}{rest}" if separator else url


@admin.register(Customer)
class CustomerAdmin(CascadesToRecordsAdmin[Customer]):
    form = CustomerAdminForm
    list_display = ("name", "id", "pricing_plan", "campaign_count", "created_at")
    # The alert webhook URL: a URL typed without a scheme is https (Django 6's default).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_filter = ("pricing_plan",)
    search_fields = ("name",)
    ordering = ("name",)
    # Its policy's versions, its learned models, its alerts. Its policy is not a record:
    # deleting it takes the permission to delete policies.
    cascade_records = (PolicyVersion, ModelVersion, Alert)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        return super().get_queryset(request).annotate(campaign_count=Count("campaigns"))

    def kept_history(self, objs: list[Customer]) -> list[str]:
        leads = Lead.objects.filter(customer_id=OuterRef("pk"))  # lead_customer_created
        with_leads = Customer.objects.filter(Exists(leads), pk__in=[obj.pk for obj in objs])
        return [
            f"Leads of customer {customer}: leads are kept (withdrawn, never deleted)."
            for customer in with_leads
        ]

    @admin.display(description="campaigns", ordering="campaign_count")
    def campaign_count(self, obj: Customer) -> int:
        return int(getattr(obj, "campaign_count", 0))


@admin.register(Campaign)
class CampaignAdmin(CascadesToRecordsAdmin[Campaign], PostedIdAutocompleteAdmin[Campaign]):
    list_display = (
        "name",
        "id",
        "customer",
        "active",
        "time_zone",
        "calling_hours_start",
        "calling_hours_end",
        "calling_days",
    )
    list_filter = ("active", ("customer", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("customer",)
    search_fields = ("name", "customer__name")
    autocomplete_fields = ("customer",)
    cascade_records = (Alert,)  # its empty-queue alerts

    def kept_history(self, objs: list[Campaign]) -> list[str]:
        # No index starts with the campaign; its customer's bounds the probe.
        leads = Lead.objects.filter(customer_id=OuterRef("customer_id"), campaign_id=OuterRef("pk"))
        with_leads = Campaign.objects.filter(Exists(leads), pk__in=[obj.pk for obj in objs])
        return [
            f"Leads of campaign {campaign}: leads are kept (withdrawn, never deleted)."
            for campaign in with_leads
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None) -> tuple[str, ...]:
        fields: tuple[str, ...] = tuple(super().get_readonly_fields(request, obj))
        if obj is not None:
            # Its leads, import jobs, SLA rollups and alerts name the customer too: moving the
            # campaign would leave every one of its leads under a customer that no longer owns
            # its campaign (scored with one customer's policy, counted in the other's SLA).
            fields += ("customer",)
        return fields


@admin.register(Contractor)
class ContractorAdmin(KeepsHistoryAdmin[Contractor]):
    list_display = ("name", "id", "active", "qualified_campaigns", "created_at")
    list_filter = ("active",)
    search_fields = ("name",)
    filter_horizontal = ("campaigns",)
    # Counted by the engine at each claim (a policy's every n-th claim is a stale lead).
    readonly_fields = ("claims_made",)

    # Campaigns shown per row; the rest is summarized as "and N more".
    CAMPAIGNS_SHOWN = 5

    def get_queryset(self, request: HttpRequest) -> QuerySet[Contractor]:
        # One extra query for the whole page instead of one per contractor.
        return super().get_queryset(request).prefetch_related("campaigns")

    def save_model(self, request: HttpRequest, obj: Contractor, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Only what the form changed: claims_made is raised with F() by every claim, and
        # saving the whole row would set it back to what it was when this request read it.
        obj.save(update_fields=[f.name for f in obj._meta.concrete_fields if f.name in form.changed_data])

    def kept_history(self, objs: list[Contractor]) -> list[str]:
        ids = [obj.pk for obj in objs]
        # Each probe is served by an index that starts with the contractor.
        rows = {
            "holds a lead": Lead.objects.filter(holder_id=OuterRef("pk")),
            "has call history": LeadEvent.objects.filter(contractor_id=OuterRef("pk")),
            "has next-lead decisions": Decision.objects.filter(contractor_id=OuterRef("pk")),
        }
        return [
            f"Contractor {contractor} {what}: deactivate the contractor instead."
            for what, queryset in rows.items()
            for contractor in Contractor.objects.filter(Exists(queryset), pk__in=ids)
        ]

    @admin.display(description="qualified for")
    def qualified_campaigns(self, obj: Contractor) -> str:
        campaigns = obj.campaigns.all()  # served by the prefetch
        names = [campaign.name for campaign in campaigns[: self.CAMPAIGNS_SHOWN]]
        more = len(campaigns) - len(names)
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")


# --- Leads and their history -----------------------------------------------------------------


class CampaignOfCustomerFilter(admin.SimpleListFilter):
    """Campaigns of the customer chosen in the customer filter (a list of every campaign
    of every customer would not fit a sidebar)."""

    title = "campaign"
    parameter_name = "campaign"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        customer_id = parse_id(request.GET.get("customer__id__exact"))
        if customer_id is None:
            return []
        campaigns = Campaign.objects.filter(customer_id=customer_id).order_by("name")
        return [(str(pk), name) for pk, name in campaigns.values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # Any campaign id, listed or not (a link may name a campaign without its customer).
        campaign_id = parse_id(self.value())
        if campaign_id is not None:
            return queryset.filter(campaign_id=campaign_id)
        return queryset


# Shown on a lead's page: its latest events (older ones are in the event list).
EVENT_HISTORY_LIMIT = 50


class RecentEventsFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    def get_queryset(self) -> QuerySet[LeadEvent]:
        # Sliced once and cached: the formset asks for its queryset several times.
        if not hasattr(self, "_recent_events"):
            self._recent_events: QuerySet[LeadEvent] = super().get_queryset()[:EVENT_HISTORY_LIMIT]
        return self._recent_events


class LeadEventInline(admin.TabularInline[LeadEvent, Lead]):
    model = LeadEvent
    formset = RecentEventsFormSet
    fields = ("at", "kind", "disposition", "contractor", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = f"history (latest {EVENT_HISTORY_LIMIT} events)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[LeadEvent]:
        return super().get_queryset(request).select_related("contractor")

    def has_add_permission(self, request: HttpRequest, obj: Lead | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Lead | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Lead | None = None) -> bool:
        return False


# Fields the customer sends that staff may correct here; everything else is either the
# lead's identity (customer, external_id: the idempotency key) or engine state.
LEAD_EDITABLE_FIELDS = (
    "campaign",
    "lead_type",
    "city",
    "source",
    "stage",
    "last_activity",
    "pricing_plan",
    "rescheduled_at",
)
LEAD_ENGINE_FIELDS = (
    "status",
    "due_at",
    "holder",
    "lease_expires_at",
    "attempt_count",
    "reschedule_count",
    "first_attempt_at",
    "last_attempt_at",
    "closed_at",
    "closed_reason",
    "priority_key",
    "sla_deadline",
    "received_at",
    "updated_at",
)


class LeadAdminForm(forms.ModelForm[Lead]):
    class Meta:
        model = Lead
        fields = LEAD_EDITABLE_FIELDS

    def clean_campaign(self) -> Campaign:
        campaign: Campaign = self.cleaned_data["campaign"]
        if campaign.customer_id != self.instance.customer_id:
            raise forms.ValidationError(
                f"Campaign {campaign.name!r} belongs to customer {campaign.customer_id}, "
                f"not to this lead's customer {self.instance.customer_id}."
            )
        return campaign

    def clean_last_activity(self) -> Any:
        value = self.cleaned_data["last_activity"]
        changed = "last_activity" in self.changed_data and value is not None
        if changed and value > latest_moment_for(timezone.now()):
            raise forms.ValidationError(future_moment_error("last_activity", value.isoformat()))
        return value

    def clean_rescheduled_at(self) -> Any:
        value = self.cleaned_data["rescheduled_at"]
        if (
            "rescheduled_at" in self.changed_data
            and value is not None
            and self.instance.status == QueueStatus.CLOSED
        ):
            raise forms.ValidationError("The lead is closed; it cannot be rescheduled.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("last_activity", "rescheduled_at"):
            value = cleaned.get(name)
            if value is not None and not timestamp_in_range(value):
                self.add_error(name, TIMESTAMP_RANGE_ERROR)
        return cleaned


@admin.register(Lead)
class LeadAdmin(LargeTableAdmin[Lead], PostedIdAutocompleteAdmin[Lead]):
    form = LeadAdminForm
    list_display = (
        "id",
        "external_id",
        "customer",
        "campaign",
        "lead_type",
        "status",
        "city",
        "source",
        "stage",
        "pricing_plan",
        "created_at",
        "due_at",
        "attempt_count",
        "holder",
    )
    list_display_links = ("id", "external_id")
    list_select_related = ("customer", "campaign", "holder")
    list_filter = (
        "status",
        "lead_type",
        "pricing_plan",
        "customer",
        CampaignOfCustomerFilter,
        "created_at",
    )
    search_fields = ("external_id",)
    search_help_text = "Exact lead id or external id."
    # Sorting by anything but the primary key would sort the whole table.
    ordering = ("-id",)
    sortable_by = ("id",)
    autocomplete_fields = ("campaign",)
    inlines = (LeadEventInline,)
    fieldsets = (
        ("Identity", {"fields": ("external_id", "customer", "created_at")}),
        ("Lead data", {"fields": LEAD_EDITABLE_FIELDS}),
        ("Engine (read-only)", {"fields": LEAD_ENGINE_FIELDS}),
    )
    readonly_fields = ("external_id", "customer", "created_at", *LEAD_ENGINE_FIELDS)

    def has_delete_permission(self, request: HttpRequest, obj: Lead | None = None) -> bool:
        # A lead leaves the queue by being withdrawn (closed); deleting it would take its
        # history and the decision log that explains who was handed it, and why.
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Lead], search_term: str
    ) -> tuple[QuerySet[Lead], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Index lookups, never the ILIKE scans of the admin's default search. The external id
        # is indexed only behind the customer (lead_external_id_unique), and PostgreSQL before
        # 18 cannot skip a leading column: "external_id = term" alone read the whole table.
        # Naming every customer makes it one probe per customer (at most one lead each); the
        # ids are read first because an OR with the id lookup would turn it back into a scan.
        ids = list(
            Lead.objects.filter(customer_id__in=Customer.objects.values("pk"), external_id=term).values_list(
                "pk", flat=True
            )
        )
        pk = parse_id(term)
        if pk is not None:
            ids.append(pk)
        return queryset.filter(pk__in=ids), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Leads come in through the API and file imports ("Import leads"), which set the
        # queue state; a hand-made lead would not have one.
        return False

    def save_model(self, request: HttpRequest, obj: Lead, form: Any, change: bool) -> None:
        changes: dict[str, object] = {}
        for name in form.changed_data:
            value = form.cleaned_data[name]
            if name == "campaign":
                changes["campaign_id"] = value.pk
            else:
                changes[name] = value
        if changes:
            # A LeadConflict (the lead was closed after the form was checked) leaves the admin's
            # transaction, so that it neither logs the change nor says it succeeded.
            update_lead(lead_id=obj.pk, changes=changes)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except LeadConflict as exc:
            # The page again, showing the lead as it now is, and why nothing was saved.
            messages.error(request, f"{exc} Nothing was saved.")
            return HttpResponseRedirect(request.get_full_path())

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        import_admin = self.admin_site.get_model_admin(ImportJob)
        can_import = import_admin.has_add_permission(request) and request.user.has_perms(
            ("leads.add_lead", "leads.change_lead")
        )
        return super().changelist_view(request, {**(extra_context or {}), "can_import_leads": can_import})


@admin.register(LeadEvent)
class LeadEventAdmin(LargeTableAdmin[LeadEvent]):
    """The history is append-only: written by the engine, only read here."""

    list_display = ("id", "at", "lead", "kind", "disposition", "contractor")
    list_select_related = ("lead", "contractor")
    list_filter = ("kind", "disposition")
    search_fields = ("lead__id",)
    search_help_text = "Exact lead id."
    raw_id_fields = ("lead", "contractor")
    # Newest first by primary key: events are written in time order, and the id index
    # serves the page without sorting the table.
    ordering = ("-id",)
    sortable_by = ("id",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[LeadEvent], search_term: str
    ) -> tuple[QuerySet[LeadEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        lead_id = parse_id(term)
        if lead_id is None:
            return queryset.none(), False
        return queryset.filter(lead_id=lead_id), False

    def has_view_permission(self, request: HttpRequest, obj: LeadEvent | None = None) -> bool:
        # Each event names its lead (id, external id) and an update's detail holds the
        # lead's data: the history is for those who may see the leads themselves.
        return super().has_view_permission(request, obj) and may_view_leads(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LeadEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LeadEvent | None = None) -> bool:
        return False


# --- API keys ------------------------------------------------------------------------------


# Shown to staff who are not superusers in place of the admin scope they may not grant.
ADMIN_SCOPE_FOR_SUPERUSERS = (
    "Only a superuser may create an admin key: it may do everything through the API, which "
    "only superusers may do signed in to the admin."
)


class ApiKeyAdminForm(forms.ModelForm[ApiKey]):
    # Set by ApiKeyAdmin.get_form from the user creating the key.
    may_grant_admin_scope: ClassVar[bool] = True

    class Meta:
        model = ApiKey
        fields = ("name", "scope", "customer", "expiry_date", "revoked")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        scope = self.fields.get("scope")
        if not self.may_grant_admin_scope and isinstance(scope, forms.ChoiceField):
            # An admin key is the admin scope through the API: a staff member who may create
            # keys but is no superuser would otherwise give themselves what staff sessions are
            # refused (leads.authentication.staff_session_scope).
            scope.choices = [("", "---------")] + [
                (value, label) for value, label in ApiScope.choices if value != ApiScope.ADMIN
            ]
            scope.help_text = ADMIN_SCOPE_FOR_SUPERUSERS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk:
            return cleaned  # scope and customer are read-only once the key exists
        scope = cleaned.get("scope")
        customer = cleaned.get("customer")
        if scope == ApiScope.INGEST and customer is None:
            self.add_error("customer", "An ingest key belongs to exactly one customer: choose it.")
        elif scope and scope != ApiScope.INGEST and customer is not None:
            self.add_error("customer", "Only ingest keys belong to a customer; leave this empty.")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(PostedIdAutocompleteAdmin[ApiKey], APIKeyModelAdmin):
    """Create (the key is shown once, in a message) and revoke keys; keys are stored hashed."""

    form = ApiKeyAdminForm
    list_select_related = ("customer",)
    autocomplete_fields = ("customer",)
    actions = ("revoke_keys",)

    # Methods rather than attributes: the library's base class types its tuples exactly.
    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        return ("prefix", "name", "scope", "customer", "created", "expiry_date", "_has_expired", "revoked")

    def get_list_filter(self, request: HttpRequest) -> tuple[str, ...]:
        return ("scope", "revoked", "created")

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        return ("name", "prefix", "customer__name")

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        # A subclass per request: the form class is shared by every request of the process.
        return type(form.__name__, (form,), {"may_grant_admin_scope": request.user.is_superuser})

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "scope", "customer", "expiry_date")
        return ("prefix", "name", "scope", "customer", "created", "expiry_date", "revoked")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields: tuple[str, ...] = tuple(super().get_readonly_fields(request, obj))
        if obj is not None:
            # A key's scope and customer are what it was handed out for: make a new key instead.
            fields += tuple(f for f in ("scope", "customer", "created") if f not in fields)
            if obj.scope == ApiScope.ADMIN and not request.user.is_superuser:
                # Only superusers make admin keys, so only they may extend one (or bring an
                # expired one back); others may revoke it.
                fields += tuple(f for f in ("name", "expiry_date") if f not in fields)
        return fields

    @admin.action(description="Revoke selected API keys (cannot be undone)", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = queryset.filter(revoked=False).update(revoked=True)
        # Other web processes stop trusting the keys within LEADRANK_API_KEY_CACHE_SECONDS.
        forget_verified_keys()
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


# --- Imports -------------------------------------------------------------------------------


@admin.register(ImportJob)
class ImportJobAdmin(BaseAdmin[ImportJob]):
    """File imports. "Add" opens the upload form; a job opens its preview or progress page."""

    list_display = (
        "id",
        "original_name",
        "status",
        "customer",
        "campaign",
        "progress",
        "created_count",
        "updated_count",
        "rejected_count",
        "created_by",
        "created_at",
    )
    list_filter = ("status",)
    list_select_related = ("customer", "campaign", "created_by")
    search_fields = ("original_name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ImportJob]:
        # The kept preview (up to ~100 KB a job) is for the preview page only.
        return super().get_queryset(request).defer("preview")

    def get_urls(self) -> list[URLPattern]:
        # Before the defaults: "<path:object_id>/" would otherwise swallow "upload/".
        return [*import_urls(self), *super().get_urls()]

    @admin.display(description="progress")
    def progress(self, obj: ImportJob) -> str:
        total = f"{obj.total_rows:,}" if obj.total_rows is not None else "?"
        return f"{obj.processed_rows:,} / {total} ({obj.progress_percent}%)"

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:leads_importjob_upload"))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404("No import job with this id.")
        if not self.has_view_or_change_permission(request, job):
            raise PermissionDenied
        return HttpResponseRedirect(job_url(job))

    def has_change_permission(self, request: HttpRequest, obj: ImportJob | None = None) -> bool:
        return False

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ImportJob]) -> None:
        jobs = list(queryset)
        super().delete_queryset(request, queryset)
        for job in jobs:
            job.delete_files()

    def delete_model(self, request: HttpRequest, obj: ImportJob) -> None:
        super().delete_model(request, obj)
        obj.delete_files()

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        # A queued or running job's file is still to be read: such jobs are listed as what
        # keeps the deletion from going ahead (a refusal by permission would tell a superuser
        # "your account doesn't have permission"). A job being checked may go: its check then
        # finds no job and stores nothing.
        busy = [job for job in objs if job.status in (ImportStatus.QUEUED, ImportStatus.RUNNING)]
        if busy:
            return (
                [],
                {},
                set(),
                [f"{job} is {job.status}: it can be deleted once it has ended." for job in busy],
            )
        return super().get_deleted_objects(objs, request)
