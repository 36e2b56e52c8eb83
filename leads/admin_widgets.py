"""Admin widgets and the base of every leadrank ``ModelAdmin``, shared by the admin
modules (``leads.admin`` imports ``leads.admin_import``, so what both use lives here)."""

from collections.abc import Sequence
from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.db.models.fields.related import RelatedField
from django.http import HttpRequest, HttpResponse

from leads.models import Lead

_M = TypeVar("_M", bound=models.Model)


# The query parameters Django's field list filters read, after the field's path: choices,
# booleans and relations (``__exact``, a relation's ``__id__exact``), dates (``__gte``,
# ``__lt``), every kind (``__isnull``), all values (the bare path), empty (``__isempty``).
_FIELD_FILTER_SUFFIXES = ("", "__exact", "__isnull", "__gte", "__lt", "__isempty")


class BaseAdmin(admin.ModelAdmin[_M]):
    """What every leadrank ``ModelAdmin`` derives from.

    A bulk action posted with a row that is no id (a tampered form: "abc", a NUL) would reach
    Django's ``pk__in`` lookup and fail there, a 500; such values are dropped, and with none
    left Django says that no items were selected.

    A list takes from the URL only the parameters of its own filters. Django takes any lookup
    on a model's field: some fail in the database (``?external_id__regex=(``,
    ``?created_at__year=99999``), a 500, and others read millions of rows without an index
    (``?reasons__0=x`` on the decision log). Any other parameter is a 400.
    """

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        return lookup in self._filter_parameters(request) and super().lookup_allowed(lookup, value, request)

    def _filter_parameters(self, request: HttpRequest) -> set[str]:
        allowed: set[str] = set()
        for item in self.get_list_filter(request):
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                allowed.add(item.parameter_name or "")
                continue
            path = str(item[0] if isinstance(item, list | tuple) else item)
            allowed.update(path + suffix for suffix in _FIELD_FILTER_SUFFIXES)
            field = get_fields_from_path(self.model, path)[-1]
            if isinstance(field, RelatedField):
                allowed.add(f"{path}__{field.target_field.name}__exact")
        if self.date_hierarchy:
            allowed.update(f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day"))
        return allowed

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        pk = self.model._meta.pk
        assert pk is not None
        ids = [value for value in selected if "\x00" not in value and _is_value_of(pk, value)]
        if len(ids) != len(selected):
            posted = request.POST.copy()
            posted.setlist(helpers.ACTION_CHECKBOX_NAME, ids)
            request.POST = posted  # type: ignore[assignment]
        return super().response_action(request, queryset, *args, **kwargs)


def guard_every_admin(site: admin.AdminSite = admin.site) -> None:
    """Give the admins of other apps (auth's users and groups, django_celery_beat's
    schedules) :class:`BaseAdmin`'s checks of list parameters and bulk-action rows: without
    them ``?username__regex=(`` or a posted row "abc" is a 500 on those pages too."""
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, BaseAdmin):
            continue
        other = type(model_admin)
        guarded = type(other.__name__, (BaseAdmin, other), {"__module__": other.__module__})
        site.unregister(model)
        site.register(model, guarded)


def may_view_leads(request: HttpRequest) -> bool:
    """Whether a screen that shows leads (the SLA dashboard, the policy preview, an import's
    preview and error report) is for this user: the lead admin decides, so that the
    permission to change leads counts as well."""
    return admin.site.get_model_admin(Lead).has_view_permission(request)


class PostedIdAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete widget, able to redisplay a form whose posted value is no id.

    To label the selected option Django looks the posted value up as it is (``pk__in``),
    which raises on "abc" instead of finding nothing: a 500 for a tampered request (the
    widget itself only posts ids). Such a value is left out of the options; the form field
    already reports it as an invalid choice.
    """

    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        target = self.field.target_field
        return super().optgroups(name, [v for v in value if _is_value_of(target, v)], attr)


def _is_value_of(field: models.Field[Any, Any], value: Any) -> bool:
    try:
        field.to_python(value)
    except ValidationError:
        return False
    return True
