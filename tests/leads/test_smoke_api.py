from leads.models import Lead


def test_a_lead_posted_by_an_ingest_key_is_stored_and_readable(ingest_api, customer, campaign):
    body = {
        "external_id": "A-1",
        "customer_id": customer.pk,
        "campaign_id": campaign.pk,
        "lead_type": "live",
        "city": "Pune",
    }
    created = ingest_api.post("/api/v1/leads/", body, format="json")
    assert created.status_code == 201, created.json()
    lead = Lead.objects.get(pk=created.json()["id"])
    assert (lead.city, lead.pricing_plan, lead.status) == ("Pune", "pro", "ready")

    again = ingest_api.post("/api/v1/leads/", {**body, "city": "Delhi"}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == lead.pk
    assert ingest_api.get(f"/api/v1/leads/{lead.pk}/").json()["city"] == "Delhi"
    assert Lead.objects.count() == 1
