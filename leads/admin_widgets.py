"""Admin widgets shared by the admin modules (``leads.admin`` imports ``leads.admin_import``,
so what both use lives here)."""

from collections.abc import Sequence
from typing import Any

from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.db import models


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
