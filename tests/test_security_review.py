"""Findings of the security and authorization review that belong to no one module's tests:
what a request can do to a page before any view runs."""

import importlib

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import Resolver404, resolve, reverse

import config.urls
from leads.models import ApiKey, ApiScope


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["change", "history", "delete"])
def test_a_nul_in_an_admin_object_path_is_a_400_not_a_server_error(admin_client: Client, page: str) -> None:
    # An API key's primary key is text: the admin handed "\x00" from the path to PostgreSQL.
    url = reverse(f"admin:leads_apikey_{page}", args=["a\x00b"])
    admin_client.raise_request_exception = False

    response = admin_client.get(url)

    assert response.status_code == 400
    assert response.content.decode() == "The path holds a NUL character (%00), which no URL accepts."


@pytest.mark.django_db
def test_an_api_key_page_still_opens_by_its_id(admin_client: Client) -> None:
    api_key, _ = ApiKey.objects.create_key(name="app", scope=ApiScope.CONTRACT_APP)

    response = admin_client.get(reverse("admin:leads_apikey_change", args=[quote(api_key.pk)]))

    assert response.status_code == 200


def test_uploaded_files_are_not_served_by_url_even_in_debug(settings) -> None:
    # `make run` runs with DEBUG on; Django's static() helper would serve MEDIA_ROOT to anyone
    # at guessable paths (imports/errors/import-<id>-errors.csv).
    settings.DEBUG = True
    try:
        urls = importlib.reload(config.urls)
        with pytest.raises(Resolver404):
            resolve(f"/{settings.MEDIA_URL}imports/errors/import-1-errors.csv", urlconf=urls)
    finally:
        settings.DEBUG = False
        importlib.reload(config.urls)
