"""Review of the ingest path: re-pushes racing the engine, leads re-pushed while held."""

import datetime as dt
import threading
import time

import psycopg
import pytest
import time_machine
from django.db import connection

from leads import services
from leads.importers import LeadMapping
from leads.models import ALL_WEEKDAYS, EventKind, Lead, LeadEvent, LeadType, QueueStatus
from prioritization import services as engine
from prioritization.services import (
    claim_next_lead,
    record_outcome,
    release_lead,
    rescore_leads,
    wake_due_leads,
)
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, lead_body

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def all_day_campaign(db):
    return CampaignFactory(
        customer=CustomerFactory(pricing_plan="pro"),
        calling_days=ALL_WEEKDAYS,
        calling_hours_start=dt.time(0, 0),
        calling_hours_end=dt.time(23, 59),
    )


def push(campaign, **fields) -> Lead:
    (result,) = services.ingest_lead_batch([lead_body(campaign, **fields)], allowed_customer_id=None)
    assert result.status != "rejected", result.errors
    return Lead.objects.get(pk=result.lead_id)


def keys_rescoring_would_rewrite() -> int:
    """How many stored keys a rescoring pass finds out of date (0: every write keyed its lead)."""
    return rescore_leads(batch_size=100).rewritten


# --- A re-push racing an outcome -----------------------------------------------------------


def _wait_until_blocked(params: dict[str, object]) -> None:
    with psycopg.connect(**params, autocommit=True) as watcher:  # type: ignore[arg-type]
        for _ in range(500):
            (blocked,) = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if blocked:
                return
            time.sleep(0.01)


def _import_file(campaign, tmp_path, **fields) -> Lead:
    path = tmp_path / "leads.csv"
    item = lead_body(campaign, **fields)
    path.write_text(",".join(item) + "\n" + ",".join(str(value) for value in item.values()) + "\n")
    summary = services.import_leads(path, mapping=LeadMapping())
    assert (summary.rejected, summary.updated) == (0, 1), summary.errors
    return Lead.objects.get(customer_id=campaign.customer_id, external_id=item["external_id"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("way", ["api", "file"])
def test_a_re_push_racing_the_no_answer_that_made_its_lead_stale_keeps_it_stale(way, tmp_path):
    # The engine makes a live lead stale after its last reschedule (lead_type and a
    # became_stale event, one statement). That write commits while the customer's re-push,
    # still saying live, is between its insert and its update: the update must see the event
    # along with the new lead_type, and keep the lead stale.
    campaign = CampaignFactory(customer=CustomerFactory())
    lead = push(campaign)
    params = connection.get_connection_params()
    outcome = psycopg.connect(**params)

    def commit_when_blocked() -> None:
        _wait_until_blocked(params)
        outcome.commit()

    inserted: list[str] = []

    def no_answer_commits_meanwhile(execute, sql, sql_params, many, context):  # type: ignore[no-untyped-def]
        # Right after the insert: the next statement is the first to touch the existing lead.
        if inserted and not outcome.closed:
            outcome.execute("UPDATE leads_lead SET lead_type = 'stale' WHERE id = %s", [lead.pk])
            outcome.execute(
                "INSERT INTO leads_leadevent (lead_id, kind, at, disposition, idempotency_key, detail) "
                "VALUES (%s, 'became_stale', now(), '', '', '{}')",
                [lead.pk],
            )
            committer = threading.Thread(target=commit_when_blocked)
            committer.start()
            try:
                return execute(sql, sql_params, many, context)  # waits for the outcome's row lock
            finally:
                committer.join()
                outcome.close()
        if sql in (services._INSERT_SQL, services._INSERT_COUNT_SQL):
            inserted.append(sql)
        return execute(sql, sql_params, many, context)

    with connection.execute_wrapper(no_answer_commits_meanwhile):
        pushed = (
            push(campaign, city="Delhi") if way == "api" else _import_file(campaign, tmp_path, city="Delhi")
        )

    assert outcome.closed
    assert (pushed.lead_type, pushed.city) == (LeadType.STALE, "Delhi")
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.BECAME_STALE).exists()


# --- A lead re-pushed while held ------------------------------------------------------------


@pytest.fixture
def frozen_now():
    with time_machine.travel(NOW, tick=False):
        yield NOW


def test_a_held_lead_re_pushed_with_a_reschedule_is_not_handed_out_before_it_once_released(
    all_day_campaign, frozen_now
):
    # The customer reschedules the lead while a contractor is on it: the call goes on (the
    # engine's state is never touched), but given back without an outcome the lead waits
    # for the customer's rescheduled_at (a lead is not eligible before it).
    lead = push(all_day_campaign)
    contractor = ContractorFactory(campaigns=[all_day_campaign])
    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk
    later = NOW + dt.timedelta(hours=5)

    held = push(all_day_campaign, rescheduled_at=later.isoformat())
    assert (held.status, held.holder_id, held.rescheduled_at) == (QueueStatus.HELD, contractor.pk, later)
    released = release_lead(lead_id=lead.pk, contractor_id=contractor.pk)

    assert (released.status, released.due_at) == (QueueStatus.WAITING, later)
    other = ContractorFactory(campaigns=[all_day_campaign])
    assert claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk]) is None
    assert keys_rescoring_would_rewrite() == 0
    with time_machine.travel(later, tick=False):
        again = claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk])
    assert again is not None
    assert again.lead.pk == lead.pk


def test_a_reschedule_withdrawn_by_patch_while_held_makes_the_lead_due_from_its_creation(
    all_day_campaign, frozen_now
):
    lead = push(all_day_campaign)
    contractor = ContractorFactory(campaigns=[all_day_campaign])
    claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
    push(all_day_campaign, rescheduled_at=(NOW + dt.timedelta(hours=5)).isoformat())

    patched = services.update_lead(lead_id=lead.pk, changes={"rescheduled_at": None})
    assert (patched.status, patched.holder_id) == (QueueStatus.HELD, contractor.pk)  # the call goes on
    released = release_lead(lead_id=lead.pk, contractor_id=contractor.pk)

    assert (released.status, released.due_at) == (QueueStatus.READY, lead.created_at)
    assert keys_rescoring_would_rewrite() == 0


def test_a_held_lead_re_pushed_keeps_its_call_and_its_outcome_still_applies(all_day_campaign, frozen_now):
    lead = push(all_day_campaign)
    contractor = ContractorFactory(campaigns=[all_day_campaign])
    claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])

    push(all_day_campaign, city="Pune", rescheduled_at=(NOW + dt.timedelta(hours=5)).isoformat())
    result = record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")

    assert result.lead.status == QueueStatus.WAITING
    assert result.lead.due_at >= NOW + dt.timedelta(hours=22)  # the engine's reschedule
    assert (result.lead.attempt_count, result.lead.reschedule_count, result.lead.city) == (1, 1, "Pune")


@pytest.mark.parametrize("returned_by", ["claim", "beat"])
def test_a_lease_running_out_before_the_customers_reschedule_puts_the_lead_back_to_wait_for_it(
    all_day_campaign, returned_by
):
    # A lead re-pushed with a rescheduled_at while held is due then; its lease running out
    # earlier must not make it callable before that time (a lead is not eligible before its
    # rescheduled_at), whether a claim or the beat task notices the lapse.
    with time_machine.travel(NOW, tick=False):
        lead = push(all_day_campaign)
        contractor = ContractorFactory(campaigns=[all_day_campaign])
        held = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])
        assert held is not None
        later = NOW + dt.timedelta(hours=5)
        push(all_day_campaign, rescheduled_at=later.isoformat())
    other = ContractorFactory(campaigns=[all_day_campaign])
    after_lease = held.lead.lease_expires_at + dt.timedelta(minutes=1)
    assert after_lease < later

    with time_machine.travel(after_lease, tick=False):
        if returned_by == "beat":
            assert wake_due_leads() == 1
        assert claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk]) is None
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id, lead.due_at) == (QueueStatus.WAITING, None, later)
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.LEASE_EXPIRED).count() == 1
    with time_machine.travel(later, tick=False):
        again = claim_next_lead(contractor_id=other.pk, campaign_ids=[all_day_campaign.pk])
    assert again is not None
    assert again.lead.pk == lead.pk


def test_a_lead_moved_to_another_campaign_between_a_claims_read_and_its_take_is_not_handed_out(
    all_day_campaign, frozen_now, monkeypatch
):
    # The contractor is qualified for the campaign asked for only: a re-push moving the chosen
    # lead to another campaign of the customer in between must not hand it over anyway.
    elsewhere = CampaignFactory(
        customer=all_day_campaign.customer,
        calling_hours_start=dt.time(0, 0),
        calling_hours_end=dt.time(23, 59, 59, 999999),
        calling_days=ALL_WEEKDAYS,
    )
    lead = push(all_day_campaign)
    contractor = ContractorFactory(campaigns=[all_day_campaign])
    take = engine._take

    def moved_then_taken(*args, **kwargs):
        push(elsewhere, external_id=lead.external_id)
        return take(*args, **kwargs)

    monkeypatch.setattr(engine, "_take", moved_then_taken)
    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk])

    assert claim is None
    lead.refresh_from_db()
    assert (lead.campaign_id, lead.status, lead.holder_id) == (elsewhere.pk, QueueStatus.READY, None)
