"""Second review of the reporting side (the SLA dashboard, the SLA figures API): each
finding pinned by a test that failed before its fix."""

import datetime as dt

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.sla_world import MINUTE, live_lead
from tests.prioritization.test_dashboard import charts

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)


@pytest.fixture
def staff(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    return client


# --- Charts ------------------------------------------------------------------------------------


def test_names_with_dollar_signs_are_drawn_as_they_read_not_as_formulas(staff: Client) -> None:
    # Customers' systems name their campaigns; matplotlib reads text between two "$" as a
    # formula, and one it cannot parse failed the whole page for every staff user.
    customer = CustomerFactory(name="Deals $100 and $200")
    campaign = CampaignFactory(customer=customer, name=r"Promo $\frac$ Q4")
    other = CampaignFactory(customer=CustomerFactory(name="Globex"), name="Renewals")
    with time_machine.travel(NOW, tick=False):
        for lead_campaign in (campaign, other):
            live_lead(lead_campaign, NOW - 40 * MINUTE)
        page = staff.get(reverse("sla-dashboard"))

    assert page.status_code == 200
    images = charts(page.content.decode())
    assert ">Deals $100 and $200<" in images["chart-attainment"]
    assert r">Deals $100 and $200 / Promo $\frac$ Q4<" in images["chart-queue"]


def test_a_customer_whose_name_starts_with_an_underscore_keeps_its_line_in_the_legend(
    staff: Client,
) -> None:
    # Matplotlib leaves labels starting with "_" out of a legend it builds by itself.
    for name in ("_Acme", "Globex"):
        campaign = CampaignFactory(customer=CustomerFactory(name=name), name="Inbound")
        with time_machine.travel(NOW, tick=False):
            live_lead(campaign, NOW - 40 * MINUTE)
    with time_machine.travel(NOW, tick=False):
        page = staff.get(reverse("sla-dashboard"))

    assert page.status_code == 200
    attainment = charts(page.content.decode())["chart-attainment"]
    assert ">Globex<" in attainment
    assert ">_Acme<" in attainment
