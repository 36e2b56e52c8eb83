"""Engine paths found wanting in a review (claims, outcomes, leases, rescoring); each
finding's test failed before its fix."""

import datetime as dt

import pytest
import time_machine
from rest_framework.test import APIClient

from leads.models import Campaign, EventKind, Lead, LeadEvent, QueueStatus
from leads.services import update_lead
from prioritization import services
from prioritization.scoring import priority_key
from prioritization.services import (
    ClaimRefused,
    LeadStateConflict,
    claim_next_lead,
    current_versions,
    extend_lease,
    facts_of,
    params_for_version,
    ranked_leads_at,
    record_outcome,
    rescore_leads,
)
from tests.factories import CampaignFactory, LeadFactory
from tests.prioritization.conftest import (
    T0,
    add_lead,
    add_leads,
    claim,
    delete_policy_as_the_admin_does,
    set_policy,
)

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


# --- Rescoring against concurrent writers ------------------------------------------------


def test_a_rescoring_batch_does_not_overwrite_the_key_an_outcome_wrote_after_the_batch_was_read(
    all_day_campaign: Campaign, make_contractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass reads a batch, computes its keys, then writes them: an outcome that moved the
    lead in between (here a callback three hours on) has keyed the lead from its new due
    time, and the pass must not put back a key computed from the old one."""
    customer = all_day_campaign.customer
    set_policy(customer)
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign, city="Pune")
        claim(contractor, all_day_campaign)
    new = set_policy(customer, city_weights={"Pune": 3.0})  # the pass has something to write
    put = services._BatchWriter.put

    def outcome_then_put(writer: services._BatchWriter, batch: dict) -> None:
        with time_machine.travel(T0 + 5 * MINUTE, tick=False):
            record_outcome(
                lead_id=lead.pk,
                contractor_id=contractor.pk,
                disposition="callback",
                callback_at=T0 + 3 * HOUR,
            )
        put(writer, batch)

    monkeypatch.setattr(services._BatchWriter, "put", outcome_then_put)
    rescore_leads()
    lead.refresh_from_db()
    assert lead.due_at == T0 + 3 * HOUR
    assert lead.scored_version == new.pk
    assert lead.priority_key == priority_key(facts_of(lead), params_for_version(new.pk))


# --- Idempotency keys ---------------------------------------------------------------------


def test_an_idempotency_key_sent_again_with_another_disposition_is_a_conflict_not_a_silent_repeat(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        record_outcome(
            lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer", idempotency_key="k"
        )
        with pytest.raises(
            LeadStateConflict, match=r"'k' of lead .* was used for another outcome \(no_answer"
        ):
            record_outcome(
                lead_id=lead.pk, contractor_id=contractor.pk, disposition="converted", idempotency_key="k"
            )
        # The same outcome under the same key is still a repeat.
        again = record_outcome(
            lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer", idempotency_key="k"
        )
    assert again.repeated
    lead.refresh_from_db()
    assert lead.status == QueueStatus.WAITING
    assert lead.attempt_count == 1


def test_another_contractors_outcome_under_the_holders_idempotency_key_is_a_conflict(
    all_day_campaign: Campaign, make_contractor
) -> None:
    holder, other = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(holder, all_day_campaign)
        record_outcome(lead_id=lead.pk, contractor_id=holder.pk, disposition="busy", idempotency_key="k")
        with pytest.raises(LeadStateConflict, match=f"busy by contractor {holder.pk}"):
            record_outcome(lead_id=lead.pk, contractor_id=other.pk, disposition="busy", idempotency_key="k")
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.ATTEMPT).count() == 1


def test_a_reused_idempotency_key_with_another_body_is_409_over_http(
    contract_api: APIClient, all_day_campaign: Campaign, make_contractor
) -> None:
    holder, other = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(holder, all_day_campaign)
        url = f"/api/v1/leads/{lead.pk}/outcome/"
        body = {"contractor_id": holder.pk, "disposition": "no_answer", "idempotency_key": "k"}
        assert contract_api.post(url, body, format="json").status_code == 200
        assert contract_api.post(url, body, format="json").status_code == 200
        for changed in ({"disposition": "converted"}, {"contractor_id": other.pk}):
            response = contract_api.post(url, {**body, **changed}, format="json")
            assert response.status_code == 409, response.json()
            assert "was used for another outcome" in response.json()["detail"]
    lead.refresh_from_db()
    assert (lead.status, lead.attempt_count) == (QueueStatus.WAITING, 1)


def test_a_callback_sent_again_under_its_key_with_another_time_is_a_conflict(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        callback = {"contractor_id": contractor.pk, "disposition": "callback", "idempotency_key": "k"}
        record_outcome(lead_id=lead.pk, callback_at=T0 + 2 * HOUR, **callback)
    with time_machine.travel(T0 + MINUTE, tick=False):
        with pytest.raises(LeadStateConflict, match="another outcome \\(callback at 2026-11-24T12:00:00"):
            record_outcome(lead_id=lead.pk, callback_at=T0 + 3 * HOUR, **callback)
        assert record_outcome(lead_id=lead.pk, callback_at=T0 + 2 * HOUR, **callback).repeated
    lead.refresh_from_db()
    assert lead.due_at == T0 + 2 * HOUR


def test_a_callback_asked_for_a_past_moment_is_still_a_repeat_when_retried_later(
    all_day_campaign: Campaign, make_contractor
) -> None:
    # Due at once the first time, and a retry minutes later names the same past moment: the
    # comparison is with what was asked, not with when it became due.
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        callback = {"contractor_id": contractor.pk, "disposition": "callback", "idempotency_key": "k"}
        first = record_outcome(lead_id=lead.pk, callback_at=T0 - HOUR, **callback)
    assert first.lead.status == QueueStatus.READY
    with time_machine.travel(T0 + 5 * MINUTE, tick=False):
        assert record_outcome(lead_id=lead.pk, callback_at=T0 - HOUR, **callback).repeated


# --- Caps -----------------------------------------------------------------------------------


def test_a_contractor_over_both_caps_is_told_to_come_back_when_both_allow_a_claim(
    all_day_campaign: Campaign, make_contractor
) -> None:
    set_policy(all_day_campaign.customer, claims_per_hour_cap=2, claims_per_day_cap=2)
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        add_leads(all_day_campaign, *({} for _ in range(4)))
    for minutes in (0, 10):
        with time_machine.travel(T0 + MINUTE * minutes, tick=False):
            lead = claim(contractor, all_day_campaign)
            record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="converted")
    with (
        time_machine.travel(T0 + MINUTE * 20, tick=False),
        pytest.raises(ClaimRefused, match="cap of 2 claims per day") as capped,
    ):
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    # An hour on, the hourly cap would allow a claim but the daily one still refuses it.
    assert capped.value.retry_after == T0 + dt.timedelta(days=1)
    with time_machine.travel(T0 + HOUR, tick=False), pytest.raises(ClaimRefused):
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    with time_machine.travel(capped.value.retry_after, tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is not None


# --- Leads keyed under a version that no longer exists -----------------------------------


def test_leads_keyed_under_a_deleted_policy_are_still_handed_out_before_rescoring(
    contract_api: APIClient, all_day_campaign: Campaign, make_contractor
) -> None:
    """Deleting a customer's policy in the admin (possible while no decision names its
    versions) takes its versions along; its leads keep their keys until the rescoring that
    the deletion enqueues has run, and a claim meanwhile (another process, whose cache of
    versions never saw that one; a broker that is down) must still hand them out."""
    customer = all_day_campaign.customer
    own = set_policy(customer, city_weights={"Pune": 2.0})
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign, city="Pune")
    assert lead.scored_version == own.pk
    delete_policy_as_the_admin_does(own.policy)
    services.forget_cached_versions()  # a process that never read that version
    # The brute-force ranking (the admin's preview) reads them as the claim does.
    ranked = ranked_leads_at(campaign_ids=[all_day_campaign.pk], now=T0 + MINUTE)
    assert [r.candidate.lead_id for r in ranked] == [lead.pk]
    with time_machine.travel(T0 + MINUTE, tick=False):
        response = contract_api.post(
            "/api/v1/next-lead/",
            {"campaign_ids": [all_day_campaign.pk], "contractor_id": contractor.pk},
            format="json",
        )
    assert response.status_code == 200, response.json()
    assert response.json()["lead_id"] == lead.pk
    assert response.json()["policy_version_id"] == current_versions([customer.pk])[customer.pk].pk


@pytest.mark.django_db(transaction=True)
def test_a_process_that_cached_a_deleted_policys_version_still_hands_out_its_leads(
    all_day_campaign: Campaign, make_contractor
) -> None:
    """The same, in a process that had read the version before (scoring an arriving lead
    caches it): the decision named it, and at commit (autocommit: the statement's own) the
    decision log's foreign key refused the whole take, on every claim until rescoring."""
    customer = all_day_campaign.customer
    own = set_policy(customer, city_weights={"Pune": 2.0})
    contractor = make_contractor(all_day_campaign)
    lead = add_lead(all_day_campaign, city="Pune")
    assert services.params_for_version(own.pk).version_id == own.pk  # cached here
    delete_policy_as_the_admin_does(own.policy)
    result = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    assert result is not None
    assert result.lead.pk == lead.pk
    assert result.decision.policy_version_id == current_versions([customer.pk])[customer.pk].pk
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id) == (QueueStatus.HELD, contractor.pk)


# --- The brute-force ranking sees what a claim sees --------------------------------------------


def test_the_brute_force_ranking_scores_a_never_scored_lead_under_the_policy_in_force(
    all_day_campaign: Campaign,
) -> None:
    # A row written around the ingest paths (no key, no version): the claim ranks it under
    # the customer's version in force, not under built-in defaults.
    customer = all_day_campaign.customer
    in_force = set_policy(customer, live_decay_minutes=200, city_weights={"Pune": 2.0})
    lead = LeadFactory(campaign=all_day_campaign, created_at=T0 - MINUTE)
    assert (lead.scored_version, lead.priority_key) == (None, None)

    (ranked,) = ranked_leads_at(campaign_ids=[all_day_campaign.pk], now=T0)

    assert ranked.candidate.policy == params_for_version(in_force.pk)


def test_the_brute_force_ranking_leaves_out_what_a_claim_would_not_hand_out(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    holder = make_contractor(all_day_campaign)
    with time_machine.travel(T0 - HOUR, tick=False):
        ready, held = add_leads(all_day_campaign, {}, {})
    # Its lease ran out, but it was re-pushed to be due later: it goes back to waiting.
    Lead.objects.filter(pk=held.pk).update(
        status=QueueStatus.HELD, holder=holder, lease_expires_at=T0 - MINUTE, due_at=T0 + HOUR
    )
    paused = CampaignFactory(customer=all_day_campaign.customer, active=False)
    with time_machine.travel(T0 - HOUR, tick=False):
        add_leads(paused, {})

    ranked = ranked_leads_at(campaign_ids=[all_day_campaign.pk, paused.pk], now=T0)

    assert [r.candidate.lead_id for r in ranked] == [ready.pk]
    with time_machine.travel(T0, tick=False):
        first = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
        assert first is not None
        assert first.lead.pk == ready.pk
        record_outcome(lead_id=ready.pk, contractor_id=contractor.pk, disposition="converted")
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is None


# --- Outcomes against concurrent changes --------------------------------------------------


def test_an_outcome_does_not_undo_a_patch_that_landed_between_its_read_and_its_write(
    all_day_campaign: Campaign, make_contractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Contract app makes the held lead stale while its call's outcome is on the way: the
    outcome's write must not put back the lead type (and key) it read before the change."""
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign, last_activity=T0 - dt.timedelta(days=3))
        claim(contractor, all_day_campaign)
    read = services._read_for_outcome
    patched: list[Lead] = []

    def read_then_patch(lead_id: int, key: str):  # type: ignore[no-untyped-def]
        result = read(lead_id, key)
        if not patched:
            patched.append(update_lead(lead_id=lead_id, changes={"lead_type": "stale"}))
        return result

    monkeypatch.setattr(services, "_read_for_outcome", read_then_patch)
    with time_machine.travel(T0 + MINUTE, tick=False):
        result = record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
    lead.refresh_from_db()
    assert patched
    assert result.lead.lead_type == lead.lead_type == "stale"
    assert lead.status == QueueStatus.WAITING
    assert lead.attempt_count == 1
    assert lead.priority_key == priority_key(facts_of(lead), params_for_version(lead.scored_version))


# --- Leases ---------------------------------------------------------------------------------


def test_extending_a_lease_never_shortens_it_after_the_policy_shortened_its_leases(
    all_day_campaign: Campaign, make_contractor
) -> None:
    set_policy(all_day_campaign.customer, lease_seconds=3600)
    holder, other = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(holder, all_day_campaign)
    set_policy(all_day_campaign.customer, lease_seconds=60)
    with time_machine.travel(T0 + MINUTE, tick=False):
        extended = extend_lease(lead_id=lead.pk, contractor_id=holder.pk)
    assert extended.lease_expires_at == T0 + HOUR
    with time_machine.travel(T0 + 30 * MINUTE, tick=False):
        assert claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk]) is None
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id) == (QueueStatus.HELD, holder.pk)
