"""Requests answered before or around the views: a NUL in the query string or the path, a
missing trailing slash, Django's own refusals and failures under /api/."""

from typing import Any
from unittest import mock

import pytest
from django.test import Client
from rest_framework.test import APIClient

from leads.models import Campaign, Lead
from tests.factories import lead_body


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        # Django's own list filters hand the value to the query: a DataError, a 500.
        "/admin/leads/lead/?status__exact=%00",
        "/admin/leads/importjob/?status__exact=a%00b",
        "/admin/prioritization/alert/?kind__exact=%00",
    ],
)
def test_a_nul_in_the_query_string_is_a_400(admin_client: Client, url: str) -> None:
    response = admin_client.get(url)

    assert response.status_code == 400
    assert (
        response.content.decode()
        == "The query string holds a NUL character (%00), which no parameter accepts."
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "/api/v1/leads/?external_id=%00",
            "The query string holds a NUL character (%00), which no parameter accepts.",
        ),
        ("/api/v1/leads/%00/", "The path holds a NUL character (%00), which no URL accepts."),
    ],
)
def test_under_the_api_the_nul_400_is_in_the_apis_json_error_shape(
    admin_client: Client, url: str, message: str
) -> None:
    response = admin_client.get(url)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": message}


@pytest.mark.django_db
def test_an_encoded_percent_sign_followed_by_zeros_is_not_a_nul(admin_client: Client) -> None:
    assert admin_client.get("/admin/leads/lead/?q=%2500").status_code == 200


# --- A missing trailing slash -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_a_post_without_the_trailing_slash_is_sent_on_with_its_body_and_not_lost(
    ingest_api: APIClient, campaign: Campaign, settings: Any, debug: bool
) -> None:
    # A 301 made clients send the POST again as a GET: a 200 answering the lead list, and the
    # lead lost. Django in debug mode refused to redirect it at all (a RuntimeError, a 500).
    settings.DEBUG = debug
    body = lead_body(campaign, external_id="no-slash")

    redirected = ingest_api.post("/api/v1/leads", body, format="json")
    followed = ingest_api.post("/api/v1/leads", body, format="json", follow=True)

    assert redirected.status_code == 308
    assert redirected["Location"] == "/api/v1/leads/"
    assert followed.redirect_chain == [("/api/v1/leads/", 308)]
    assert followed.status_code == 201
    assert Lead.objects.filter(external_id="no-slash").count() == 1


# --- Django's own refusals and failures under /api/ ---------------------------------------------


@pytest.mark.django_db
def test_more_query_parameters_than_django_reads_are_a_json_400_under_the_api(admin_api: APIClient) -> None:
    query = "&".join(f"a{i}=1" for i in range(1_100))  # DATA_UPLOAD_MAX_NUMBER_FIELDS: 1,000

    response = admin_api.get(f"/api/v1/leads/?{query}")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "malformed or too large" in response.json()["detail"]


@pytest.mark.django_db
def test_a_host_not_allowed_is_a_json_400_under_the_api_and_a_page_elsewhere(admin_api: APIClient) -> None:
    api = admin_api.get("/api/v1/leads/", HTTP_HOST="evil.example")
    page = admin_api.get("/admin/", HTTP_HOST="evil.example")

    assert (api.status_code, api["Content-Type"]) == (400, "application/json")
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_an_unforeseen_error_under_the_api_is_a_json_500(admin_api: APIClient) -> None:
    admin_api.raise_request_exception = False
    with mock.patch("rest_framework.views.APIView.initial", side_effect=RuntimeError("a bug")):
        response = admin_api.get("/api/v1/customers/")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"].startswith("Server error")


@pytest.mark.django_db
def test_the_api_docs_page_answers_get_and_refuses_options_without_a_500(admin_client: Client) -> None:
    assert admin_client.get("/api/docs/").status_code == 200
    assert admin_client.head("/api/docs/").status_code == 200
    assert admin_client.options("/api/docs/").status_code == 405
