"""SLA arithmetic, TAT percentiles, queue depth, leads at risk and active contractors."""

import datetime as dt

import pytest

from leads.models import Lead, LeadEvent, QueueStatus
from prioritization.services import record_outcome, withdraw_lead
from prioritization.sla import (
    TAT_BUCKET_EDGES_SECONDS,
    TAT_BUCKETS,
    SlaCounts,
    SlaReport,
    percentile_seconds,
    sla_report,
)
from tests.factories import CampaignFactory, LeadFactory
from tests.prioritization.conftest import T0, set_policy
from tests.prioritization.sla_world import MINUTE, call_at, claim_at, live_lead

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)
MICROSECOND = dt.timedelta(microseconds=1)


def report(now: dt.datetime, **kwargs: object) -> SlaReport:
    kwargs.setdefault("start", now.date())
    kwargs.setdefault("end", now.date())
    return sla_report(now=now, **kwargs)  # type: ignore[arg-type]


def counts(now: dt.datetime, **kwargs: object) -> SlaCounts:
    return report(now, **kwargs).overall.sla_range


# --- In SLA, missed, pending -----------------------------------------------------------------


def test_a_first_call_exactly_at_the_end_of_the_window_is_in_sla(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    call_at(contractor, lead, T0 + 30 * MINUTE)

    assert counts(T0 + 2 * dt.timedelta(hours=1)) == SlaCounts(live_leads=1, in_sla=1)


def test_a_first_call_a_microsecond_after_the_window_is_missed(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    call_at(contractor, lead, T0 + 30 * MINUTE + MICROSECOND)

    assert counts(T0 + dt.timedelta(hours=2)) == SlaCounts(live_leads=1, missed=1)


def test_a_lead_not_called_is_pending_inside_its_window_and_missed_after_it(all_day_campaign) -> None:
    live_lead(all_day_campaign, T0)

    assert counts(T0 + 30 * MINUTE) == SlaCounts(live_leads=1, pending=1)
    assert counts(T0 + 30 * MINUTE + MICROSECOND) == SlaCounts(live_leads=1, missed=1)


def test_pending_leads_are_left_out_of_the_attainment(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    called = live_lead(all_day_campaign, T0)
    call_at(contractor, called, T0 + 5 * MINUTE)
    live_lead(all_day_campaign, T0 + 20 * MINUTE)

    sla = counts(T0 + 25 * MINUTE)

    assert sla == SlaCounts(live_leads=2, in_sla=1, pending=1)
    assert sla.attainment == 1.0


def test_attainment_is_unknown_while_no_lead_is_decided() -> None:
    assert SlaCounts(live_leads=3, pending=3).attainment is None
    assert SlaCounts(live_leads=4, in_sla=3, missed=1).attainment == 0.75


def test_a_lead_being_called_counts_from_the_moment_it_was_claimed(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    claim_at(contractor, lead, T0 + 10 * MINUTE)

    now = T0 + 35 * MINUTE  # past the deadline, outcome not reported yet
    assert counts(now) == SlaCounts(live_leads=1, in_sla=1)
    assert report(now).overall.tat.called == 1


def test_a_rescheduled_lead_counts_once_by_its_first_attempt(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    lead = call_at(contractor, lead, T0 + 12 * MINUTE, disposition="no_answer")
    assert lead.status == QueueStatus.WAITING
    call_at(contractor, lead, lead.due_at + 3 * dt.timedelta(hours=1))  # the next day, long after the window

    figures = report(T0 + 2 * DAY, start=T0.date(), end=(T0 + 2 * DAY).date()).overall
    assert figures.sla_range == SlaCounts(live_leads=1, in_sla=1)
    assert figures.tat.called == 1
    assert 12 * 60 <= figures.tat.p50_seconds <= 13 * 60


def test_a_lead_sent_as_stale_never_counts(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    stale = live_lead(all_day_campaign, T0, lead_type="stale")
    call_at(contractor, stale, T0 + 2 * dt.timedelta(hours=1))
    live_lead(all_day_campaign, T0, lead_type="stale")  # never called

    sla = counts(T0 + 3 * dt.timedelta(hours=1))
    assert sla == SlaCounts(live_leads=0, stale_leads=2)
    assert sla.attainment is None


def test_a_live_lead_that_became_stale_after_its_calls_still_counts_by_its_first_call(
    all_day_campaign, make_contractor
) -> None:
    set_policy(all_day_campaign.customer, reschedule_limit=1)
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    lead = call_at(contractor, lead, T0 + 45 * MINUTE, disposition="no_answer")
    lead = call_at(contractor, lead, lead.due_at, disposition="no_answer")
    assert lead.lead_type == "stale"
    assert LeadEvent.objects.filter(lead=lead, kind="became_stale").exists()

    assert counts(T0 + 3 * DAY, start=T0.date(), end=(T0 + 3 * DAY).date()) == SlaCounts(
        live_leads=1, missed=1
    )


def test_a_lead_withdrawn_before_its_deadline_without_a_call_does_not_count(all_day_campaign) -> None:
    early = live_lead(all_day_campaign, T0)
    withdraw_lead(lead_id=early.pk, now=T0 + 10 * MINUTE)
    late = live_lead(all_day_campaign, T0)
    withdraw_lead(lead_id=late.pk, now=T0 + 40 * MINUTE)

    assert counts(T0 + dt.timedelta(hours=1)) == SlaCounts(live_leads=1, missed=1)


def test_the_window_of_the_customers_current_policy_decides(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    call_at(contractor, lead, T0 + 15 * MINUTE)
    now = T0 + dt.timedelta(hours=1)

    set_policy(all_day_campaign.customer, sla_window_minutes=10)
    assert counts(now) == SlaCounts(live_leads=1, missed=1)
    set_policy(all_day_campaign.customer, sla_window_minutes=20)
    assert counts(now) == SlaCounts(live_leads=1, in_sla=1)


def test_figures_come_per_customer_and_campaign_for_the_range_today_and_the_last_7_days(
    make_contractor,
) -> None:
    first = CampaignFactory()
    second = CampaignFactory(customer=first.customer)
    other = CampaignFactory()
    now = T0 + 8 * DAY
    # A lead per campaign and day: in SLA on even days, missed on odd ones; days 0..8.
    for campaign in (first, second, other):
        for day in range(9):
            created = T0 + day * DAY
            first_attempt = created + (5 if day % 2 == 0 else 50) * MINUTE
            LeadFactory(
                campaign=campaign,
                created_at=created,
                first_attempt_at=first_attempt,
                status=QueueStatus.CLOSED,
                closed_reason="not_interested",
                closed_at=first_attempt + MINUTE,
            )

    result = report(now, start=(T0 + DAY).date(), end=(T0 + 2 * DAY).date())

    assert result.overall.sla_range == SlaCounts(live_leads=6, in_sla=3, missed=3)
    assert result.overall.sla_today == SlaCounts(live_leads=3, in_sla=3)
    assert result.overall.sla_last_7_days == SlaCounts(live_leads=21, in_sla=12, missed=9)
    assert [d.day for d in result.overall.daily] == [(T0 + DAY).date(), (T0 + 2 * DAY).date()]
    assert [d.sla.in_sla for d in result.overall.daily] == [0, 3]
    by_customer = {c.customer_id: c for c in result.customers}
    assert by_customer[first.customer_id].figures.sla_range == SlaCounts(live_leads=4, in_sla=2, missed=2)
    assert by_customer[other.customer_id].figures.sla_today == SlaCounts(live_leads=1, in_sla=1)
    assert by_customer[first.customer_id].meets_target is False
    assert {c.campaign_id: c.figures.sla_range.live_leads for c in result.campaigns} == {
        first.pk: 2,
        second.pk: 2,
        other.pk: 2,
    }

    one = report(now, start=(T0 + DAY).date(), end=(T0 + 2 * DAY).date(), campaign_id=second.pk)
    assert [c.campaign_id for c in one.campaigns] == [second.pk]
    assert [c.customer_id for c in one.customers] == [first.customer_id]
    assert one.overall.sla_range == SlaCounts(live_leads=2, in_sla=1, missed=1)


def test_days_are_utc_days_of_created_at(all_day_campaign) -> None:
    midnight = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    live_lead(all_day_campaign, midnight - MICROSECOND)
    live_lead(all_day_campaign, midnight)
    now = midnight + DAY

    daily = report(now, start=midnight.date() - DAY, end=midnight.date()).overall.daily
    assert [(d.day, d.sla.live_leads) for d in daily] == [(midnight.date() - DAY, 1), (midnight.date(), 1)]


# --- TAT ---------------------------------------------------------------------------------------


def histogram(**seconds_counts: int) -> list[int]:
    counts = [0] * TAT_BUCKETS
    for name, count in seconds_counts.items():
        seconds = float(name.removeprefix("s"))
        index = max(i for i, edge in enumerate(TAT_BUCKET_EDGES_SECONDS) if edge <= seconds)
        counts[index] += count
    return counts


@pytest.mark.parametrize(
    ("counts", "fraction", "expected"),
    [
        ([0] * TAT_BUCKETS, 0.5, None),
        (histogram(s90=1), 0.5, 90.0),  # one lead in [60, 120): the middle of its bucket
        (histogram(s90=1), 1.0, 120.0),
        (histogram(s0=50, s600=50), 0.5, 60.0),  # the first half ends with the first bucket
        (histogram(s0=50, s600=50), 0.9, 600.0 + 60 * 0.8),
        (histogram(s0=99, s7200=1), 0.99, 60.0),
        (histogram(s0=98, s7200=2), 0.99, 7200.0 + 3600 * 0.5),
        (histogram(s700000=4), 0.5, 604_800.0),  # the open last bucket: its lower bound
    ],
)
def test_tat_percentiles_interpolate_inside_their_bucket(
    counts: list[int], fraction: float, expected: float | None
) -> None:
    assert percentile_seconds(counts, fraction) == pytest.approx(expected)


def test_tat_buckets_are_a_minute_wide_for_the_first_hour() -> None:
    assert TAT_BUCKET_EDGES_SECONDS[:61] == tuple(60.0 * m for m in range(61))
    assert list(TAT_BUCKET_EDGES_SECONDS) == sorted(set(TAT_BUCKET_EDGES_SECONDS))


def test_tat_is_measured_from_created_at_to_the_first_call(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    for minutes in (2, 4, 6, 8, 40):
        lead = live_lead(all_day_campaign, T0)
        call_at(contractor, lead, T0 + minutes * MINUTE + 30 * dt.timedelta(seconds=1))
    live_lead(all_day_campaign, T0)  # never called: not in the TAT

    tat = report(T0 + dt.timedelta(hours=2)).overall.tat
    assert tat.called == 5
    assert tat.p50_seconds == pytest.approx(6 * 60 + 30)  # 2.5 leads into [6, 7) min: its middle
    assert 40 * 60 <= tat.p90_seconds <= 41 * 60
    assert 40 * 60 <= tat.p99_seconds <= 41 * 60


# --- Queue, at risk, contractors ----------------------------------------------------------------


def test_queue_depth_splits_live_and_stale_due_now_and_later(all_day_campaign, make_contractor) -> None:
    now = T0 + dt.timedelta(hours=1)
    LeadFactory(campaign=all_day_campaign, created_at=T0, status=QueueStatus.READY)
    LeadFactory(campaign=all_day_campaign, created_at=T0, status=QueueStatus.READY)
    # Due a minute ago, not woken yet: due all the same.
    LeadFactory(campaign=all_day_campaign, created_at=T0, due_at=now - MINUTE, status=QueueStatus.WAITING)
    LeadFactory(campaign=all_day_campaign, created_at=T0, due_at=now + DAY, status=QueueStatus.WAITING)
    LeadFactory(campaign=all_day_campaign, created_at=T0, lead_type="stale", status=QueueStatus.READY)
    LeadFactory(
        campaign=all_day_campaign,
        created_at=T0,
        lead_type="stale",
        due_at=now + DAY,
        status=QueueStatus.WAITING,
    )
    LeadFactory(
        campaign=all_day_campaign,
        created_at=T0,
        status=QueueStatus.CLOSED,
        closed_reason="converted",
        closed_at=T0,
    )
    LeadFactory(
        campaign=all_day_campaign,
        created_at=T0,
        status=QueueStatus.HELD,
        holder=make_contractor(all_day_campaign),
        claimed_at=now - MINUTE,
        lease_expires_at=now + 9 * MINUTE,
    )

    queue = report(now).overall.queue

    assert (queue.live_due, queue.live_later, queue.stale_due, queue.stale_later, queue.held) == (
        3,
        1,
        1,
        1,
        1,
    )
    assert queue.total == 7


def test_a_lead_is_at_risk_when_live_never_called_and_its_deadline_is_near(
    all_day_campaign, make_contractor
) -> None:
    set_policy(all_day_campaign.customer, sla_protect_minutes=10)
    now = T0 + 25 * MINUTE
    near = live_lead(all_day_campaign, T0)  # deadline in 5 min
    live_lead(all_day_campaign, T0 + 10 * MINUTE)  # deadline in 15 min: not yet
    live_lead(all_day_campaign, T0 - 10 * MINUTE)  # deadline passed: missed, not at risk
    live_lead(all_day_campaign, T0, lead_type="stale")
    nearest = live_lead(all_day_campaign, T0 - MINUTE)  # deadline in 4 min
    LeadFactory(
        campaign=all_day_campaign,
        created_at=T0,
        sla_deadline=T0 + 30 * MINUTE,
        due_at=now + 2 * MINUTE,  # waiting, but due before its deadline
        status=QueueStatus.WAITING,
    )

    result = report(now)
    assert result.overall.at_risk == 3
    assert [lead.id for lead in result.at_risk_leads][:2] == [nearest.pk, near.pk]
    assert result.at_risk_leads[0].minutes_left(now) == pytest.approx(4)
    assert result.customers[0].at_risk_minutes == 10

    wider = report(now, at_risk_minutes=16)
    assert wider.overall.at_risk == 4
    assert wider.customers[0].at_risk_minutes == 16


def test_a_lead_being_called_is_not_at_risk(all_day_campaign, make_contractor) -> None:
    lead = live_lead(all_day_campaign, T0)
    claim_at(make_contractor(all_day_campaign), lead, T0 + 22 * MINUTE)
    assert report(T0 + 25 * MINUTE).overall.at_risk == 0


def test_contractors_active_are_those_who_claimed_recently_or_hold_a_lead(
    all_day_campaign, make_contractor
) -> None:
    now = T0 + dt.timedelta(hours=2)
    recent, earlier, holder, idle = (make_contractor(all_day_campaign) for _ in range(4))
    call_at(recent, live_lead(all_day_campaign, T0), now - 10 * MINUTE)
    call_at(earlier, live_lead(all_day_campaign, T0), now - 20 * MINUTE)
    claim_at(holder, live_lead(all_day_campaign, T0), now - 40 * MINUTE)

    assert report(now).overall.contractors_active == 2  # recent, holder
    assert report(now, active_minutes=30).overall.contractors_active == 3
    assert idle.pk not in {recent.pk, earlier.pk, holder.pk}


def test_one_contractor_on_two_campaigns_of_a_customer_counts_once_for_it(make_contractor) -> None:
    first = CampaignFactory()
    second = CampaignFactory(customer=first.customer)
    contractor = make_contractor(first, second)
    call_at(contractor, live_lead(first, T0), T0 + MINUTE)
    call_at(contractor, live_lead(second, T0), T0 + 3 * MINUTE)

    result = report(T0 + 5 * MINUTE)
    assert [c.figures.contractors_active for c in result.campaigns] == [1, 1]
    assert result.customers[0].figures.contractors_active == 1
    assert result.overall.contractors_active == 1


def test_a_customer_without_leads_has_empty_figures(customer) -> None:
    result = report(T0, customer_id=customer.pk)
    (only,) = result.customers
    assert only.figures.sla_range == SlaCounts()
    assert only.figures.tat.p50_seconds is None
    assert only.meets_target is None
    assert only.sla_window_minutes == 30.0


def test_a_callback_keeps_the_lead_counted_by_its_first_call(all_day_campaign, make_contractor) -> None:
    contractor = make_contractor(all_day_campaign)
    lead = live_lead(all_day_campaign, T0)
    claim_at(contractor, lead, T0 + MINUTE)
    record_outcome(
        lead_id=lead.pk,
        contractor_id=contractor.pk,
        disposition="callback",
        callback_at=T0 + DAY,
        now=T0 + 2 * MINUTE,
    )
    assert Lead.objects.get(pk=lead.pk).status == QueueStatus.WAITING

    assert counts(T0 + dt.timedelta(hours=1)) == SlaCounts(live_leads=1, in_sla=1)


def test_a_queued_lead_an_import_closes_counts_as_a_withdrawn_one_does(
    all_day_campaign, make_contractor
) -> None:
    # Importing a customer's CRM outcomes closes the leads still queued: it removed them,
    # called or missed, from every figure.
    called = live_lead(all_day_campaign, T0, external_id="called")
    call_at(make_contractor(all_day_campaign), called, T0 + 10 * MINUTE, "no_answer")
    missed = live_lead(all_day_campaign, T0, external_id="missed")
    early = live_lead(all_day_campaign, T0, external_id="early")
    closed = {called.pk: T0 + DAY, missed.pk: T0 + DAY, early.pk: T0 + 20 * MINUTE}
    for pk, at in closed.items():
        Lead.objects.filter(pk=pk).update(status="closed", closed_reason="past_not_converted", closed_at=at)

    # "early" was closed before its deadline with no call, as a withdrawal would be.
    assert counts(T0 + 2 * DAY, start=T0.date()) == SlaCounts(live_leads=2, in_sla=1, missed=1)


def test_imported_past_outcomes_never_count(all_day_campaign) -> None:
    live_lead(all_day_campaign, T0)
    Lead.objects.filter(campaign=all_day_campaign).update(
        status="closed", closed_reason="past_converted", closed_at=T0
    )
    live_lead(all_day_campaign, T0)

    assert counts(T0 + dt.timedelta(hours=1)) == SlaCounts(live_leads=1, missed=1)
