"""Review of the lead data store's admin: bad input and deletions are messages, never a 500
or an inconsistent row; lists and delete pages stay cheap on large tables."""

import pytest
from django.urls import reverse

from leads.models import Campaign, Lead
from tests.factories import CampaignFactory, CustomerFactory, LeadFactory


def campaign_form(campaign: Campaign, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "customer": campaign.customer_id,
        "name": campaign.name,
        "active": "on",
        "time_zone": campaign.time_zone,
        "calling_hours_start": "08:00",
        "calling_hours_end": "20:00",
        "calling_days": "0,1,2,3,4",
        "created_at_0": "2026-01-05",
        "created_at_1": "09:00:00",
    }
    data.update(changes)
    return data


# --- Campaigns -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_campaign_stays_with_its_customer_and_its_leads(admin_client):
    lead = LeadFactory()
    campaign = lead.campaign
    other = CustomerFactory()
    url = reverse("admin:leads_campaign_change", args=[campaign.pk])

    page = admin_client.get(url).content.decode()
    response = admin_client.post(url, campaign_form(campaign, customer=other.pk, name="Renamed"))

    assert 'name="customer"' not in page
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.name, campaign.customer_id) == ("Renamed", lead.customer_id)
    assert Lead.objects.get().customer_id == campaign.customer_id


@pytest.mark.django_db
def test_a_new_campaign_still_chooses_its_customer(admin_client):
    customer = CustomerFactory()
    template = CampaignFactory.build(customer=customer, name="Spring")

    response = admin_client.post(reverse("admin:leads_campaign_add"), campaign_form(template))

    assert response.status_code == 302
    assert Campaign.objects.get(name="Spring").customer == customer
