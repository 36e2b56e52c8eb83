"""Races and leftovers around the engine's conditional writes: a policy deleted under its
leads, the outcome's row-version check, idempotency retries, rescoring against concurrent
writers, and a claim a PATCH ended before a withdrawal (SLA)."""

import datetime as dt
from collections.abc import Callable

import psycopg
import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from leads.models import EventKind, LeadEvent, QueueStatus
from leads.services import update_lead
from prioritization import services
from prioritization.services import (
    claim_next_lead,
    current_versions,
    ranked_leads_at,
    record_outcome,
    rescore_leads,
    withdraw_lead,
)
from prioritization.sla import SlaCounts, sla_report
from tests.factories import CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_lead, add_leads, delete_policy_as_the_admin_does, set_policy
from tests.prioritization.sla_world import claim_at, live_lead

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


def other_dsn() -> dict:
    """A second connection to the test database (the embedded server's socket included)."""
    return connection.get_connection_params()


def after_the_first_outcome_read(
    monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[int, str], object]
) -> list[str]:
    """Run ``meanwhile(lead_id, xmin)`` right after the outcome's first read of the lead (a
    writer between its read and its conditional write); returns the xmin of every read."""
    rounds: list[str] = []
    read = services._read_for_outcome

    def read_then_act(lead_id: int, key: str):  # type: ignore[no-untyped-def]
        result = read(lead_id, key)
        rounds.append(result[1])
        if len(rounds) == 1:
            meanwhile(lead_id, result[1])
        return result

    monkeypatch.setattr(services, "_read_for_outcome", read_then_act)
    return rounds


# --- Deleted policy: the claim's fallback is the first campaign's customer's version ----------


@pytest.mark.django_db
def test_claim_fallback_for_a_deleted_version_uses_the_leads_own_customers_version(make_contractor) -> None:
    """Tuple of two customers' campaigns; B's own policy is deleted, so B's leads are under
    the default policy. The fallback is the version in force for the lead's own customer,
    not the first of the tuple's (A's campaign sorts first): lease and logged version are B's."""
    a, b = CustomerFactory(), CustomerFactory()
    camp_a, camp_b = campaign_calling_all_day(a), campaign_calling_all_day(b)  # camp_a.pk < camp_b.pk
    a_version = set_policy(a, lease_seconds=60)
    b_own = set_policy(b, city_weights={"Pune": 2.0})
    contractor = make_contractor(camp_a, camp_b)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(camp_b, city="Pune")
    assert lead.scored_version == b_own.pk
    delete_policy_as_the_admin_does(b_own.policy)
    services.forget_cached_versions()
    b_in_force = current_versions([b.pk])[b.pk]
    assert b_in_force.pk != a_version.pk
    # The preview (ranked_leads_at) keys it under B's version in force ...
    ranked = ranked_leads_at(campaign_ids=[camp_a.pk, camp_b.pk], now=T0 + MINUTE)
    assert ranked[0].candidate.policy.version_id == b_in_force.pk
    # ... and so does the claim.
    with time_machine.travel(T0 + MINUTE, tick=False):
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[camp_a.pk, camp_b.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk
    assert claim.decision.policy_version_id == b_in_force.pk, (
        f"logged version {claim.decision.policy_version_id} is customer A's ({a_version.pk})"
    )
    assert claim.lead.lease_expires_at == T0 + MINUTE + dt.timedelta(seconds=b_in_force.lease_seconds)


@pytest.mark.django_db
def test_preview_of_leads_under_a_deleted_version_queries_once_per_lead(all_day_campaign) -> None:
    """ranked_leads_at: params_for_version raises DoesNotExist for a deleted version, and
    lru_cache does not keep exceptions: a version found gone is not asked for again."""
    customer = all_day_campaign.customer
    own = set_policy(customer, city_weights={"Pune": 2.0})
    with time_machine.travel(T0, tick=False):
        add_leads(all_day_campaign, *({"city": "Pune"} for _ in range(50)))
    delete_policy_as_the_admin_does(own.policy)
    services.forget_cached_versions()
    with CaptureQueriesContext(connection) as queries:
        ranked = ranked_leads_at(campaign_ids=[all_day_campaign.pk], now=T0 + MINUTE)
    assert len(ranked) == 50
    assert len(queries) < 10, f"{len(queries)} queries for 50 leads"


# --- Outcomes: xmin -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_row_lock_without_a_write_keeps_xmin_and_the_outcome_writes_first_time(
    all_day_campaign, make_contractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FOR NO KEY UPDATE (an upsert that changes nothing, a wake's SKIP LOCKED probe) and a
    rescoring write that is a no-op for the row do not change xmin; a real write does and
    the outcome reads again once."""
    contractor = make_contractor(all_day_campaign)
    lead = add_lead(all_day_campaign)
    claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    dsn = other_dsn()

    def lock(lead_id: int, xmin: str) -> None:
        with psycopg.connect(**dsn) as other:
            other.execute("SELECT 1 FROM leads_lead WHERE id = %s FOR NO KEY UPDATE", [lead_id])
            other.execute("SELECT 1 FROM leads_lead WHERE id = %s FOR UPDATE", [lead_id])
        with psycopg.connect(**dsn, autocommit=True) as other, other.transaction():
            other.execute("SAVEPOINT s")
            other.execute("SELECT 1 FROM leads_lead WHERE id = %s FOR SHARE", [lead_id])
            other.execute("RELEASE s")

    rounds = after_the_first_outcome_read(monkeypatch, lock)
    result = record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
    assert not result.repeated
    assert len(rounds) == 1, rounds


@pytest.mark.django_db(transaction=True)
def test_vacuum_freeze_keeps_the_xmin_the_outcome_read(
    all_day_campaign, make_contractor, monkeypatch
) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = add_lead(all_day_campaign)
    claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    dsn = other_dsn()

    def freeze(lead_id: int, xmin: str) -> None:
        with psycopg.connect(**dsn, autocommit=True) as other:
            other.execute("VACUUM (FREEZE) leads_lead")
            frozen = other.execute("SELECT xmin::text FROM leads_lead WHERE id = %s", [lead_id]).fetchone()[0]
        assert frozen == xmin

    rounds = after_the_first_outcome_read(monkeypatch, freeze)
    assert not record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="busy").repeated
    assert len(rounds) == 1


@pytest.mark.django_db
def test_a_rescoring_write_between_read_and_write_costs_the_outcome_one_more_round(
    all_day_campaign, make_contractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign, city="Pune")
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    new = set_policy(all_day_campaign.customer, city_weights={"Pune": 3.0})

    def rescore(lead_id: int, xmin: str) -> None:
        assert rescore_leads().rewritten == 1

    rounds = after_the_first_outcome_read(monkeypatch, rescore)
    with time_machine.travel(T0 + MINUTE, tick=False):
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
    lead.refresh_from_db()
    assert len(rounds) == 2
    assert lead.scored_version == new.pk
    assert lead.status == QueueStatus.WAITING


# --- Idempotency keys ------------------------------------------------------------------------


@pytest.mark.django_db
def test_callback_retry_with_the_same_instant_in_another_offset_or_with_microseconds_is_a_repeat(
    all_day_campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    when = (T0 + 2 * HOUR).replace(microsecond=123456)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
        body = {"contractor_id": contractor.pk, "disposition": "callback", "idempotency_key": "k"}
        record_outcome(lead_id=lead.pk, callback_at=when.astimezone(ist), **body)
    with time_machine.travel(T0 + MINUTE, tick=False):
        assert record_outcome(lead_id=lead.pk, callback_at=when, **body).repeated


@pytest.mark.django_db
def test_an_attempt_recorded_before_requested_callback_at_was_kept_is_still_a_repeat(
    all_day_campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
        body = {"contractor_id": contractor.pk, "disposition": "callback", "idempotency_key": "k"}
        record_outcome(lead_id=lead.pk, callback_at=T0 + 2 * HOUR, **body)
    event = LeadEvent.objects.get(lead=lead, kind=EventKind.ATTEMPT)
    event.detail.pop("requested_callback_at")
    event.save(update_fields=["detail"])
    with time_machine.travel(T0 + MINUTE, tick=False):
        assert record_outcome(lead_id=lead.pk, callback_at=T0 + 2 * HOUR, **body).repeated


@pytest.mark.django_db
def test_a_late_retry_after_the_lead_was_reclaimed_by_someone_else_is_a_repeat_and_changes_nothing(
    all_day_campaign, make_contractor
) -> None:
    first, second = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim_next_lead(contractor_id=first.pk, campaign_ids=[all_day_campaign.pk])
        record_outcome(lead_id=lead.pk, contractor_id=first.pk, disposition="no_answer", idempotency_key="k")
    with time_machine.travel(T0 + 25 * HOUR, tick=False):
        claim = claim_next_lead(contractor_id=second.pk, campaign_ids=[all_day_campaign.pk])
        assert claim is not None
        assert claim.lead.pk == lead.pk
        again = record_outcome(
            lead_id=lead.pk, contractor_id=first.pk, disposition="no_answer", idempotency_key="k"
        )
    assert again.repeated
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id, lead.attempt_count) == (QueueStatus.HELD, second.pk, 1)


# --- SLA: withdrawn during the first call ------------------------------------------------------


@pytest.mark.django_db
def test_a_claim_ended_by_a_reschedule_patch_then_withdrawn_is_not_a_call(
    all_day_campaign, make_contractor
) -> None:
    """update_lead with a new rescheduled_at releases a held lead (holder, claim cleared) and
    logs an 'updated' event, which ends that claim for the SLA's lookup as a release does: a
    lead withdrawn afterwards is not counted by that claim, just as the same lead not
    withdrawn counts as no call (missed)."""
    contractor = make_contractor(all_day_campaign)
    withdrawn = live_lead(all_day_campaign, T0)
    claim_at(contractor, withdrawn, T0 + 5 * MINUTE)
    with time_machine.travel(T0 + 6 * MINUTE, tick=False):
        update_lead(lead_id=withdrawn.pk, changes={"rescheduled_at": T0 + 3 * HOUR})
    withdrawn.refresh_from_db()
    assert (withdrawn.status, withdrawn.claimed_at) == (QueueStatus.WAITING, None)
    withdraw_lead(lead_id=withdrawn.pk, now=T0 + 40 * MINUTE)

    kept = live_lead(all_day_campaign, T0)
    claim_at(contractor, kept, T0 + 7 * MINUTE)
    with time_machine.travel(T0 + 8 * MINUTE, tick=False):
        update_lead(lead_id=kept.pk, changes={"rescheduled_at": T0 + 3 * HOUR})

    report = sla_report(now=T0 + 2 * HOUR, start=T0.date(), end=T0.date())
    # Both were released by the PATCH before any attempt; both should be missed.
    assert report.overall.sla_range == SlaCounts(live_leads=2, in_sla=0, missed=2)


# --- Rescoring: a fact change that leaves key, deadline and version as they were --------------


@pytest.mark.django_db
def test_a_patch_under_the_old_version_that_keeps_the_key_is_not_overwritten_with_a_key_from_old_facts(
    all_day_campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PATCH that read the version in force just before the policy change (simulated:
    current_versions answers V1) moves city Delhi -> Pune; under V1 (no city weights) its key
    is unchanged, so a write conditional on (key, deadline, version) alone would still put
    the batch's V2 key of city=Delhi on a Pune lead. The write also checks updated_at."""
    from leads import services as lead_services
    from prioritization.scoring import priority_key
    from prioritization.services import facts_of, params_for_version

    customer = all_day_campaign.customer
    v1 = set_policy(customer)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign, city="Delhi")
    v2 = set_policy(customer, city_weights={"Pune": 3.0})
    put = services._BatchWriter.put

    def patch_then_put(writer, batch):  # type: ignore[no-untyped-def]
        with monkeypatch.context() as m:
            m.setattr(lead_services, "current_versions", lambda ids: dict.fromkeys(ids, v1))
            with time_machine.travel(T0 + MINUTE, tick=False):
                update_lead(lead_id=lead.pk, changes={"city": "Pune"})
        put(writer, batch)

    monkeypatch.setattr(services._BatchWriter, "put", patch_then_put)
    rescore_leads()
    lead.refresh_from_db()
    # The stored key must be the lead's facts under the version it names (the pass may skip
    # the row and leave it to the next pass, but must not write a key of the old facts).
    assert lead.city == "Pune"
    assert lead.priority_key == priority_key(facts_of(lead), params_for_version(lead.scored_version)), (
        f"key of city=Delhi stored under v{lead.scored_version} (v2={v2.pk})"
    )
