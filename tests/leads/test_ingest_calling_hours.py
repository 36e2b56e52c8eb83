"""A ``rescheduled_at`` that a customer sends outside its campaign's calling hours is moved to
the next opening on arrival, as the engine's reschedules and the Contract app's PATCH are."""

import datetime as dt

import pytest
import time_machine
from django.db import connection

from leads.importers import LeadMapping
from leads.models import Campaign, Lead, QueueStatus
from leads.services import import_leads, ingest_lead_batch, update_lead
from prioritization.services import claim_next_lead
from tests.factories import CampaignFactory, ContractorFactory

# Tuesday 2026-11-24, 10:00 UTC: 15:30 in Kolkata, inside the campaign's 14:00 to 19:00.
T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
NIGHT = dt.datetime(2026, 11, 24, 21, 30, tzinfo=dt.UTC)  # Wednesday 03:00 in Kolkata
WEDNESDAY_OPENING = dt.datetime(2026, 11, 25, 8, 30, tzinfo=dt.UTC)  # 14:00 there
SATURDAY = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)  # 14:30 there, not a calling day
MONDAY_OPENING = dt.datetime(2026, 11, 30, 8, 30, tzinfo=dt.UTC)
INSIDE = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)  # Wednesday 17:30 there


@pytest.fixture
def afternoons(db: None) -> Campaign:
    return CampaignFactory(
        time_zone="Asia/Kolkata",
        calling_hours_start=dt.time(14),
        calling_hours_end=dt.time(19),
        calling_days=[0, 1, 2, 3, 4],
    )


def _push(campaign: Campaign, external_id: str, rescheduled_at: dt.datetime | None) -> Lead:
    item: dict[str, object] = {
        "customer_id": campaign.customer_id,
        "campaign_id": campaign.pk,
        "external_id": external_id,
        "lead_type": "live",
    }
    if rescheduled_at is not None:
        item["rescheduled_at"] = rescheduled_at.isoformat()
    [result] = ingest_lead_batch([item], allowed_customer_id=None, now=T0)
    assert result.status in {"created", "updated"}, result.errors
    return Lead.objects.get(pk=result.lead_id)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (NIGHT, WEDNESDAY_OPENING),
        (SATURDAY, MONDAY_OPENING),
        (INSIDE, INSIDE),
        (NIGHT.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))), WEDNESDAY_OPENING),
    ],
    ids=["night", "weekend", "inside", "with its offset"],
)
def test_a_pushed_rescheduled_at_outside_calling_hours_waits_for_the_next_opening(
    afternoons: Campaign, sent: dt.datetime, stored: dt.datetime
) -> None:
    with time_machine.travel(T0, tick=False):
        lead = _push(afternoons, "CRM-1", sent)
    assert (lead.rescheduled_at, lead.due_at, lead.status) == (stored, stored, QueueStatus.WAITING)


def test_a_pushed_lead_is_stored_as_the_contract_apps_patch_of_the_same_moment_stores_it(
    afternoons: Campaign,
) -> None:
    with time_machine.travel(T0, tick=False):
        patched = _push(afternoons, "CRM-patched", None)
        patched = update_lead(lead_id=patched.pk, changes={"rescheduled_at": NIGHT}, now=T0)
        pushed = _push(afternoons, "CRM-pushed", NIGHT)
    assert (pushed.rescheduled_at, pushed.due_at, pushed.priority_key) == (
        patched.rescheduled_at,
        patched.due_at,
        patched.priority_key,
    )


def test_a_re_push_moves_an_existing_leads_rescheduled_at_and_sending_it_again_changes_nothing(
    afternoons: Campaign,
) -> None:
    with time_machine.travel(T0, tick=False):
        lead = _push(afternoons, "CRM-2", None)
        assert lead.status == QueueStatus.READY
        lead = _push(afternoons, "CRM-2", NIGHT)
        assert (lead.rescheduled_at, lead.due_at, lead.status) == (
            WEDNESDAY_OPENING,
            WEDNESDAY_OPENING,
            QueueStatus.WAITING,
        )
        updated_at = lead.updated_at
    with time_machine.travel(T0 + dt.timedelta(minutes=5), tick=False):
        lead = _push(afternoons, "CRM-2", NIGHT)
    assert lead.updated_at == updated_at  # the moved time is what is stored: nothing changed


def test_the_lead_is_handed_out_at_the_opening_and_not_before(afternoons: Campaign) -> None:
    contractor = ContractorFactory(campaigns=[afternoons])
    with time_machine.travel(T0, tick=False):
        lead = _push(afternoons, "CRM-3", NIGHT)
    with time_machine.travel(WEDNESDAY_OPENING - dt.timedelta(microseconds=1), tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[afternoons.pk]) is None
    with time_machine.travel(WEDNESDAY_OPENING, tick=False):
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[afternoons.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk


def test_a_file_import_moves_rescheduled_at_into_calling_hours_too(afternoons: Campaign, tmp_path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "external_id,lead_type,rescheduled_at\n"
        f"f-1,live,{NIGHT.isoformat()}\n"
        f"f-2,live,{INSIDE.isoformat()}\n"
        "f-3,live,\n"
    )
    with time_machine.travel(T0, tick=False):
        summary = import_leads(
            path, mapping=LeadMapping(), customer_id=afternoons.customer_id, campaign_id=afternoons.pk
        )
    assert (summary.created, summary.rejected) == (3, 0)
    stored = dict(Lead.objects.values_list("external_id", "rescheduled_at"))
    assert stored == {"f-1": WEDNESDAY_OPENING, "f-2": INSIDE, "f-3": None}


@pytest.mark.parametrize("held", [False, True], ids=["waiting", "held"])
def test_a_re_push_to_another_campaign_moves_the_kept_rescheduled_at_into_its_calling_hours(
    afternoons: Campaign, held: bool
) -> None:
    # The record is sent again with another campaign of the customer and no rescheduled_at:
    # the lead keeps its own, set under the old campaign's hours (here 03:00 in Kolkata).
    around_the_clock = CampaignFactory(
        customer=afternoons.customer,
        calling_hours_start=dt.time(0),
        calling_hours_end=dt.time(23, 59, 59, 999999),
        calling_days=list(range(7)),
    )
    with time_machine.travel(T0, tick=False):
        if held:  # a contractor holds it when the customer's system reschedules it
            _push(around_the_clock, "CRM-5", None)
            contractor = ContractorFactory(campaigns=[around_the_clock])
            assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[around_the_clock.pk])
        lead = _push(around_the_clock, "CRM-5", NIGHT)
        assert lead.due_at == NIGHT
        lead = _push(afternoons, "CRM-5", None)
    assert lead.campaign_id == afternoons.pk
    assert (lead.rescheduled_at, lead.due_at) == (WEDNESDAY_OPENING, WEDNESDAY_OPENING)
    assert lead.status == (QueueStatus.HELD if held else QueueStatus.WAITING)


def test_a_re_push_to_another_campaign_open_at_the_kept_rescheduled_at_leaves_it(
    afternoons: Campaign,
) -> None:
    other = CampaignFactory(customer=afternoons.customer, time_zone="UTC", calling_days=[0, 1, 2, 3, 4])
    with time_machine.travel(T0, tick=False):
        _push(afternoons, "CRM-6", INSIDE)
        lead = _push(other, "CRM-6", None)
    assert lead.campaign_id == other.pk
    assert (lead.rescheduled_at, lead.due_at, lead.status) == (INSIDE, INSIDE, QueueStatus.WAITING)


def _history_lookups() -> int:
    """Scans of lead events (their histories) in this transaction so far, by index or not."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_xact_user_tables "
            "WHERE relname = 'leads_leadevent'"
        )
        return int(cursor.fetchone()[0])


def test_a_nightly_re_push_reads_no_history_unless_it_would_move_a_reschedule_back(
    afternoons: Campaign,
) -> None:
    # AND goes on past a NULL: a comparison with no rescheduled_at sent or stored once sent
    # every re-pushed lead into its history, three times a row.
    with time_machine.travel(T0, tick=False):
        body = {"customer_id": afternoons.customer_id, "campaign_id": afternoons.pk, "lead_type": "live"}
        items = [{**body, "external_id": f"N-{i}"} for i in range(30)]
        ingest_lead_batch(items, allowed_customer_id=None, now=T0)
        before = _history_lookups()
        results = ingest_lead_batch(
            [{**item, "stage": "Demo booked"} for item in items], allowed_customer_id=None, now=T0
        )
        assert {result.status for result in results} == {"updated"}
        assert _history_lookups() == before
        _push(afternoons, "N-0", WEDNESDAY_OPENING + dt.timedelta(hours=1))
        before = _history_lookups()
        _push(afternoons, "N-0", WEDNESDAY_OPENING)  # earlier: the history says whether it may
        assert _history_lookups() > before
    assert Lead.objects.get(external_id="N-0").rescheduled_at == WEDNESDAY_OPENING


def test_a_reschedule_the_contract_app_withdrew_leaves_the_customers_push_free(afternoons: Campaign) -> None:
    # Withdrawing sets no schedule to keep: the customer's later pushes apply as they come,
    # earlier ones too (the rule for a never-called lead the Contract app did not reschedule).
    first_sent = WEDNESDAY_OPENING + dt.timedelta(hours=3)
    with time_machine.travel(T0, tick=False):
        lead = _push(afternoons, "CRM-7", first_sent)
        lead = update_lead(lead_id=lead.pk, changes={"rescheduled_at": None}, now=T0)
        assert (lead.rescheduled_at, lead.status) == (None, QueueStatus.READY)
        lead = _push(afternoons, "CRM-7", first_sent)
        assert lead.rescheduled_at == first_sent
        lead = _push(afternoons, "CRM-7", WEDNESDAY_OPENING)
    assert (lead.rescheduled_at, lead.due_at) == (WEDNESDAY_OPENING, WEDNESDAY_OPENING)


def test_a_past_lead_imported_with_its_outcome_keeps_its_rescheduled_at_as_history(
    afternoons: Campaign, tmp_path
) -> None:
    path = tmp_path / "history.csv"
    path.write_text(f"external_id,lead_type,rescheduled_at,converted\nh-1,live,{NIGHT.isoformat()},1\n")
    with time_machine.travel(T0, tick=False):
        summary = import_leads(
            path,
            mapping=LeadMapping.from_json({"columns": {"converted": "converted"}}),
            customer_id=afternoons.customer_id,
            campaign_id=afternoons.pk,
        )
    assert (summary.created, summary.rejected) == (1, 0)
    lead = Lead.objects.get(external_id="h-1")
    assert (lead.status, lead.rescheduled_at) == (QueueStatus.CLOSED, NIGHT)
