"""The engine's HTTP layer: next lead, outcomes, release, extend, withdraw, and key scopes."""

import datetime as dt

import pytest
import time_machine
from django.db import OperationalError
from rest_framework.test import APIClient

from leads.models import ApiScope, Campaign, Lead, QueueStatus
from prioritization import services
from prioritization.models import Decision
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import T0, add_lead, set_policy

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/next-lead/"


def outcome_url(lead_id: int) -> str:
    return f"/api/v1/leads/{lead_id}/outcome/"


@pytest.fixture
def queue(campaign: Campaign, make_contractor):
    contractor = make_contractor(campaign)
    # Received before T0: tests travel to T0 and later, and the lead must be due by then.
    lead = add_lead(campaign, now=T0 - dt.timedelta(minutes=1), city="Pune")
    return contractor, lead


def test_next_lead_answers_with_the_lead_its_score_reasons_and_lease(
    contract_api: APIClient, campaign: Campaign, queue
) -> None:
    contractor, lead = queue
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["lead_id"] == lead.pk
    detail = contract_api.get(f"/api/v1/leads/{lead.pk}/").json()
    assert body["lead"] == detail
    assert body["lead"]["status"] == "held"
    assert body["lead"]["holder_id"] == contractor.pk
    assert body["lease_expires_at"] == detail["lease_expires_at"] is not None
    assert 0 < body["score"] <= 1
    assert body["band"] in {"live", "at_risk"}
    assert isinstance(body["reasons"], list)
    assert body["reasons"]
    decision = Decision.objects.get()
    assert body["decision_id"] == decision.pk
    assert body["policy_version_id"] == decision.policy_version_id
    assert body["reasons"] == decision.reasons


def test_next_lead_is_204_when_nothing_is_eligible(
    contract_api: APIClient, campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(campaign)
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )
    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"campaign_ids": [], "contractor_id": 1}, "campaign_ids"),
        ({"campaign_ids": list(range(1, 52)), "contractor_id": 1}, "campaign_ids"),
        ({"campaign_ids": ["four"], "contractor_id": 1}, "campaign_ids"),
        ({"campaign_ids": [1.5], "contractor_id": 1}, "campaign_ids"),
        ({"campaign_ids": 4, "contractor_id": 1}, "campaign_ids"),
        ({"contractor_id": 1}, "campaign_ids"),
        ({"campaign_ids": [1]}, "contractor_id"),
        ({"campaign_ids": [1], "contractor_id": "twelve"}, "contractor_id"),
        # Past PostgreSQL's bigint: a field error, not the database's.
        ({"campaign_ids": [2**63], "contractor_id": 1}, "campaign_ids"),
        ({"campaign_ids": [1], "contractor_id": 2**63}, "contractor_id"),
        # Digits other than ASCII's (DRF would read this one as 1).
        ({"campaign_ids": [1], "contractor_id": "\u0661"}, "contractor_id"),
    ],
)
def test_next_lead_rejects_a_bad_body_with_field_errors(
    contract_api: APIClient, body: dict, field: str
) -> None:
    response = contract_api.post(NEXT, body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_fifty_campaigns_are_accepted(contract_api: APIClient, make_contractor) -> None:
    customer = CustomerFactory()
    campaigns = [CampaignFactory(customer=customer) for _ in range(50)]
    contractor = make_contractor(*campaigns)
    response = contract_api.post(
        NEXT, {"campaign_ids": [c.pk for c in campaigns], "contractor_id": contractor.pk}, format="json"
    )
    assert response.status_code == 204


def test_next_lead_refuses_unknown_inactive_and_unqualified_contractors(
    contract_api: APIClient, campaign: Campaign, make_contractor, queue
) -> None:
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": 987654}, format="json"
    )
    assert response.status_code == 404
    assert "Unknown contractor 987654" in response.json()["detail"]
    inactive = make_contractor(campaign, active=False)
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": inactive.pk}, format="json"
    )
    assert response.status_code == 403
    assert "inactive" in response.json()["detail"]
    other = CampaignFactory(customer=campaign.customer)
    qualified_for_one = make_contractor(campaign)
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk, other.pk], "contractor_id": qualified_for_one.pk}, format="json"
    )
    assert response.status_code == 403
    assert f"not qualified for campaign(s) {other.pk}" in response.json()["detail"]
    assert not Decision.objects.exists()


def test_an_over_cap_contractor_gets_429_with_retry_after(
    contract_api: APIClient, campaign: Campaign, make_contractor
) -> None:
    set_policy(campaign.customer, claims_per_hour_cap=1)
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        first = add_lead(campaign)
        add_lead(campaign)
        body = {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}
        assert contract_api.post(NEXT, body, format="json").status_code == 200
        contract_api.post(
            outcome_url(first.pk), {"contractor_id": contractor.pk, "disposition": "converted"}, format="json"
        )
    with time_machine.travel(T0 + dt.timedelta(minutes=15), tick=False):
        response = contract_api.post(NEXT, body, format="json")
    assert response.status_code == 429
    assert response["Retry-After"] == str(45 * 60 + 1)
    assert dt.datetime.fromisoformat(response.json()["retry_after"]) == T0 + dt.timedelta(hours=1)


def test_an_outcome_answers_with_the_leads_new_state(
    contract_api: APIClient, campaign: Campaign, queue
) -> None:
    contractor, lead = queue
    contract_api.post(NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json")
    response = contract_api.post(
        outcome_url(lead.pk), {"contractor_id": contractor.pk, "disposition": "no_answer"}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == contract_api.get(f"/api/v1/leads/{lead.pk}/").json()
    assert response.json()["status"] == "waiting"
    assert response.json()["reschedule_count"] == 1
    assert response.json()["holder_id"] is None
    assert response.json()["attempt_count"] == 1


def test_a_callback_outcome_over_http_makes_the_lead_wait(
    contract_api: APIClient, campaign: Campaign, queue
) -> None:
    contractor, lead = queue
    contract_api.post(NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json")
    response = contract_api.post(
        outcome_url(lead.pk),
        {"contractor_id": contractor.pk, "disposition": "callback", "callback_at": "2099-01-05T12:00:00Z"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["status"] == "waiting"
    assert response.json()["due_at"] == "2099-01-05T12:00:00Z"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"disposition": "maybe"}, "disposition"),
        ({"disposition": ""}, "disposition"),
        ({"disposition": "callback"}, "callback_at"),
        ({"disposition": "callback", "callback_at": "tomorrow"}, "callback_at"),
        # Near the end of Python's calendar: moving it into calling hours would overflow.
        ({"disposition": "callback", "callback_at": "9999-12-31T23:59:59Z"}, "callback_at"),
        ({"disposition": "callback", "callback_at": "2100-01-01T00:00:00Z"}, "callback_at"),
        ({}, "disposition"),
    ],
)
def test_a_bad_outcome_body_is_400(
    contract_api: APIClient, campaign: Campaign, queue, body: dict, field: str
) -> None:
    contractor, lead = queue
    contract_api.post(NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json")
    response = contract_api.post(
        outcome_url(lead.pk), {"contractor_id": contractor.pk, **body}, format="json"
    )
    assert response.status_code == 400
    assert field in response.json()
    lead.refresh_from_db()
    assert lead.status == QueueStatus.HELD
    assert lead.attempt_count == 0


def test_an_outcome_from_a_non_holder_or_for_a_closed_lead_is_409(
    contract_api: APIClient, campaign: Campaign, make_contractor, queue
) -> None:
    contractor, lead = queue
    other = make_contractor(campaign)
    contract_api.post(NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json")
    response = contract_api.post(
        outcome_url(lead.pk), {"contractor_id": other.pk, "disposition": "busy"}, format="json"
    )
    assert response.status_code == 409
    assert "does not hold" in response.json()["detail"]
    contract_api.post(
        outcome_url(lead.pk), {"contractor_id": contractor.pk, "disposition": "converted"}, format="json"
    )
    response = contract_api.post(
        outcome_url(lead.pk), {"contractor_id": contractor.pk, "disposition": "busy"}, format="json"
    )
    assert response.status_code == 409
    assert "closed" in response.json()["detail"]
    assert (
        contract_api.post(
            outcome_url(987654), {"contractor_id": 1, "disposition": "busy"}, format="json"
        ).status_code
        == 404
    )


def test_the_same_outcome_posted_twice_answers_200_both_times_with_one_attempt(
    contract_api: APIClient, campaign: Campaign, queue
) -> None:
    contractor, lead = queue
    contract_api.post(NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json")
    body = {"contractor_id": contractor.pk, "disposition": "no_answer", "idempotency_key": "call-77"}
    first = contract_api.post(outcome_url(lead.pk), body, format="json")
    second = contract_api.post(outcome_url(lead.pk), body, format="json")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.json()["attempt_count"] == 1


def test_release_and_extend_endpoints(
    contract_api: APIClient, campaign: Campaign, make_contractor, queue
) -> None:
    contractor, lead = queue
    other = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        contract_api.post(
            NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
        )
    with time_machine.travel(T0 + dt.timedelta(minutes=5), tick=False):
        extended = contract_api.post(
            f"/api/v1/leads/{lead.pk}/extend/", {"contractor_id": contractor.pk}, format="json"
        )
        assert extended.status_code == 200
        assert dt.datetime.fromisoformat(extended.json()["lease_expires_at"]) == T0 + dt.timedelta(minutes=15)
        refused = contract_api.post(
            f"/api/v1/leads/{lead.pk}/release/", {"contractor_id": other.pk}, format="json"
        )
        assert refused.status_code == 409
        released = contract_api.post(
            f"/api/v1/leads/{lead.pk}/release/", {"contractor_id": contractor.pk}, format="json"
        )
        assert released.status_code == 200
        assert released.json()["status"] == "ready"
        assert released.json()["holder_id"] is None
        again = contract_api.post(
            NEXT, {"campaign_ids": [campaign.pk], "contractor_id": other.pk}, format="json"
        )
        assert again.status_code == 200
        assert again.json()["lead_id"] == lead.pk
        assert contract_api.post(f"/api/v1/leads/{lead.pk}/extend/", {}, format="json").status_code == 400


def test_the_ingest_key_cannot_ask_for_leads_and_the_contract_app_key_can(
    make_client, customer, campaign: Campaign, queue
) -> None:
    contractor, lead = queue
    body = {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}
    ingest = make_client(ApiScope.INGEST, customer)
    assert ingest.post(NEXT, body, format="json").status_code == 403
    assert (
        ingest.post(
            outcome_url(lead.pk), {"contractor_id": contractor.pk, "disposition": "busy"}, format="json"
        ).status_code
        == 403
    )
    assert (
        ingest.post(
            f"/api/v1/leads/{lead.pk}/release/", {"contractor_id": contractor.pk}, format="json"
        ).status_code
        == 403
    )
    assert APIClient().post(NEXT, body, format="json").status_code in (401, 403)
    assert not Decision.objects.exists()
    assert make_client(ApiScope.CONTRACT_APP).post(NEXT, body, format="json").status_code == 200


def test_a_customer_withdraws_its_own_lead_but_not_another_customers(
    make_client, ingest_api: APIClient, contract_api: APIClient, customer, campaign: Campaign, make_contractor
) -> None:
    own = add_lead(campaign)
    foreign_campaign = CampaignFactory(customer=CustomerFactory())
    foreign = add_lead(foreign_campaign)
    assert ingest_api.post(f"/api/v1/leads/{foreign.pk}/withdraw/").status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == QueueStatus.READY
    response = ingest_api.post(f"/api/v1/leads/{own.pk}/withdraw/")
    assert response.status_code == 200
    assert response.json()["status"] == "closed"
    assert response.json()["closed_reason"] == "withdrawn"
    contractor = make_contractor(campaign)
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )
    assert response.status_code == 204
    # The Contract app may not withdraw; the admin key may.
    assert contract_api.post(f"/api/v1/leads/{foreign.pk}/withdraw/").status_code == 403
    assert make_client(ApiScope.ADMIN).post(f"/api/v1/leads/{foreign.pk}/withdraw/").status_code == 200


def test_a_patch_from_the_contract_app_is_reflected_in_the_next_pick(
    contract_api: APIClient, campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(campaign)
    first = add_lead(campaign, created_at="2026-01-01T00:00:00Z")  # waited longest: scores lowest
    second = add_lead(campaign)
    response = contract_api.patch(
        f"/api/v1/leads/{second.pk}/", {"rescheduled_at": "2099-01-01T10:00:00Z"}, format="json"
    )
    assert response.status_code == 200, response.json()
    response = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )
    assert response.json()["lead_id"] == first.pk
    assert Lead.objects.get(pk=second.pk).status == QueueStatus.WAITING


def test_a_patch_reschedule_outside_calling_hours_moves_to_the_next_opening(
    contract_api: APIClient, db: None
) -> None:
    campaign = CampaignFactory(
        time_zone="America/New_York",
        calling_hours_start=dt.time(8),
        calling_hours_end=dt.time(20),
        calling_days=[0, 1, 2, 3, 4],
    )
    lead = add_lead(campaign, now=T0)
    saturday_night = "2026-11-28T08:00:00Z"  # 03:00 in New York
    monday_opening = dt.datetime(2026, 11, 30, 13, 0, tzinfo=dt.UTC)  # 08:00 there

    with time_machine.travel(T0, tick=False):
        response = contract_api.patch(
            f"/api/v1/leads/{lead.pk}/", {"rescheduled_at": saturday_night}, format="json"
        )

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.status, lead.rescheduled_at, lead.due_at) == (
        QueueStatus.WAITING,
        monday_opening,
        monday_opening,
    )
    assert response.json()["rescheduled_at"] == "2026-11-30T13:00:00Z"
    event = lead.events.filter(kind="updated").get()
    assert event.detail == {
        "rescheduled_at": "2026-11-30T13:00:00+00:00",
        "requested_rescheduled_at": "2026-11-28T08:00:00+00:00",
    }


def test_rescheduling_a_held_lead_by_patch_releases_it_completely(
    contract_api: APIClient, campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(campaign)
    lead = add_lead(campaign)
    claimed = contract_api.post(
        NEXT, {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )
    assert claimed.json()["lead_id"] == lead.pk

    response = contract_api.patch(
        f"/api/v1/leads/{lead.pk}/", {"rescheduled_at": "2099-01-01T10:00:00Z"}, format="json"
    )

    assert response.status_code == 200, response.json()
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id, lead.lease_expires_at, lead.claimed_at) == (
        QueueStatus.WAITING,
        None,
        None,
        None,
    )


def test_a_lost_database_connection_is_a_503_to_retry_not_a_500(
    contract_api: APIClient, campaign: Campaign, make_contractor, monkeypatch
) -> None:
    contractor = make_contractor(campaign)

    def database_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "claim_next_lead", database_gone)
    response = contract_api.post(
        "/api/v1/next-lead/", {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {"detail": "The database is unavailable; retry shortly."}


def test_the_engine_answers_json_whatever_the_accept_header_asks(
    contract_api: APIClient, campaign: Campaign, queue
) -> None:
    contractor, lead = queue
    response = contract_api.post(
        NEXT,
        {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk},
        format="json",
        HTTP_ACCEPT="text/html",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["lead_id"] == lead.pk
