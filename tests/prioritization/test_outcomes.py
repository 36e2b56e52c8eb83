"""What each disposition does to a lead, and the rules around reporting it."""

import datetime as dt
import random
import threading

import pytest
import time_machine
from django.db import connection

from leads.models import Campaign, CloseReason, EventKind, Lead, LeadEvent, QueueStatus
from leads.services import ingest_lead_batch, update_lead
from prioritization import services
from prioritization.services import (
    LeadStateConflict,
    claim_next_lead,
    extend_lease,
    record_outcome,
    release_lead,
    withdraw_lead,
)
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import T0, add_lead, claim, set_policy

pytestmark = pytest.mark.django_db

HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


@pytest.mark.parametrize("disposition", ["no_answer", "busy"])
def test_no_answer_or_busy_reschedules_a_live_lead_22_to_24_hours_later(
    disposition: str, all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    seen = []
    for i in range(12):
        start = T0 + dt.timedelta(days=2 * i, minutes=7 * i)
        with time_machine.travel(start, tick=False):
            lead = add_lead(all_day_campaign)
            assert claim(contractor, all_day_campaign).pk == lead.pk
            result = record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition=disposition)
        lead.refresh_from_db()
        delay = lead.rescheduled_at - start
        assert 22 * HOUR <= delay <= 24 * HOUR
        assert lead.due_at == lead.rescheduled_at
        assert lead.status == QueueStatus.WAITING
        assert lead.holder_id is None
        assert lead.lease_expires_at is None
        assert lead.reschedule_count == 1
        assert lead.attempt_count == 1
        assert lead.lead_type == "live"
        assert result.lead.status == QueueStatus.WAITING
        assert not result.repeated
        assert LeadEvent.objects.filter(lead=lead, kind=EventKind.RESCHEDULED).count() == 1
        seen.append(delay)
    # Spread at random in the window, not always one moment.
    assert len(set(seen)) > 1


def test_a_reschedule_that_would_land_outside_calling_hours_moves_to_the_next_opening(
    make_contractor,
) -> None:
    campaign = CampaignFactory(
        customer=CustomerFactory(),
        time_zone="UTC",
        calling_hours_start=dt.time(9),
        calling_hours_end=dt.time(17),
        calling_days=[0, 1, 2, 3, 4],
    )
    contractor = make_contractor(campaign)
    friday = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(friday, tick=False):
        lead = add_lead(campaign)
        claim(contractor, campaign)
        record_outcome(
            lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer", rng=random.Random(1)
        )
    lead.refresh_from_db()
    # Saturday 08:00-10:00 is outside hours: Monday's opening.
    assert lead.rescheduled_at == dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    assert lead.status == QueueStatus.WAITING


def test_a_reschedule_inside_calling_hours_is_not_moved(make_contractor) -> None:
    campaign = CampaignFactory(
        customer=CustomerFactory(), calling_hours_start=dt.time(8), calling_hours_end=dt.time(20)
    )
    contractor = make_contractor(campaign)
    tuesday = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)
    with time_machine.travel(tuesday, tick=False):
        lead = add_lead(campaign)
        claim(contractor, campaign)
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="busy")
    lead.refresh_from_db()
    assert 22 * HOUR <= lead.rescheduled_at - tuesday <= 24 * HOUR


def test_a_live_lead_is_rescheduled_three_times_then_the_next_no_answer_makes_it_stale_and_ready(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
    now = T0
    for expected_count in (1, 2, 3):
        with time_machine.travel(now, tick=False):
            assert claim(contractor, all_day_campaign).pk == lead.pk
            record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
        lead.refresh_from_db()
        assert lead.reschedule_count == expected_count
        assert lead.lead_type == "live"
        assert lead.status == QueueStatus.WAITING
        with time_machine.travel(lead.due_at - dt.timedelta(seconds=1), tick=False):
            assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is None
        now = lead.due_at
    with time_machine.travel(now, tick=False):
        assert claim(contractor, all_day_campaign).pk == lead.pk
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
        lead.refresh_from_db()
        assert lead.lead_type == "stale"
        assert lead.status == QueueStatus.READY
        assert lead.reschedule_count == 3
        assert lead.attempt_count == 4
        assert LeadEvent.objects.filter(lead=lead, kind=EventKind.BECAME_STALE).count() == 1
        # Ready at once, as a stale lead.
        again = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
        assert again is not None
        assert again.lead.pk == lead.pk
        assert again.decision.band == "stale"


def test_the_reschedule_limit_comes_from_the_customers_policy(
    all_day_campaign: Campaign, make_contractor
) -> None:
    set_policy(all_day_campaign.customer, reschedule_limit=1, reschedule_min_hours=1, reschedule_max_hours=2)
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
    lead.refresh_from_db()
    assert HOUR <= lead.due_at - T0 <= 2 * HOUR
    with time_machine.travel(lead.due_at, tick=False):
        claim(contractor, all_day_campaign)
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="busy")
    lead.refresh_from_db()
    assert lead.lead_type == "stale"
    assert lead.status == QueueStatus.READY


def test_a_callback_makes_the_lead_due_at_the_requested_time(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    callback_at = T0 + dt.timedelta(hours=3, minutes=17)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        record_outcome(
            lead_id=lead.pk, contractor_id=contractor.pk, disposition="callback", callback_at=callback_at
        )
    lead.refresh_from_db()
    assert lead.status == QueueStatus.WAITING
    assert lead.due_at == callback_at == lead.rescheduled_at
    assert lead.reschedule_count == 0
    with time_machine.travel(callback_at - dt.timedelta(seconds=1), tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is None
    with time_machine.travel(callback_at, tick=False):
        assert claim(contractor, all_day_campaign).pk == lead.pk


def test_a_callback_outside_calling_hours_moves_to_the_next_opening(make_contractor) -> None:
    campaign = CampaignFactory(
        customer=CustomerFactory(), calling_hours_start=dt.time(9), calling_hours_end=dt.time(17)
    )
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(campaign)
        claim(contractor, campaign)
        record_outcome(
            lead_id=lead.pk,
            contractor_id=contractor.pk,
            disposition="callback",
            callback_at=T0.replace(hour=19),
        )
    lead.refresh_from_db()
    assert lead.due_at == (T0 + dt.timedelta(days=1)).replace(hour=9)


def test_a_callback_without_a_time_is_refused(all_day_campaign: Campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        with pytest.raises(ValueError, match="callback_at"):
            record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="callback")
    lead.refresh_from_db()
    assert lead.status == QueueStatus.HELD
    assert lead.attempt_count == 0


@pytest.mark.parametrize(
    ("disposition", "reason"),
    [
        ("converted", CloseReason.CONVERTED),
        ("not_interested", CloseReason.NOT_INTERESTED),
        ("wrong_number", CloseReason.WRONG_NUMBER),
        ("do_not_call", CloseReason.DO_NOT_CALL),
    ],
)
def test_final_dispositions_close_the_lead_with_their_reason(
    disposition: str, reason: str, all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
    with time_machine.travel(T0 + dt.timedelta(minutes=3), tick=False):
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition=disposition)
        lead.refresh_from_db()
        assert lead.status == QueueStatus.CLOSED
        assert lead.closed_reason == reason
        assert lead.closed_at == T0 + dt.timedelta(minutes=3)
        assert lead.holder_id is None
        assert lead.attempt_count == 1
        assert LeadEvent.objects.filter(lead=lead, kind=EventKind.CLOSED).count() == 1
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is None
        with pytest.raises(LeadStateConflict, match="closed"):
            record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")


def test_the_first_attempt_time_is_the_first_claim_and_is_set_once(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
    first_claim = T0 + dt.timedelta(minutes=4)
    with time_machine.travel(first_claim, tick=False):
        claim(contractor, all_day_campaign)
    with time_machine.travel(first_claim + dt.timedelta(minutes=2), tick=False):
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
    lead.refresh_from_db()
    assert lead.first_attempt_at == first_claim
    with time_machine.travel(lead.due_at + dt.timedelta(minutes=1), tick=False):
        claim(contractor, all_day_campaign)
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="converted")
    lead.refresh_from_db()
    assert lead.first_attempt_at == first_claim
    assert lead.last_attempt_at == lead.due_at + dt.timedelta(minutes=1)


@pytest.mark.parametrize("idempotency_key", ["attempt-1", ""])
@pytest.mark.parametrize("disposition", ["no_answer", "converted"])
def test_the_same_outcome_reported_twice_has_no_extra_effect(
    idempotency_key: str, disposition: str, all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        first = record_outcome(
            lead_id=lead.pk,
            contractor_id=contractor.pk,
            disposition=disposition,
            idempotency_key=idempotency_key,
        )
    lead.refresh_from_db()
    before = {f.name: getattr(lead, f.name) for f in Lead._meta.concrete_fields}
    events = LeadEvent.objects.filter(lead=lead).count()
    with time_machine.travel(T0 + dt.timedelta(seconds=30), tick=False):
        second = record_outcome(
            lead_id=lead.pk,
            contractor_id=contractor.pk,
            disposition=disposition,
            idempotency_key=idempotency_key,
        )
    lead.refresh_from_db()
    assert not first.repeated
    assert second.repeated
    assert {f.name: getattr(lead, f.name) for f in Lead._meta.concrete_fields} == before
    assert LeadEvent.objects.filter(lead=lead).count() == events
    assert second.lead.status == before["status"]


def test_an_outcome_from_a_contractor_who_does_not_hold_the_lead_is_a_conflict(
    all_day_campaign: Campaign, make_contractor
) -> None:
    holder, other = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        with pytest.raises(LeadStateConflict, match="does not hold"):
            record_outcome(
                lead_id=lead.pk, contractor_id=holder.pk, disposition="no_answer"
            )  # not claimed yet
        claim(holder, all_day_campaign)
        with pytest.raises(LeadStateConflict, match=f"Contractor {other.pk} does not hold lead {lead.pk}"):
            record_outcome(lead_id=lead.pk, contractor_id=other.pk, disposition="converted")
    lead.refresh_from_db()
    assert lead.status == QueueStatus.HELD
    assert lead.holder_id == holder.pk
    assert lead.attempt_count == 0


def test_a_different_outcome_after_the_first_is_a_conflict_not_a_silent_repeat(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
        with pytest.raises(LeadStateConflict):
            record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="converted")
    lead.refresh_from_db()
    assert lead.status == QueueStatus.WAITING
    assert lead.attempt_count == 1


def test_release_puts_the_lead_back_in_the_queue_at_once(all_day_campaign: Campaign, make_contractor) -> None:
    first, second = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(first, all_day_campaign)
        assert claim_next_lead(contractor_id=second.pk, campaign_ids=[all_day_campaign.pk]) is None
        with pytest.raises(LeadStateConflict):
            release_lead(lead_id=lead.pk, contractor_id=second.pk)
        released = release_lead(lead_id=lead.pk, contractor_id=first.pk)
        assert released.status == QueueStatus.READY
        assert released.holder_id is None
        assert claim(second, all_day_campaign).pk == lead.pk
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.RELEASED, contractor=first).count() == 1


def test_extend_pushes_the_lease_and_keeps_the_lead_held_past_the_old_lease(
    all_day_campaign: Campaign, make_contractor
) -> None:
    set_policy(all_day_campaign.customer, lease_seconds=300)
    holder, other = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(holder, all_day_campaign)
    lead.refresh_from_db()
    assert lead.lease_expires_at == T0 + dt.timedelta(seconds=300)
    later = T0 + dt.timedelta(seconds=240)
    with time_machine.travel(later, tick=False):
        extended = extend_lease(lead_id=lead.pk, contractor_id=holder.pk)
        with pytest.raises(LeadStateConflict):
            extend_lease(lead_id=lead.pk, contractor_id=other.pk)
    assert extended.lease_expires_at == later + dt.timedelta(seconds=300)
    with time_machine.travel(T0 + dt.timedelta(seconds=400), tick=False):
        assert claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk]) is None
    with time_machine.travel(later + dt.timedelta(seconds=300), tick=False):
        assert claim(other, all_day_campaign).pk == lead.pk


def test_a_lease_that_ran_out_cannot_be_extended_even_before_the_lead_is_returned(
    all_day_campaign: Campaign, make_contractor
) -> None:
    # No claim and no beat run has returned the lead yet: whether it can be extended must not
    # depend on that timing.
    set_policy(all_day_campaign.customer, lease_seconds=300)
    holder = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(holder, all_day_campaign)
    with (
        time_machine.travel(T0 + dt.timedelta(seconds=300), tick=False),
        pytest.raises(LeadStateConflict, match=r"The lease of lead \d+ ran out at .*; ask for the next lead"),
    ):
        extend_lease(lead_id=lead.pk, contractor_id=holder.pk)
    lead.refresh_from_db()
    assert lead.lease_expires_at == T0 + dt.timedelta(seconds=300)
    assert not LeadEvent.objects.filter(lead=lead, kind=EventKind.LEASE_EXTENDED).exists()


def test_a_withdrawn_lead_is_closed_and_never_handed_out_again(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        waiting = add_lead(all_day_campaign, rescheduled_at=T0 + HOUR)
        held = add_lead(all_day_campaign)
        claim(contractor, all_day_campaign)
        ready = add_lead(all_day_campaign)
        for lead in (waiting, held, ready):
            withdrawn = withdraw_lead(lead_id=lead.pk)
            assert withdrawn.status == QueueStatus.CLOSED
            assert withdrawn.closed_reason == CloseReason.WITHDRAWN
        assert withdraw_lead(lead_id=ready.pk).status == QueueStatus.CLOSED  # idempotent
        with pytest.raises(LeadStateConflict, match="closed"):
            record_outcome(lead_id=held.pk, contractor_id=contractor.pk, disposition="converted")
    with time_machine.travel(T0 + dt.timedelta(days=2), tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is None
    assert LeadEvent.objects.filter(kind=EventKind.WITHDRAWN).count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("idempotency_key", ["attempt-1", ""])
def test_the_same_outcome_sent_from_many_connections_at_once_is_recorded_once(
    idempotency_key: str, all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = add_lead(all_day_campaign)
    claim(contractor, all_day_campaign)
    results: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def send() -> None:
        try:
            start.wait()
            outcome = record_outcome(
                lead_id=lead.pk,
                contractor_id=contractor.pk,
                disposition="no_answer",
                idempotency_key=idempotency_key,
            )
            results.append(outcome.repeated)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(results) == [False] + [True] * 5
    lead.refresh_from_db()
    assert lead.attempt_count == 1
    assert lead.reschedule_count == 1
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.ATTEMPT).count() == 1
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.RESCHEDULED).count() == 1


def test_an_outcome_whose_lead_changed_after_it_was_read_reads_it_again(
    all_day_campaign: Campaign, make_contractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write is conditional on the lead still being held under the same claim: here the
    lease ran out and another contractor took the lead between the outcome's read and its
    write, so the outcome is refused instead of overwriting the new holder's claim."""
    holder, other = make_contractor(all_day_campaign), make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(all_day_campaign)
        claim(holder, all_day_campaign)
    read = services._read_for_outcome
    interfered: list[bool] = []

    def read_then_lose_the_lead(lead_id: int, key: str):  # type: ignore[no-untyped-def]
        result = read(lead_id, key)
        if not interfered:
            interfered.append(True)
            with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
                assert claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk])
        return result

    monkeypatch.setattr(services, "_read_for_outcome", read_then_lose_the_lead)
    with (
        time_machine.travel(T0 + dt.timedelta(hours=1), tick=False),
        pytest.raises(LeadStateConflict, match="does not hold"),
    ):
        record_outcome(lead_id=lead.pk, contractor_id=holder.pk, disposition="converted")
    lead.refresh_from_db()
    assert lead.status == QueueStatus.HELD
    assert lead.holder_id == other.pk
    assert lead.attempt_count == 0
    assert not LeadEvent.objects.filter(lead=lead, kind=EventKind.ATTEMPT).exists()


def _push(campaign: Campaign, external_id: str, **fields: object) -> None:
    """The customer's system sends the lead record (created, or updated by external id)."""
    item = {
        "customer_id": campaign.customer_id,
        "campaign_id": campaign.pk,
        "external_id": external_id,
        "lead_type": "live",
        "created_at": (T0 - HOUR).isoformat(),
        **fields,
    }
    [result] = ingest_lead_batch([item], allowed_customer_id=None)
    assert result.status in {"created", "updated"}, result.errors


def test_the_customers_re_push_of_a_called_lead_keeps_the_engines_callback(
    all_day_campaign: Campaign, make_contractor
) -> None:
    # The nightly sync sends the record as first sent, rescheduled_at included: the engine's
    # callback was undone, and the lead was called again two hours after asking for tomorrow.
    contractor = make_contractor(all_day_campaign)
    first_sent = {"rescheduled_at": (T0 - 30 * MINUTE).isoformat()}
    tomorrow = T0 + 29 * HOUR
    with time_machine.travel(T0, tick=False):
        _push(all_day_campaign, "CRM-1", **first_sent)
        lead = claim(contractor, all_day_campaign)
        record_outcome(
            lead_id=lead.pk, contractor_id=contractor.pk, disposition="callback", callback_at=tomorrow
        )
    with time_machine.travel(T0 + 2 * HOUR, tick=False):
        _push(all_day_campaign, "CRM-1", **first_sent)
        _push(all_day_campaign, "CRM-1", stage="Demo booked", **first_sent)  # and with a change

    lead.refresh_from_db()
    assert (lead.status, lead.due_at, lead.rescheduled_at) == (QueueStatus.WAITING, tomorrow, tomorrow)
    assert lead.stage == "Demo booked"
    with time_machine.travel(T0 + 2 * HOUR, tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk]) is None


def test_a_no_answer_reschedule_stands_against_a_re_push_and_a_later_time_pushed_moves_it(
    all_day_campaign: Campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    with time_machine.travel(T0, tick=False):
        _push(all_day_campaign, "CRM-2")
        lead = claim(contractor, all_day_campaign)
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")
    lead.refresh_from_db()
    rescheduled = lead.due_at
    assert T0 + 22 * HOUR <= rescheduled <= T0 + 24 * HOUR
    with time_machine.travel(T0 + HOUR, tick=False):
        _push(all_day_campaign, "CRM-2", rescheduled_at=(T0 + 2 * HOUR).isoformat())  # earlier: kept
        lead.refresh_from_db()
        assert (lead.status, lead.due_at) == (QueueStatus.WAITING, rescheduled)
        later = rescheduled + 3 * HOUR
        _push(all_day_campaign, "CRM-2", rescheduled_at=later.isoformat())
    lead.refresh_from_db()
    assert (lead.status, lead.due_at, lead.rescheduled_at) == (QueueStatus.WAITING, later, later)


def test_a_never_called_lead_takes_an_earlier_rescheduled_at_the_customer_pushes(
    all_day_campaign: Campaign,
) -> None:
    with time_machine.travel(T0, tick=False):
        _push(all_day_campaign, "CRM-3", rescheduled_at=(T0 + 5 * HOUR).isoformat())
        _push(all_day_campaign, "CRM-3", rescheduled_at=(T0 + HOUR).isoformat())
    lead = Lead.objects.get(external_id="CRM-3")
    assert (lead.status, lead.due_at) == (QueueStatus.WAITING, T0 + HOUR)


def test_the_customers_re_push_keeps_a_reschedule_the_contract_app_patched_on_a_never_called_lead(
    all_day_campaign: Campaign,
) -> None:
    # The Contract app moved the lead to tomorrow before anyone called it; the nightly sync
    # then sent the record as first sent, and the lead was due again at the customer's time.
    first_sent = {"rescheduled_at": (T0 + HOUR).isoformat()}
    tomorrow = T0 + 26 * HOUR
    with time_machine.travel(T0, tick=False):
        _push(all_day_campaign, "CRM-4", **first_sent)
        lead = Lead.objects.get(external_id="CRM-4")
        update_lead(lead_id=lead.pk, changes={"rescheduled_at": tomorrow})
        _push(all_day_campaign, "CRM-4", stage="Demo booked", **first_sent)
    lead.refresh_from_db()
    assert (lead.status, lead.due_at, lead.rescheduled_at) == (QueueStatus.WAITING, tomorrow, tomorrow)
    assert lead.stage == "Demo booked"
    with time_machine.travel(T0 + HOUR, tick=False):
        later = tomorrow + HOUR  # a later time pushed still moves it, as for a called lead
        _push(all_day_campaign, "CRM-4", rescheduled_at=later.isoformat())
    lead.refresh_from_db()
    assert (lead.status, lead.due_at, lead.rescheduled_at) == (QueueStatus.WAITING, later, later)
