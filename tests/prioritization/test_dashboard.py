"""The admin SLA dashboard through Django's test client: access, filters, charts, errors."""

import base64
import datetime as dt
import re

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from prioritization.admin_dashboard import TAT_GROUPS_MINUTES, tat_groups
from prioritization.sla import TAT_BUCKET_EDGES_SECONDS, TAT_BUCKETS
from tests.factories import CampaignFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0
from tests.prioritization.sla_world import MINUTE, call_at, live_lead

pytestmark = pytest.mark.django_db

URL = reverse("sla-dashboard")
NOW = T0 + 2 * dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    return client


@pytest.fixture
def world(make_contractor):
    # Calling every day: one of the days called is a Sunday.
    acme = campaign_calling_all_day(CustomerFactory(name="Acme"), name="Acme inbound")
    globex = campaign_calling_all_day(CustomerFactory(name="Globex"), name="Globex renewals")
    contractor = make_contractor(acme, globex)
    for day in range(3):
        created = T0 - day * dt.timedelta(days=1)
        call_at(contractor, live_lead(acme, created), created + 5 * MINUTE)
        call_at(contractor, live_lead(globex, created), created + 50 * MINUTE)
    live_lead(acme, NOW - 25 * MINUTE)  # at risk: deadline in 5 minutes
    return acme, globex


def charts(html: str) -> dict[str, str]:
    """The SVG documents of the page's chart images, by image id."""
    found = {}
    for image_id, data in re.findall(
        r'<img id="(chart-[a-z]+)" src="data:image/svg\+xml;base64,([^"]+)"', html
    ):
        found[image_id] = base64.b64decode(data).decode()
    return found


def test_the_admin_index_links_to_the_dashboard(staff: Client) -> None:
    response = staff.get(reverse("admin:index"))
    assert response.status_code == 200
    assert f'href="{URL}"' in response.content.decode()


def test_the_dashboard_needs_a_staff_login(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    client.force_login(User.objects.create_user("someone"))
    assert client.get(URL).status_code == 302


def test_staff_who_may_not_view_leads_get_a_403_and_no_link(client: Client) -> None:
    client.force_login(User.objects.create_user("clerk", is_staff=True))
    assert client.get(URL).status_code == 403
    assert f'href="{URL}"' not in client.get(reverse("admin:index")).content.decode()

    clerk = User.objects.get(username="clerk")
    clerk.user_permissions.add(Permission.objects.get(codename="view_lead"))
    assert client.get(URL).status_code == 200
    assert f'href="{URL}"' in client.get(reverse("admin:index")).content.decode()


def test_the_dashboard_shows_figures_charts_and_leads_at_risk(staff: Client, world) -> None:
    acme, _ = world
    response = staff.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "All customers: 2026-11-11 to 2026-11-24" in html  # the last 14 days by default
    images = charts(html)
    assert set(images) == {"chart-attainment", "chart-tat", "chart-queue"}
    assert all(svg.lstrip().startswith("<?xml") and "<svg" in svg for svg in images.values())
    assert "target 90%" in images["chart-attainment"]
    assert "Acme" in images["chart-attainment"]
    assert "Globex" in images["chart-attainment"]
    assert "Acme / Acme inbound" in images["chart-queue"]
    assert "green: within the SLA window" in images["chart-tat"]
    assert 'id="sla-at-risk"' in html
    report = response.context["report"]
    assert report.overall.at_risk == 1
    (at_risk,) = report.at_risk_leads
    assert at_risk.campaign_id == acme.pk
    assert f'href="{reverse("admin:leads_lead_change", args=[at_risk.id])}"' in html
    assert [row["name"] for row in response.context["customer_rows"]] == ["Acme", "Globex"]
    assert [row["range"] for row in response.context["customer_rows"]] == ["100.0%", "0.0%"]
    assert [row["meets_target"] for row in response.context["customer_rows"]] == [True, False]


def test_filtering_by_customer_narrows_figures_and_campaign_choices(staff: Client, world) -> None:
    acme, globex = world
    CampaignFactory(customer=acme.customer, name="Acme outbound")

    response = staff.get(URL, {"customer": globex.customer_id})
    assert response.status_code == 200
    assert [row["name"] for row in response.context["customer_rows"]] == ["Globex"]
    assert [row["name"] for row in response.context["campaign_rows"]] == ["Globex renewals"]
    assert list(response.context["form"].fields["campaign"].queryset) == [globex]
    assert "Globex:" in response.content.decode()
    assert "Acme" not in charts(response.content.decode())["chart-attainment"]

    response = staff.get(URL, {"customer": acme.customer_id, "campaign": acme.pk, "from": "2026-11-23"})
    assert response.status_code == 200
    assert response.context["report"].start == dt.date(2026, 11, 23)
    assert response.context["report"].end == dt.date(2026, 11, 24)
    assert [row["name"] for row in response.context["campaign_rows"]] == ["Acme inbound"]
    assert "Acme inbound: 2026-11-23 to 2026-11-24" in response.content.decode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"from": "2026-11-24", "to": "2026-11-01"},
            "&#x27;From&#x27; (2026-11-24) is after &#x27;To&#x27; (2026-11-01).",
        ),
        ({"from": "yesterday"}, "From (UTC day): Enter a valid date."),
        ({"from": "2024-01-01", "to": "2026-11-24"}, "A range is at most 366 days."),
        ({"from": "9999-12-31", "to": "9999-12-31"}, "Enter a day in the years 1900 to 2099."),
        ({"customer": "999"}, "Select a valid choice."),
    ],
)
def test_bad_filters_are_a_400_with_a_message_and_no_charts(
    staff: Client, world, params, message: str
) -> None:
    response = staff.get(URL, params)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert "Check the filters." in html
    assert "<img" not in html


def test_a_campaign_of_another_customer_is_refused(staff: Client, world) -> None:
    acme, globex = world
    response = staff.get(URL, {"customer": acme.customer_id, "campaign": globex.pk})
    assert response.status_code == 400
    assert "Select a valid choice." in response.content.decode()


def test_an_empty_database_shows_empty_charts_not_an_error(staff: Client) -> None:
    response = staff.get(URL)
    assert response.status_code == 200
    images = charts(response.content.decode())
    assert "No lead of this range is decided yet" in images["chart-attainment"]
    assert "No open leads." in images["chart-queue"]
    assert "No lead of this range has been called yet." in images["chart-tat"]
    assert "No live lead is close to its SLA deadline" in response.content.decode()


def test_tat_groups_add_up_the_fine_buckets() -> None:
    histogram = [1] * TAT_BUCKETS
    groups = tat_groups(histogram)

    assert len(groups) == len(TAT_GROUPS_MINUTES) + 1
    assert sum(count for _, count, _ in groups) == TAT_BUCKETS
    assert groups[0] == ("0-5", 5, 0.0)  # the minute buckets 0..4
    assert groups[-1][0] == "> 7d"
    assert groups[-1][1] == sum(1 for edge in TAT_BUCKET_EDGES_SECONDS if edge >= 7 * 86400)
