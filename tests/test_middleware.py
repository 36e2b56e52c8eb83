"""Requests refused before any view: a NUL in the query string or the path."""

import pytest
from django.test import Client


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
