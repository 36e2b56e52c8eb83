"""The admins of other apps (auth's users and groups, django_celery_beat's schedules) have
leadrank's checks of list parameters and bulk-action rows, and still work."""

import re
from html import unescape
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from leads.admin_widgets import BaseAdmin

pytestmark = pytest.mark.django_db

OTHER_APPS = sorted(
    (model._meta.app_label, model._meta.model_name)
    for model in admin.site._registry
    if model._meta.app_label not in ("leads", "prioritization")
)


def changelist(app_label: str, model_name: str) -> str:
    return reverse(f"admin:{app_label}_{model_name}_changelist")


def test_every_admin_has_the_checks() -> None:
    assert ("auth", "user") in OTHER_APPS
    assert ("django_celery_beat", "periodictask") in OTHER_APPS
    assert all(isinstance(model_admin, BaseAdmin) for model_admin in admin.site._registry.values())


@pytest.mark.parametrize(("app_label", "model_name"), OTHER_APPS)
def test_a_lookup_of_no_filter_is_a_400_not_a_database_error(
    admin_client: Any, app_label: str, model_name: str
) -> None:
    # ?username__regex=( failed in PostgreSQL (an invalid regular expression), a 500.
    response = admin_client.get(changelist(app_label, model_name), {"id__regex": "("})

    assert response.status_code == 400


@pytest.mark.parametrize(("app_label", "model_name"), OTHER_APPS)
def test_a_bulk_action_on_a_row_that_is_no_id_selects_nothing(
    admin_client: Any, app_label: str, model_name: str
) -> None:
    url = changelist(app_label, model_name)

    response = admin_client.post(
        url, {"action": "delete_selected", "_selected_action": "abc", "index": 0}, follow=True
    )

    assert response.status_code == 200
    assert "Items must be selected in order to perform actions on them." in response.content.decode()


@pytest.mark.parametrize(("app_label", "model_name"), OTHER_APPS)
def test_every_filter_and_sorting_link_of_a_list_still_opens(
    admin_client: Any, app_label: str, model_name: str
) -> None:
    group = Group.objects.create(name="callers")
    PeriodicTask.objects.create(
        name="every minute", task="x", crontab=CrontabSchedule.objects.create(minute="*")
    )
    url = changelist(app_label, model_name)
    page = admin_client.get(url).content.decode()

    for link in {unescape(href) for href in re.findall(r'href="(\?[^"]+)"', page)}:
        assert admin_client.get(url + link).status_code == 200, link
    assert admin_client.get(url, {"q": "every"}).status_code == 200
    if (app_label, model_name) == ("auth", "user"):
        for parameter in ({"is_staff__exact": 1}, {"groups__id__exact": group.pk}):
            assert admin_client.get(url, parameter).status_code == 200
    if (app_label, model_name) == ("django_celery_beat", "periodictask"):
        assert "every minute" in admin_client.get(url, {"enabled__exact": 1}).content.decode()
