"""POST / GET / PATCH /api/v1/leads/: single pushes, batches, field errors, updates."""

import base64
import datetime as dt
import json

import pytest
import time_machine
from django.utils import timezone

from leads.models import EventKind, Lead, LeadEvent, LeadType, QueueStatus
from prioritization.services import claim_next_lead, record_outcome
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, LeadFactory, lead_body

LEADS_URL = "/api/v1/leads/"
NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def lead_url(lead_id: int) -> str:
    return f"/api/v1/leads/{lead_id}/"


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


# --- One lead -------------------------------------------------------------------------------


def test_posting_a_new_lead_answers_201_with_the_stored_lead(admin_api, campaign):
    body = lead_body(
        campaign,
        lead_type="stale",
        city="Pune",
        source="Google",
        stage="Email Opened",
        pricing_plan="enterprise",
        last_activity="2026-02-01T08:00:00Z",
        created_at="2026-02-20T10:00:00Z",
    )

    response = admin_api.post(LEADS_URL, body, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    lead = Lead.objects.get(pk=data["id"])
    assert (lead.external_id, lead.customer_id, lead.campaign_id) == (
        "A-1",
        campaign.customer_id,
        campaign.pk,
    )
    assert (lead.lead_type, lead.city, lead.source, lead.stage) == ("stale", "Pune", "Google", "Email Opened")
    assert lead.pricing_plan == "enterprise"
    assert lead.last_activity == dt.datetime(2026, 2, 1, 8, 0, tzinfo=dt.UTC)
    assert lead.created_at == dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)
    assert data["external_id"] == "A-1"
    assert data["customer_id"] == campaign.customer_id
    assert data["campaign_id"] == campaign.pk
    assert data["created_at"] == "2026-02-20T10:00:00Z"


def test_a_lead_posted_without_optional_fields_gets_the_documented_defaults(
    admin_api, customer, campaign, frozen_now
):
    response = admin_api.post(LEADS_URL, lead_body(campaign), format="json")

    assert response.status_code == 201, response.json()
    lead = Lead.objects.get(pk=response.json()["id"])
    assert lead.created_at == frozen_now
    assert lead.pricing_plan == customer.pricing_plan == "pro"
    assert (lead.city, lead.source, lead.stage) == ("", "", "")
    assert (lead.last_activity, lead.rescheduled_at) == (None, None)
    assert lead.status == QueueStatus.READY
    assert lead.due_at == frozen_now
    assert (lead.attempt_count, lead.reschedule_count, lead.holder_id) == (0, 0, None)


def test_optional_fields_sent_as_null_or_blank_are_stored_empty(admin_api, campaign):
    body = lead_body(
        campaign,
        city="",
        source=None,
        stage="   ",
        last_activity=None,
        rescheduled_at="",
        pricing_plan=None,
        created_at=None,
    )

    response = admin_api.post(LEADS_URL, body, format="json")

    assert response.status_code == 201, response.json()
    lead = Lead.objects.get(pk=response.json()["id"])
    assert (lead.city, lead.source, lead.stage) == ("", "", "")
    assert (lead.last_activity, lead.rescheduled_at) == (None, None)
    assert lead.pricing_plan == "pro"


def test_posting_the_same_lead_twice_updates_it_instead_of_duplicating_it(admin_api, campaign):
    first = admin_api.post(LEADS_URL, lead_body(campaign, city="Pune"), format="json")
    second = admin_api.post(LEADS_URL, lead_body(campaign, city="Delhi"), format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert Lead.objects.count() == 1
    assert Lead.objects.get().city == "Delhi"


def test_reposting_an_unchanged_lead_answers_200_with_the_same_id(admin_api, campaign):
    body = lead_body(campaign, created_at="2026-02-20T10:00:00Z")
    first = admin_api.post(LEADS_URL, body, format="json")
    again = admin_api.post(LEADS_URL, body, format="json")

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Lead.objects.count() == 1


def test_the_same_external_id_of_two_customers_is_two_leads(admin_api, campaign):
    other_campaign = CampaignFactory()

    first = admin_api.post(LEADS_URL, lead_body(campaign), format="json")
    second = admin_api.post(LEADS_URL, lead_body(other_campaign), format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert Lead.objects.filter(external_id="A-1").count() == 2


def test_reposting_a_lead_with_empty_fields_keeps_the_stored_values(admin_api, campaign):
    full = lead_body(
        campaign,
        city="Pune",
        source="Google",
        stage="Called",
        last_activity="2026-02-01T08:00:00Z",
        rescheduled_at="2026-02-25T08:00:00Z",
        created_at="2026-02-20T10:00:00Z",
    )
    lead_id = admin_api.post(LEADS_URL, full, format="json").json()["id"]

    sparse = lead_body(campaign, lead_type="stale", city="", source=None, stage="  ")
    response = admin_api.post(LEADS_URL, sparse, format="json")

    assert response.status_code == 200, response.json()
    lead = Lead.objects.get(pk=lead_id)
    assert lead.lead_type == "stale"
    assert (lead.city, lead.source, lead.stage) == ("Pune", "Google", "Called")
    assert lead.last_activity == dt.datetime(2026, 2, 1, 8, 0, tzinfo=dt.UTC)
    assert lead.rescheduled_at == dt.datetime(2026, 2, 25, 8, 0, tzinfo=dt.UTC)
    assert lead.created_at == dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)


def test_reposting_a_lead_without_created_at_keeps_the_stored_one(admin_api, campaign):
    lead_id = admin_api.post(
        LEADS_URL, lead_body(campaign, created_at="2026-02-20T10:00:00Z"), format="json"
    ).json()["id"]

    admin_api.post(LEADS_URL, lead_body(campaign, city="Delhi"), format="json")

    lead = Lead.objects.get(pk=lead_id)
    assert lead.created_at == dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)
    assert lead.city == "Delhi"


def test_reposting_a_lead_with_a_new_created_at_replaces_it(admin_api, campaign):
    lead_id = admin_api.post(
        LEADS_URL, lead_body(campaign, created_at="2026-02-20T10:00:00Z"), format="json"
    ).json()["id"]

    admin_api.post(LEADS_URL, lead_body(campaign, created_at="2026-02-21T10:00:00Z"), format="json")

    assert Lead.objects.get(pk=lead_id).created_at == dt.datetime(2026, 2, 21, 10, 0, tzinfo=dt.UTC)


def test_reposting_a_lead_without_pricing_plan_keeps_the_plan_it_was_sent_with(admin_api, campaign):
    lead_id = admin_api.post(LEADS_URL, lead_body(campaign, pricing_plan="enterprise"), format="json").json()[
        "id"
    ]

    admin_api.post(LEADS_URL, lead_body(campaign, city="Delhi"), format="json")

    assert Lead.objects.get(pk=lead_id).pricing_plan == "enterprise"


def test_reposting_a_lead_with_a_new_pricing_plan_replaces_it(admin_api, campaign):
    lead_id = admin_api.post(LEADS_URL, lead_body(campaign), format="json").json()["id"]

    admin_api.post(LEADS_URL, lead_body(campaign, pricing_plan="starter"), format="json")

    assert Lead.objects.get(pk=lead_id).pricing_plan == "starter"


def test_reposting_a_lead_can_move_it_to_another_campaign_of_its_customer(admin_api, customer, campaign):
    other = CampaignFactory(customer=customer)
    lead_id = admin_api.post(LEADS_URL, lead_body(campaign), format="json").json()["id"]

    admin_api.post(LEADS_URL, lead_body(other), format="json")

    assert Lead.objects.get(pk=lead_id).campaign_id == other.pk


def test_reposting_a_held_lead_keeps_its_engine_state(admin_api, campaign):
    contractor = ContractorFactory()
    lead = LeadFactory(
        campaign=campaign,
        external_id="A-1",
        status=QueueStatus.HELD,
        holder=contractor,
        lease_expires_at=timezone.now() + dt.timedelta(minutes=5),
        attempt_count=1,
    )

    response = admin_api.post(LEADS_URL, lead_body(campaign, city="Delhi"), format="json")

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.city, lead.status, lead.holder_id, lead.attempt_count) == (
        "Delhi",
        QueueStatus.HELD,
        contractor.pk,
        1,
    )


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-02-20T10:00:00Z", dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)),
        ("2026-02-20T15:30:00+05:30", dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)),
        ("2026-02-20T05:00:00-05:00", dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)),
        ("2026-02-20T10:00:00.250Z", dt.datetime(2026, 2, 20, 10, 0, 0, 250_000, tzinfo=dt.UTC)),
        ("2026-02-20T10:00:00", dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC)),
    ],
)
def test_iso_timestamps_with_any_offset_are_stored_as_utc(admin_api, campaign, sent, stored):
    response = admin_api.post(
        LEADS_URL, lead_body(campaign, created_at=sent, last_activity=sent), format="json"
    )

    assert response.status_code == 201, response.json()
    lead = Lead.objects.get(pk=response.json()["id"])
    assert lead.created_at == stored
    assert lead.last_activity == stored
    assert lead.created_at.utcoffset() == dt.timedelta(0)


def test_a_lead_rescheduled_into_the_future_waits_until_then(admin_api, campaign, frozen_now):
    later = frozen_now + dt.timedelta(hours=22)

    response = admin_api.post(LEADS_URL, lead_body(campaign, rescheduled_at=iso(later)), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "waiting"
    lead = Lead.objects.get(pk=response.json()["id"])
    assert (lead.status, lead.due_at, lead.rescheduled_at) == (QueueStatus.WAITING, later, later)


def test_a_lead_rescheduled_into_the_past_is_ready_at_once(admin_api, campaign, frozen_now):
    earlier = frozen_now - dt.timedelta(hours=1)

    response = admin_api.post(LEADS_URL, lead_body(campaign, rescheduled_at=iso(earlier)), format="json")

    assert response.json()["status"] == "ready"
    assert Lead.objects.get().due_at == frozen_now


def test_reposting_a_lead_the_engine_made_stale_keeps_it_stale(admin_api, campaign):
    # No answer after the last reschedule made it stale; the customer's nightly re-push still
    # says live, which must not put it back among live leads.
    contractor = ContractorFactory(campaigns=[campaign])
    made_stale = LeadFactory(campaign=campaign, external_id="A-1", reschedule_count=3)
    sent_stale = LeadFactory(campaign=campaign, external_id="A-2", lead_type=LeadType.STALE)
    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == made_stale.pk
    outcome = record_outcome(lead_id=made_stale.pk, contractor_id=contractor.pk, disposition="no_answer")
    assert outcome.lead.lead_type == LeadType.STALE

    response = admin_api.post(
        LEADS_URL,
        {"leads": [lead_body(campaign, city="Delhi"), lead_body(campaign, external_id="A-2")]},
        format="json",
    )

    assert response.status_code == 200, response.json()
    made_stale.refresh_from_db()
    assert (made_stale.lead_type, made_stale.city) == (LeadType.STALE, "Delhi")
    assert made_stale.reschedule_count == 3
    # A lead the customer itself sent as stale, sent again as live, is live.
    sent_stale.refresh_from_db()
    assert sent_stale.lead_type == LeadType.LIVE


def test_reposting_a_waiting_lead_with_a_past_reschedule_makes_it_ready(admin_api, campaign, frozen_now):
    later = frozen_now + dt.timedelta(hours=22)
    admin_api.post(LEADS_URL, lead_body(campaign, rescheduled_at=iso(later)), format="json")

    earlier = frozen_now - dt.timedelta(minutes=1)
    response = admin_api.post(LEADS_URL, lead_body(campaign, rescheduled_at=iso(earlier)), format="json")

    assert response.status_code == 200
    lead = Lead.objects.get()
    assert (lead.status, lead.rescheduled_at) == (QueueStatus.READY, earlier)


# --- Field errors on one lead -----------------------------------------------------------------


def test_a_lead_of_an_unknown_customer_is_a_customer_id_error(admin_api, campaign):
    response = admin_api.post(LEADS_URL, lead_body(campaign, customer_id=999_999), format="json")

    assert response.status_code == 400
    assert "999999" in response.json()["customer_id"][0]
    assert Lead.objects.count() == 0


def test_a_lead_of_an_unknown_campaign_is_a_campaign_id_error(admin_api, campaign):
    response = admin_api.post(LEADS_URL, lead_body(campaign, campaign_id=999_999), format="json")

    assert response.status_code == 400
    assert response.json()["campaign_id"] == ["Unknown campaign 999999."]
    assert "customer_id" not in response.json()


def test_a_lead_in_a_campaign_of_another_customer_is_a_campaign_id_error(admin_api, campaign):
    foreign = CampaignFactory()

    response = admin_api.post(LEADS_URL, lead_body(campaign, campaign_id=foreign.pk), format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"campaign_id"}
    assert f"not to customer {campaign.customer_id}" in response.json()["campaign_id"][0]
    assert Lead.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("lead_type", "warm", "'warm' is not one of: live, stale."),
        ("pricing_plan", "gold", "'gold' is not one of: starter, pro, enterprise."),
        ("created_at", "yesterday", "is not a valid timestamp"),
        ("last_activity", "2026-02-30T10:00:00Z", "is not a valid timestamp"),
        ("rescheduled_at", 1767225600, "is not a valid timestamp"),
        ("rescheduled_at", "9999-12-31T23:00:00-05:00", "is not a valid timestamp"),
        ("last_activity", "0001-01-01T00:00:00+01:00", "is not a valid timestamp"),
        # Valid dates whose SLA deadline or calling-hours opening would overflow.
        (
            "created_at",
            "9999-12-31T23:59:59Z",
            "is out of range. Enter a timestamp in the years 1900 to 2099.",
        ),
        ("rescheduled_at", "2100-01-01T00:00:00Z", "is out of range"),
        ("last_activity", "1899-12-31T23:59:59Z", "is out of range"),
        ("customer_id", "seven", "A positive integer id is required"),
        ("campaign_id", -3, "A positive integer id is required"),
        ("customer_id", True, "A positive integer id is required"),
        ("external_id", "x" * 201, "no more than 200 characters"),
        ("city", "x" * 201, "no more than 200 characters"),
        ("source", "x" * 201, "no more than 200 characters"),
        ("stage", "x" * 201, "no more than 200 characters"),
    ],
)
def test_a_bad_field_value_is_a_400_naming_that_field(admin_api, campaign, field, value, message_part):
    response = admin_api.post(LEADS_URL, lead_body(campaign, **{field: value}), format="json")

    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert message_part in errors[field][0]
    assert Lead.objects.count() == 0


@pytest.mark.parametrize("field", ["external_id", "customer_id", "campaign_id", "lead_type"])
@pytest.mark.parametrize("missing", ["absent", None, ""])
def test_a_missing_required_field_is_a_400_naming_that_field(admin_api, campaign, field, missing):
    body = lead_body(campaign)
    if missing == "absent":
        del body[field]
    else:
        body[field] = missing

    response = admin_api.post(LEADS_URL, body, format="json")

    assert response.status_code == 400
    assert response.json()[field] == ["This field is required."]
    assert Lead.objects.count() == 0


def test_an_empty_lead_object_lists_every_required_field(admin_api, db):
    response = admin_api.post(LEADS_URL, {}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"external_id", "customer_id", "campaign_id", "lead_type"}


def test_text_fields_of_exactly_200_characters_are_accepted(admin_api, campaign):
    body = lead_body(campaign, external_id="e" * 200, city="c" * 200, source="s" * 200, stage="t" * 200)

    response = admin_api.post(LEADS_URL, body, format="json")

    assert response.status_code == 201, response.json()
    assert Lead.objects.get().external_id == "e" * 200


def test_a_lead_naming_a_huge_id_is_a_field_error_not_a_server_error(admin_api, campaign):
    response = admin_api.post(LEADS_URL, lead_body(campaign, customer_id=10**30), format="json")

    assert response.status_code == 400
    assert "customer_id" in response.json()


def test_a_text_field_with_a_nul_character_is_a_field_error_not_a_server_error(admin_api, campaign):
    response = admin_api.post(LEADS_URL, lead_body(campaign, city="Pu\x00ne"), format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["city"]


# --- Bodies that are not a lead at all ---------------------------------------------------------


def test_a_malformed_json_body_is_a_400(admin_api, db):
    response = admin_api.post(LEADS_URL, '{"external_id": "A-1",', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


@pytest.mark.parametrize("body", [[], [{"external_id": "A-1"}], "a lead", 42, None])
def test_a_json_body_that_is_not_an_object_is_a_400(admin_api, db, body):
    response = admin_api.post(LEADS_URL, json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_a_lone_surrogate_escape_is_a_400_that_stores_nothing(admin_api, campaign):
    # Python decodes "\\ud800" to a string PostgreSQL and the renderer cannot encode.
    batch = {"leads": [lead_body(campaign, external_id="GOOD"), lead_body(campaign, external_id="BAD")]}
    text = json.dumps(batch).replace('"BAD"', '"BAD\\ud800"')

    response = admin_api.post(LEADS_URL, text, content_type="application/json")

    assert response.status_code == 400
    assert "lone UTF-16 surrogate" in response.json()["detail"]
    assert not Lead.objects.exists()


@pytest.mark.parametrize("charset", ["utf-8", "utf-16"])
def test_a_lone_surrogate_in_a_key_is_a_400_in_any_charset(admin_api, campaign, charset):
    text = json.dumps(lead_body(campaign)).replace('"external_id"', '"external\\udfff_id"')

    response = admin_api.post(
        LEADS_URL, text.encode(charset), content_type=f"application/json; charset={charset}"
    )

    assert response.status_code == 400
    assert "lone UTF-16 surrogate" in response.json()["detail"]


def test_a_surrogate_pair_escape_is_the_character_it_spells(admin_api, campaign):
    text = json.dumps(lead_body(campaign, city="Pune")).replace('"Pune"', '"Pune \\ud83d\\ude00"')

    response = admin_api.post(LEADS_URL, text, content_type="application/json")

    assert response.status_code == 201, response.json()
    assert Lead.objects.get().city == "Pune \U0001f600"


@pytest.mark.parametrize(
    ("url", "template"),
    [(LEADS_URL, "{}"), ("/api/v1/next-lead/", '{{"campaign_ids": {}, "contractor_id": 1}}')],
)
def test_json_nested_too_deeply_is_a_400_not_a_server_error(admin_api, db, url, template):
    # Python's decoder raises RecursionError, which DRF's parser does not turn into a 400.
    deep = "[" * 100_000 + "]" * 100_000

    response = admin_api.post(url, template.format(deep), content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - the text is nested too deeply."}


def test_a_body_that_is_not_json_is_refused_without_a_server_error(admin_api, db):
    response = admin_api.post(LEADS_URL, "external_id=A-1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415


# --- Batches ---------------------------------------------------------------------------------


def test_a_batch_reports_created_updated_and_rejected_per_item(admin_api, campaign):
    LeadFactory(campaign=campaign, external_id="OLD")
    items = [
        lead_body(campaign, external_id="NEW"),
        lead_body(campaign, external_id="OLD", city="Delhi"),
        lead_body(campaign, external_id="BAD", lead_type="warm"),
    ]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 200, response.json()
    data = response.json()
    assert (data["created"], data["updated"], data["rejected"]) == (1, 1, 1)
    results = data["results"]
    assert [(r["index"], r["external_id"], r["status"]) for r in results] == [
        (0, "NEW", "created"),
        (1, "OLD", "updated"),
        (2, "BAD", "rejected"),
    ]
    assert results[0]["id"] == Lead.objects.get(external_id="NEW").pk
    assert results[1]["id"] == Lead.objects.get(external_id="OLD").pk
    assert results[2]["errors"] == {"lead_type": ["'warm' is not one of: live, stale."]}
    assert "id" not in results[2]
    assert "errors" not in results[0]
    assert Lead.objects.get(external_id="OLD").city == "Delhi"


def test_valid_items_of_a_batch_are_stored_even_when_their_neighbours_are_bad(admin_api, campaign):
    foreign = CampaignFactory()
    items = [
        lead_body(campaign, external_id="GOOD-1"),
        lead_body(campaign, external_id="NO-CUSTOMER", customer_id=999_999),
        lead_body(campaign, external_id="NO-CAMPAIGN", campaign_id=999_999),
        lead_body(campaign, external_id="FOREIGN", campaign_id=foreign.pk),
        lead_body(campaign, external_id="BAD-TIME", created_at="not a time"),
        {"external_id": "MISSING"},
        "not an object",
        lead_body(campaign, external_id="GOOD-2"),
    ]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 200, response.json()
    data = response.json()
    assert (data["created"], data["updated"], data["rejected"]) == (2, 0, 6)
    assert [r["status"] for r in data["results"]] == ["created"] + ["rejected"] * 6 + ["created"]
    errors = [r.get("errors") for r in data["results"]]
    assert set(errors[1]) == {"customer_id", "campaign_id"}
    assert set(errors[2]) == {"campaign_id"}
    assert set(errors[3]) == {"campaign_id"}
    assert set(errors[4]) == {"created_at"}
    assert set(errors[5]) == {"customer_id", "campaign_id", "lead_type"}
    assert errors[6] == {"non_field_errors": ["Each lead must be a JSON object."]}
    assert data["results"][6]["external_id"] is None
    assert set(Lead.objects.values_list("external_id", flat=True)) == {"GOOD-1", "GOOD-2"}


def test_a_batch_of_only_bad_items_is_a_400_with_the_same_body_shape(admin_api, campaign):
    items = [lead_body(campaign, lead_type="warm"), lead_body(campaign, external_id="B", campaign_id=999_999)]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 400
    data = response.json()
    assert (data["created"], data["updated"], data["rejected"]) == (0, 0, 2)
    assert [r["status"] for r in data["results"]] == ["rejected", "rejected"]
    assert all(r["errors"] for r in data["results"])
    assert Lead.objects.count() == 0


def test_a_lead_twice_in_one_batch_is_one_row_holding_the_last_values(admin_api, campaign):
    items = [
        lead_body(campaign, external_id="DUP", city="Pune"),
        lead_body(campaign, external_id="OTHER"),
        lead_body(campaign, external_id="DUP", city="Delhi"),
    ]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["created", "created", "updated"]
    assert results[0]["id"] == results[2]["id"]
    assert Lead.objects.filter(external_id="DUP").count() == 1
    assert Lead.objects.get(external_id="DUP").city == "Delhi"


def test_a_lead_twice_in_one_batch_keeps_the_valid_copy_when_the_other_is_bad(admin_api, campaign):
    items = [
        lead_body(campaign, external_id="DUP", city="Pune"),
        lead_body(campaign, external_id="DUP", lead_type="warm"),
    ]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert [r["status"] for r in response.json()["results"]] == ["created", "rejected"]
    assert Lead.objects.get(external_id="DUP").city == "Pune"


def test_posting_the_same_batch_twice_creates_nothing_the_second_time(admin_api, campaign):
    items = [lead_body(campaign, external_id=f"L-{n}", created_at="2026-02-20T10:00:00Z") for n in range(5)]

    first = admin_api.post(LEADS_URL, {"leads": items}, format="json").json()
    second = admin_api.post(LEADS_URL, {"leads": items}, format="json").json()

    assert (first["created"], first["updated"]) == (5, 0)
    assert (second["created"], second["updated"]) == (0, 5)
    assert [r["id"] for r in second["results"]] == [r["id"] for r in first["results"]]
    assert Lead.objects.count() == 5


def test_a_batch_of_exactly_the_limit_is_accepted(admin_api, campaign, settings):
    settings.LEADRANK_API_BATCH_MAX = 3
    items = [lead_body(campaign, external_id=f"L-{n}") for n in range(3)]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 200
    assert Lead.objects.count() == 3


def test_a_batch_over_the_limit_is_a_400_and_stores_nothing(admin_api, campaign, settings):
    settings.LEADRANK_API_BATCH_MAX = 3
    items = [lead_body(campaign, external_id=f"L-{n}") for n in range(4)]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 400
    assert response.json() == {"leads": ["At most 3 leads per request, got 4."]}
    assert Lead.objects.count() == 0


def test_an_empty_batch_is_a_400(admin_api, db):
    response = admin_api.post(LEADS_URL, {"leads": []}, format="json")

    assert response.status_code == 400
    assert response.json() == {"leads": ["The batch is empty."]}


@pytest.mark.parametrize("leads", [{"external_id": "A-1"}, "A-1", 3, None])
def test_a_batch_whose_leads_is_not_a_list_is_a_400(admin_api, db, leads):
    response = admin_api.post(LEADS_URL, {"leads": leads}, format="json")

    assert response.status_code == 400
    assert response.json() == {"leads": ["Expected a list of lead objects."]}


def test_a_batch_of_non_objects_rejects_each_item(admin_api, db):
    response = admin_api.post(LEADS_URL, {"leads": [1, "two", None, [4]]}, format="json")

    assert response.status_code == 400
    data = response.json()
    assert data["rejected"] == 4
    assert [r["index"] for r in data["results"]] == [0, 1, 2, 3]
    assert all(
        r["errors"] == {"non_field_errors": ["Each lead must be a JSON object."]} for r in data["results"]
    )


def test_a_nul_character_in_one_batch_item_does_not_lose_its_neighbours(admin_api, campaign):
    items = [lead_body(campaign, external_id="GOOD"), lead_body(campaign, external_id="BAD", stage="a\x00b")]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 200, response.json()
    assert [r["status"] for r in response.json()["results"]] == ["created", "rejected"]
    assert set(response.json()["results"][1]["errors"]) == {"stage"}
    assert list(Lead.objects.values_list("external_id", flat=True)) == ["GOOD"]


# --- GET -------------------------------------------------------------------------------------


def test_getting_a_lead_returns_its_schema_fields_and_queue_state(admin_api, campaign):
    lead = LeadFactory(
        campaign=campaign,
        external_id="X-9",
        city="Pune",
        created_at=dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC),
        due_at=dt.datetime(2026, 2, 20, 10, 0, tzinfo=dt.UTC),
    )

    response = admin_api.get(lead_url(lead.pk))

    assert response.status_code == 200
    data = response.json()
    assert data["id"] == lead.pk
    assert data["external_id"] == "X-9"
    assert (data["customer_id"], data["campaign_id"]) == (campaign.customer_id, campaign.pk)
    assert (data["city"], data["status"], data["holder_id"]) == ("Pune", "ready", None)
    assert data["created_at"] == "2026-02-20T10:00:00Z"


def test_getting_an_unknown_lead_is_a_404(admin_api, db):
    assert admin_api.get(lead_url(999_999)).status_code == 404


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize(
    "path", ["/api/v1/leads/abc/", "/api/v1/leads/-1/outcome/", "/api/v1/nothing/", "/api/"]
)
def test_a_path_no_api_route_matches_is_a_json_404_in_debug_mode_too(admin_api, db, settings, path, debug):
    # Ids are integers in the routes: "abc" matches none, and the answer was Django's HTML page
    # (in debug mode, its debug page, which handler404 does not replace).
    settings.DEBUG = debug

    for response in (admin_api.get(path), admin_api.post(path, {}, format="json")):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("debug", [False, True])
def test_a_path_no_api_route_matches_without_its_slash_is_sent_to_the_json_404(
    admin_api, db, settings, debug
):
    settings.DEBUG = debug

    response = admin_api.post("/api/v1/leads/abc", {}, format="json", follow=True)

    assert response.redirect_chain == [("/api/v1/leads/abc/", 308)]
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_known_route_without_its_slash_is_still_redirected_to_it(admin_api, db):
    response = admin_api.get("/api/v1/customers")

    assert (response.status_code, response["Location"]) == (308, "/api/v1/customers/")


def test_a_path_outside_the_api_keeps_the_html_404(admin_client):
    response = admin_client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_listing_leads_returns_the_newest_first(admin_api, campaign):
    leads = [LeadFactory(campaign=campaign) for _ in range(3)]

    response = admin_api.get(LEADS_URL)

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [lead.pk for lead in reversed(leads)]


def test_listing_leads_filters_by_customer_campaign_external_id_and_status(admin_api, customer, campaign):
    other_campaign = CampaignFactory(customer=customer)
    foreign_campaign = CampaignFactory()
    in_campaign = LeadFactory(campaign=campaign, external_id="IN")
    waiting = LeadFactory(campaign=other_campaign, status=QueueStatus.WAITING)
    foreign = LeadFactory(campaign=foreign_campaign)

    def ids(query: str) -> set[int]:
        response = admin_api.get(f"{LEADS_URL}?{query}")
        assert response.status_code == 200, response.json()
        return {item["id"] for item in response.json()["results"]}

    assert ids(f"customer_id={customer.pk}") == {in_campaign.pk, waiting.pk}
    assert ids(f"customer_id={foreign_campaign.customer_id}") == {foreign.pk}
    assert ids(f"campaign_id={campaign.pk}") == {in_campaign.pk}
    assert ids("external_id=IN") == {in_campaign.pk}
    assert ids("status=waiting") == {waiting.pk}
    assert ids(f"status=ready&customer_id={customer.pk}") == {in_campaign.pk}


@pytest.mark.parametrize("query", ["status=lost", "customer_id=abc", "campaign_id=0"])
def test_listing_leads_with_a_bad_filter_is_a_400(admin_api, db, query):
    response = admin_api.get(f"{LEADS_URL}?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_listing_leads_walks_every_lead_once_through_cursor_pages(admin_api, campaign):
    created = {LeadFactory(campaign=campaign).pk for _ in range(5)}

    seen: list[int] = []
    url = f"{LEADS_URL}?limit=2"
    pages = 0
    while url:
        response = admin_api.get(url)
        assert response.status_code == 200
        page = response.json()
        assert "count" not in page
        seen.extend(item["id"] for item in page["results"])
        url = page["next"]
        pages += 1

    assert pages == 3
    assert seen == sorted(created, reverse=True)


@pytest.mark.parametrize("query", ["p=abc", "p=-1", "p=" + "9" * 30, "p=9223372036854775808", "o=1&p=1.5"])
def test_listing_leads_with_a_well_formed_cursor_at_no_lead_id_is_refused(admin_api, db, query):
    cursor = base64.b64encode(query.encode()).decode()

    response = admin_api.get(LEADS_URL, {"cursor": cursor})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


def test_listing_leads_with_a_forged_cursor_is_refused_without_a_server_error(admin_api, db):
    response = admin_api.get(f"{LEADS_URL}?cursor=not-a-cursor")

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


# --- PATCH -----------------------------------------------------------------------------------


def test_patching_rescheduled_at_into_the_future_makes_the_lead_wait_until_then(
    contract_api, campaign, frozen_now
):
    lead = LeadFactory(campaign=campaign)
    later = frozen_now + dt.timedelta(hours=23)

    response = contract_api.patch(lead_url(lead.pk), {"rescheduled_at": iso(later)}, format="json")

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["rescheduled_at"]) == ("waiting", iso(later))
    lead.refresh_from_db()
    assert (lead.status, lead.rescheduled_at, lead.due_at) == (QueueStatus.WAITING, later, later)


def test_a_patched_timestamp_is_read_as_a_push_reads_one(contract_api, campaign, frozen_now):
    # A lower-case "z" (RFC 3339) was a 400 here and accepted by a push; digits of other
    # scripts (a fullwidth 2026) were read as ASCII ones.
    lead = LeadFactory(campaign=campaign)
    later = frozen_now + dt.timedelta(hours=23)

    accepted = contract_api.patch(
        lead_url(lead.pk), {"rescheduled_at": later.strftime("%Y-%m-%dT%H:%M:%Sz")}, format="json"
    )
    refused = contract_api.patch(
        lead_url(lead.pk), {"last_activity": "\uff12026-01-01T00:00:00Z"}, format="json"
    )

    assert accepted.status_code == 200, accepted.json()
    assert accepted.json()["rescheduled_at"] == iso(later)
    assert (refused.status_code, refused.json()) == (400, {"last_activity": ["Use ASCII digits (0-9)."]})


def test_patching_a_choice_in_capitals_is_read_as_a_push_reads_it(contract_api, campaign):
    lead = LeadFactory(campaign=campaign, lead_type=LeadType.LIVE)

    response = contract_api.patch(
        lead_url(lead.pk), {"lead_type": " STALE", "pricing_plan": "Pro"}, format="json"
    )

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.lead_type, lead.pricing_plan) == (LeadType.STALE, "pro")


def test_a_last_activity_ahead_of_now_is_a_field_error_on_post_and_patch(
    admin_api, contract_api, campaign, frozen_now
):
    # Stored, a stale lead "last active" in 2099 would be called first until 2099.
    ahead = iso(NOW + dt.timedelta(hours=5, minutes=30))
    lead = LeadFactory(campaign=campaign, lead_type=LeadType.STALE)

    posted = admin_api.post(
        LEADS_URL, lead_body(campaign, lead_type="stale", last_activity=ahead), format="json"
    )
    patched = contract_api.patch(lead_url(lead.pk), {"last_activity": ahead}, format="json")
    in_skew = contract_api.patch(
        lead_url(lead.pk), {"last_activity": iso(NOW + dt.timedelta(minutes=10))}, format="json"
    )

    message = (
        f"{ahead!r} is in the future: last_activity is a past moment; send it in UTC or with its offset."
    )
    assert posted.status_code == 400
    assert posted.json() == {"last_activity": [message]}
    assert patched.status_code == 400
    assert patched.json() == {"last_activity": [message]}
    assert in_skew.status_code == 200  # the sender's clock may run a little ahead
    assert not Lead.objects.filter(external_id="A-1").exists()


def test_a_created_at_ahead_of_now_is_a_field_error_and_the_rest_of_the_batch_lands(
    admin_api, campaign, frozen_now
):
    # Stored, a live lead "created" 5.5 h ahead would wait (its SLA clock held) until then.
    ahead = iso(NOW + dt.timedelta(hours=5, minutes=30))

    single = admin_api.post(LEADS_URL, lead_body(campaign, created_at=ahead), format="json")
    batch = admin_api.post(
        LEADS_URL,
        {
            "leads": [
                lead_body(campaign, external_id="B-1", created_at=ahead),
                lead_body(campaign, external_id="B-2", created_at=iso(NOW + dt.timedelta(minutes=10))),
            ]
        },
        format="json",
    )

    message = f"{ahead!r} is in the future: created_at is a past moment; send it in UTC or with its offset."
    assert single.status_code == 400
    assert single.json() == {"created_at": [message]}
    assert not Lead.objects.filter(external_id__in=["A-1", "B-1"]).exists()
    assert batch.status_code == 200, batch.json()
    results = {item["external_id"]: item for item in batch.json()["results"]}
    assert results["B-1"]["errors"] == {"created_at": [message]}
    assert Lead.objects.get(external_id="B-2").created_at == NOW + dt.timedelta(minutes=10)


def test_patching_rescheduled_at_into_the_past_makes_the_lead_ready(contract_api, campaign, frozen_now):
    lead = LeadFactory(
        campaign=campaign,
        created_at=frozen_now - dt.timedelta(days=2),
        status=QueueStatus.WAITING,
        rescheduled_at=frozen_now + dt.timedelta(hours=5),
        due_at=frozen_now + dt.timedelta(hours=5),
    )
    earlier = frozen_now - dt.timedelta(hours=1)

    response = contract_api.patch(lead_url(lead.pk), {"rescheduled_at": iso(earlier)}, format="json")

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.status, lead.due_at) == (QueueStatus.READY, earlier)


def test_patching_rescheduled_at_to_null_makes_a_waiting_lead_due_at_its_creation(
    contract_api, campaign, frozen_now
):
    created_at = frozen_now - dt.timedelta(hours=3)
    lead = LeadFactory(
        campaign=campaign,
        created_at=created_at,
        status=QueueStatus.WAITING,
        rescheduled_at=frozen_now + dt.timedelta(hours=5),
        due_at=frozen_now + dt.timedelta(hours=5),
    )

    response = contract_api.patch(lead_url(lead.pk), {"rescheduled_at": None}, format="json")

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.rescheduled_at, lead.status, lead.due_at) == (None, QueueStatus.READY, created_at)


def test_rescheduling_a_held_lead_releases_it(contract_api, campaign, frozen_now):
    lead = LeadFactory(
        campaign=campaign,
        status=QueueStatus.HELD,
        holder=ContractorFactory(),
        lease_expires_at=frozen_now + dt.timedelta(minutes=5),
    )
    later = frozen_now + dt.timedelta(hours=22)

    response = contract_api.patch(lead_url(lead.pk), {"rescheduled_at": iso(later)}, format="json")

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id, lead.lease_expires_at) == (QueueStatus.WAITING, None, None)


def test_patching_lead_type_is_reflected_in_the_lead(contract_api, campaign):
    lead = LeadFactory(campaign=campaign, lead_type="live")

    response = contract_api.patch(lead_url(lead.pk), {"lead_type": "stale"}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["lead_type"] == "stale"
    lead.refresh_from_db()
    assert (lead.lead_type, lead.status) == ("stale", QueueStatus.READY)
    assert contract_api.get(lead_url(lead.pk)).json()["lead_type"] == "stale"


def test_patching_a_lead_records_an_updated_event_with_the_changes(contract_api, campaign, frozen_now):
    lead = LeadFactory(campaign=campaign, lead_type="live", city="Pune")
    later = frozen_now + dt.timedelta(hours=22)

    contract_api.patch(
        lead_url(lead.pk), {"lead_type": "stale", "rescheduled_at": iso(later), "city": "Pune"}, format="json"
    )

    event = LeadEvent.objects.get(lead=lead)
    assert event.kind == EventKind.UPDATED
    assert event.at == frozen_now
    assert event.detail == {"lead_type": "stale", "rescheduled_at": later.isoformat()}


def test_patching_a_lead_with_its_current_values_changes_nothing_and_records_no_event(contract_api, campaign):
    lead = LeadFactory(campaign=campaign, lead_type="live")
    updated_at = lead.updated_at

    response = contract_api.patch(lead_url(lead.pk), {"lead_type": "live"}, format="json")

    assert response.status_code == 200
    assert not LeadEvent.objects.exists()
    lead.refresh_from_db()
    assert lead.updated_at == updated_at


def test_patching_the_descriptive_fields_of_a_lead_stores_them(contract_api, campaign):
    lead = LeadFactory(campaign=campaign)
    body = {
        "city": "Delhi",
        "source": "Referral",
        "stage": "Interested",
        "last_activity": "2026-02-01T08:00:00+01:00",
        "pricing_plan": "enterprise",
    }

    response = contract_api.patch(lead_url(lead.pk), body, format="json")

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.city, lead.source, lead.stage, lead.pricing_plan) == (
        "Delhi",
        "Referral",
        "Interested",
        "enterprise",
    )
    assert lead.last_activity == dt.datetime(2026, 2, 1, 7, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "body",
    [
        {"status": "closed"},
        {"external_id": "B-2"},
        {"customer_id": 1},
        {"attempt_count": 0},
        {"nickname": "x"},
        {"lead_type": "stale", "holder_id": 3},
    ],
)
def test_patching_an_unknown_or_read_only_field_is_a_400_naming_it(contract_api, campaign, body):
    lead = LeadFactory(campaign=campaign, lead_type="live")

    response = contract_api.patch(lead_url(lead.pk), body, format="json")

    assert response.status_code == 400
    unknown = next(name for name in body if name != "lead_type")
    assert response.json()[unknown] == ["Unknown or read-only field."]
    lead.refresh_from_db()
    assert lead.lead_type == "live"
    assert not LeadEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lead_type": "warm"}, "lead_type"),
        ({"rescheduled_at": "tomorrow"}, "rescheduled_at"),
        ({"rescheduled_at": "9999-12-31T23:00:00-05:00"}, "rescheduled_at"),
        ({"rescheduled_at": "9999-12-31T23:59:59Z"}, "rescheduled_at"),
        ({"last_activity": "1899-12-31T23:59:59Z"}, "last_activity"),
        ({"last_activity": "0001-01-01T00:00:00+01:00"}, "last_activity"),
        ({"pricing_plan": "gold"}, "pricing_plan"),
        ({"city": "x" * 201}, "city"),
        ({"city": None}, "city"),
        ({"lead_type": None}, "lead_type"),
    ],
)
def test_patching_a_bad_value_is_a_400_naming_the_field(contract_api, campaign, body, field):
    lead = LeadFactory(campaign=campaign)

    response = contract_api.patch(lead_url(lead.pk), body, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_patching_with_a_lone_surrogate_in_an_unknown_key_is_a_400(contract_api, campaign):
    # The error would name the key, which the renderer cannot encode.
    lead = LeadFactory(campaign=campaign)

    response = contract_api.patch(lead_url(lead.pk), '{"\\ud800": 1}', content_type="application/json")

    assert response.status_code == 400
    assert "lone UTF-16 surrogate" in response.json()["detail"]


@pytest.mark.parametrize("body", ["{}", ""])
def test_patching_with_an_empty_body_is_a_400(contract_api, campaign, body):
    lead = LeadFactory(campaign=campaign)

    response = contract_api.patch(lead_url(lead.pk), body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Nothing to update."]}


@pytest.mark.parametrize("body", ["[]", '"stale"', "null", '{"lead_type": '])
def test_patching_with_a_body_that_is_not_an_object_is_a_400(contract_api, campaign, body):
    lead = LeadFactory(campaign=campaign)

    response = contract_api.patch(lead_url(lead.pk), body, content_type="application/json")

    assert response.status_code == 400


def test_rescheduling_a_closed_lead_is_a_409_and_changes_nothing(contract_api, campaign, frozen_now):
    lead = LeadFactory(
        campaign=campaign,
        status=QueueStatus.CLOSED,
        closed_at=frozen_now,
        closed_reason="converted",
        lead_type="live",
    )
    later = frozen_now + dt.timedelta(hours=22)

    response = contract_api.patch(
        lead_url(lead.pk), {"rescheduled_at": iso(later), "lead_type": "stale"}, format="json"
    )

    assert response.status_code == 409
    assert "closed" in response.json()["detail"]
    lead.refresh_from_db()
    assert (lead.status, lead.rescheduled_at, lead.lead_type) == (QueueStatus.CLOSED, None, "live")
    assert not LeadEvent.objects.exists()


def test_a_closed_lead_keeps_its_data_editable(contract_api, campaign, frozen_now):
    lead = LeadFactory(
        campaign=campaign, status=QueueStatus.CLOSED, closed_at=frozen_now, closed_reason="converted"
    )

    response = contract_api.patch(lead_url(lead.pk), {"lead_type": "stale"}, format="json")

    assert response.status_code == 200
    lead.refresh_from_db()
    assert (lead.lead_type, lead.status) == ("stale", QueueStatus.CLOSED)


def test_patching_an_unknown_lead_is_a_404(contract_api, db):
    response = contract_api.patch(lead_url(999_999), {"lead_type": "stale"}, format="json")

    assert response.status_code == 404


def test_a_lead_cannot_be_deleted_or_replaced_through_the_api(admin_api, campaign):
    lead = LeadFactory(campaign=campaign)

    assert admin_api.delete(lead_url(lead.pk)).status_code == 405
    assert admin_api.put(lead_url(lead.pk), {"lead_type": "stale"}, format="json").status_code == 405
    assert Lead.objects.filter(pk=lead.pk).exists()


def test_customers_other_than_the_lead_customer_are_untouched_by_a_batch(admin_api, campaign):
    other = CustomerFactory()
    other_campaign = CampaignFactory(customer=other)
    LeadFactory(campaign=other_campaign, external_id="A-1", city="Berlin")

    admin_api.post(LEADS_URL, {"leads": [lead_body(campaign, city="Pune")]}, format="json")

    assert Lead.objects.get(customer=other).city == "Berlin"
    assert Lead.objects.get(customer=campaign.customer).city == "Pune"


@pytest.mark.django_db
def test_the_fast_lead_representation_matches_what_drf_fields_render(ingest_api, customer, campaign):
    from rest_framework import serializers as drf_serializers

    from leads.api import LeadOutputSerializer

    body = {
        "external_id": "shape-1",
        "customer_id": customer.pk,
        "campaign_id": campaign.pk,
        "lead_type": "live",
        "last_activity": "2026-11-24T08:15:00.123456+02:00",
        "rescheduled_at": "2026-11-25T10:00:00Z",
    }
    lead = Lead.objects.get(pk=ingest_api.post("/api/v1/leads/", body, format="json").json()["id"])
    serializer = LeadOutputSerializer(lead)
    by_fields = drf_serializers.ModelSerializer.to_representation(serializer, lead)
    assert serializer.data == by_fields
    assert serializer.data["last_activity"] == "2026-11-24T06:15:00.123456Z"


def test_a_body_over_the_upload_limit_is_a_json_413_that_says_how_much_fits(admin_api, campaign, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    items = [
        {
            "external_id": f"big-{i}",
            "customer_id": campaign.customer_id,
            "campaign_id": campaign.pk,
            "lead_type": "live",
        }
        for i in range(100)
    ]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 413
    assert "2,000 bytes" in response.json()["detail"]
    assert not Lead.objects.filter(external_id__startswith="big-").exists()
