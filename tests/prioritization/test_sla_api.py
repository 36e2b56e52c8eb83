"""GET /api/v1/stats/sla/: shape, figures, who may read what, and 400s for bad parameters."""

import datetime as dt

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from leads.models import ApiScope
from prioritization.sla import TAT_BUCKETS
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import T0
from tests.prioritization.sla_world import MINUTE, call_at, live_lead

pytestmark = pytest.mark.django_db

URL = "/api/v1/stats/sla/"
NOW = T0 + 2 * dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def two_customers(make_contractor):
    """Customer A: a lead in SLA and one missed; customer B: one lead pending."""
    a = CampaignFactory(customer=CustomerFactory(name="A"))
    b = CampaignFactory(customer=CustomerFactory(name="B"))
    contractor = make_contractor(a, b)
    call_at(contractor, live_lead(a, T0), T0 + 5 * MINUTE)
    live_lead(a, T0 + MINUTE)
    live_lead(b, NOW - 10 * MINUTE)
    return a, b


def test_every_parameter_is_optional_and_the_default_is_today_for_every_customer(
    admin_api: APIClient, two_customers
) -> None:
    a, b = two_customers
    response = admin_api.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["today"], body["time_zone"]) == (
        "2026-11-24",
        "2026-11-24",
        "2026-11-24",
        "UTC",
    )
    assert body["generated_at"] == "2026-11-24T12:00:00Z"
    assert body["overall"]["sla"]["range"] == {
        "live_leads": 3,
        "in_sla": 1,
        "missed": 1,
        "pending": 1,
        "stale_leads": 0,
        "attainment": 0.5,
    }
    assert body["overall"]["sla"]["today"] == body["overall"]["sla"]["range"]
    assert body["overall"]["tat"]["called"] == 1
    assert 5 * 60 <= body["overall"]["tat"]["p50_seconds"] <= 6 * 60
    assert len(body["overall"]["tat"]["histogram"]) == len(body["tat_bucket_edges_seconds"]) == TAT_BUCKETS
    assert body["overall"]["queue"] == {
        "live_due": 2,
        "live_later": 0,
        "stale_due": 0,
        "stale_later": 0,
        "stale": 0,
        "held": 0,
        "total": 2,
    }
    assert [c["name"] for c in body["customers"]] == ["A", "B"]
    first = body["customers"][0]
    assert (first["customer_id"], first["sla_window_minutes"], first["sla_target"]) == (
        a.customer_id,
        30.0,
        0.9,
    )
    assert first["meets_target"] is False
    assert first["sla"]["last_7_days"]["missed"] == 1
    assert [d["day"] for d in first["daily"]] == ["2026-11-24"]
    assert body["customers"][1]["meets_target"] is None
    assert [c["campaign_id"] for c in body["campaigns"]] == [a.pk, b.pk]
    assert body["campaigns"][1]["sla"]["range"]["pending"] == 1


def test_leads_at_risk_are_listed_with_the_minutes_left(admin_api: APIClient, two_customers) -> None:
    _, b = two_customers  # B's lead: deadline in 20 minutes
    body = admin_api.get(URL, {"at_risk_minutes": 25}).json()

    assert body["at_risk_minutes"] == 25
    assert body["overall"]["at_risk"] == 1
    (lead,) = body["at_risk_leads"]
    assert (lead["campaign_id"], lead["status"], lead["minutes_left"]) == (b.pk, "ready", 20.0)
    assert lead["sla_deadline"] == "2026-11-24T12:20:00Z"
    assert admin_api.get(URL).json()["overall"]["at_risk"] == 0  # the policy's 10 minutes


def test_a_range_of_days_is_given_with_from_and_to(admin_api: APIClient, two_customers) -> None:
    a, _ = two_customers
    live_lead(a, T0 - 3 * dt.timedelta(days=1))

    body = admin_api.get(URL, {"from": "2026-11-18", "to": "2026-11-20"}).json()
    assert (body["from"], body["to"]) == ("2026-11-18", "2026-11-20")
    assert body["overall"]["sla"]["range"]["live_leads"] == 0
    assert body["overall"]["sla"]["last_7_days"]["live_leads"] == 4
    assert len(body["overall"]["daily"]) == 3

    body = admin_api.get(URL, {"from": "2026-11-21"}).json()
    assert (body["from"], body["to"]) == ("2026-11-21", "2026-11-24")
    assert body["overall"]["sla"]["range"]["live_leads"] == 4
    body = admin_api.get(URL, {"to": "2026-11-21"}).json()
    assert (body["from"], body["to"]) == ("2026-11-21", "2026-11-21")
    assert body["overall"]["sla"]["range"]["missed"] == 1


def test_one_customer_or_one_campaign(admin_api: APIClient, two_customers) -> None:
    a, b = two_customers
    second = CampaignFactory(customer=a.customer)

    body = admin_api.get(URL, {"customer_id": a.customer_id}).json()
    assert [c["customer_id"] for c in body["customers"]] == [a.customer_id]
    assert [c["campaign_id"] for c in body["campaigns"]] == [a.pk, second.pk]
    assert body["overall"]["sla"]["range"]["live_leads"] == 2

    body = admin_api.get(URL, {"campaign_id": b.pk}).json()
    assert [c["campaign_id"] for c in body["campaigns"]] == [b.pk]
    assert [c["customer_id"] for c in body["customers"]] == [b.customer_id]
    assert body["overall"]["sla"]["range"]["pending"] == 1


def test_a_contract_app_key_reads_every_customer(contract_api: APIClient, two_customers) -> None:
    response = contract_api.get(URL)
    assert response.status_code == 200
    assert len(response.json()["customers"]) == 2


def test_a_staff_user_signed_in_to_the_admin_reads_every_customer(two_customers) -> None:
    staff = User.objects.create_user("staff", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(content_type__app_label="leads", codename="view_lead"))
    client = APIClient()
    client.force_login(staff)

    body = client.get(URL).json()

    assert sorted(c["customer_id"] for c in body["customers"]) == sorted(c.customer_id for c in two_customers)


def test_staff_who_may_not_view_leads_in_the_admin_do_not_read_the_figures(two_customers) -> None:
    # The SLA dashboard refuses them too: the figures name the leads at risk.
    client = APIClient()
    client.force_login(User.objects.create_user("staff", is_staff=True))

    assert client.get(URL).status_code == 403


def test_an_ingest_key_reads_only_its_own_customer(make_client, two_customers) -> None:
    a, b = two_customers
    api = make_client(ApiScope.INGEST, a.customer)

    body = api.get(URL).json()
    assert [c["customer_id"] for c in body["customers"]] == [a.customer_id]
    assert [c["campaign_id"] for c in body["campaigns"]] == [a.pk]
    assert body["overall"]["sla"]["range"]["live_leads"] == 2
    assert api.get(URL, {"customer_id": a.customer_id}).status_code == 200
    assert api.get(URL, {"campaign_id": a.pk}).status_code == 200

    other = api.get(URL, {"customer_id": b.customer_id})
    assert other.status_code == 404
    assert other.json() == {"detail": f"No customer {b.customer_id}."}
    assert api.get(URL, {"campaign_id": b.pk}).status_code == 404
    assert api.get(URL, {"customer_id": a.customer_id, "campaign_id": b.pk}).status_code == 404


def test_no_key_is_401(two_customers) -> None:
    assert APIClient().get(URL).status_code == 401


def test_unknown_customers_and_campaigns_are_404(admin_api: APIClient) -> None:
    assert admin_api.get(URL, {"customer_id": 999}).json() == {"detail": "No customer 999."}
    assert admin_api.get(URL, {"campaign_id": 999}).status_code == 404


def test_a_campaign_of_another_customer_is_a_field_error(admin_api: APIClient, two_customers) -> None:
    a, b = two_customers
    response = admin_api.get(URL, {"customer_id": a.customer_id, "campaign_id": b.pk})
    assert response.status_code == 400
    assert response.json() == {
        "campaign_id": [f"Campaign {b.pk} belongs to customer {b.customer_id}, not {a.customer_id}."]
    }


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"from": "2026-11-25", "to": "2026-11-24"},
            "from",
            "'from' (2026-11-25) is after 'to' (2026-11-24).",
        ),
        (
            {"from": "24/11/2026"},
            "from",
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
        ),
        ({"to": "2026-02-30"}, "to", "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."),
        ({"from": "2025-01-01", "to": "2026-11-24"}, "to", "A range is at most 366 days."),
        ({"customer_id": "acme"}, "customer_id", "A valid integer is required."),
        ({"campaign_id": "0"}, "campaign_id", "Ensure this value is greater than or equal to 1."),
        ({"at_risk_minutes": "-1"}, "at_risk_minutes", "Ensure this value is greater than or equal to 0."),
        ({"at_risk_minutes": "nan"}, "at_risk_minutes", "A valid number is required."),
        ({"active_minutes": "1.5"}, "active_minutes", "A valid integer is required."),
        ({"customer": "3"}, "customer", "Unknown parameter."),
        ({"to": "9999-12-31"}, "to", "Enter a day in the years 1900 to 2099."),
        ({"from": "9999-12-31"}, "from", "Enter a day in the years 1900 to 2099."),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "from", "Enter a day in the years 1900 to 2099."),
    ],
)
def test_bad_parameters_are_400_with_field_errors(
    admin_api: APIClient, params: dict[str, str], field: str, message: str
) -> None:
    response = admin_api.get(URL, params)
    assert response.status_code == 400
    assert response.json() == {field: [message]}


def test_the_number_of_queries_does_not_grow_with_campaigns_or_days(admin_api: APIClient) -> None:
    def queries(campaigns: int) -> int:
        customer = CustomerFactory()
        for _ in range(campaigns):
            live_lead(CampaignFactory(customer=customer), T0)
        with CaptureQueriesContext(connection) as captured:
            assert admin_api.get(URL, {"from": "2026-10-01", "customer_id": customer.pk}).status_code == 200
        return len(captured)

    queries(1)  # fills the engine's caches of policy versions
    assert queries(1) == queries(6)
