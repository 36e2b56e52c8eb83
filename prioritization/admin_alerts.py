"""Django admin of alerts: open and past alerts, read-only (the evaluation opens and closes
them). Registered by ``prioritization.admin``."""

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from leads.admin import LargeTableAdmin
from prioritization.models import Alert


class AlertStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("closed", "closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "open":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset


@admin.register(Alert)
class AlertAdmin(LargeTableAdmin[Alert]):
    """Alerts are records of the evaluation: listed and shown, never edited here."""

    list_display = (
        "opened_at",
        "kind",
        "customer",
        "campaign",
        "message",
        "closed_at",
        "opened_webhook",
        "resolved_webhook",
    )
    list_filter = (AlertStateFilter, "kind")
    list_select_related = ("customer", "campaign")
    # An alert is one occurrence of a condition, and a campaign whose queue empties and fills
    # all day opens one every few minutes: the table grows by the million. Newest first is
    # newest id first (alerts are written as they open), which the primary key serves; no
    # index serves opened_at, and sorting by it, or by any column, sorted the whole table at
    # every load.
    ordering = ("-id",)
    sortable_by = ()
    fields = (
        "kind",
        "customer",
        "campaign",
        "message",
        "opened_at",
        "checked_at",
        "closed_at",
        "detail",
        "opened_webhook",
        "resolved_webhook",
        "webhook_error",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False
