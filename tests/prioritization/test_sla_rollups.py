"""Daily SLA rollups: what the beat task computes, when, that it is safe to re-run, that
the figures read them for past days, and that every figure's query can use its index."""

import datetime as dt
import threading

import psycopg
import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import F

from leads.importers import LeadMapping
from leads.models import Lead
from leads.services import import_leads, ingest_lead_batch, update_lead
from prioritization import sla, tasks
from prioritization.models import SlaDailyRollup, SlaRollupDay
from prioritization.schedules import SCHEDULES
from prioritization.sla import RollupSummary, SlaCounts, rollup_sla, sla_report
from tests.conftest import plan
from tests.factories import LeadFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_lead, set_policy
from tests.prioritization.sla_world import MINUTE, call_at, claim_at, live_lead

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
NOW = T0 + 10 * HOUR  # 2026-11-24 20:00 UTC


def rollup_rows() -> list[tuple[object, ...]]:
    return list(
        SlaDailyRollup.objects.order_by("campaign_id", "day").values_list(
            "customer_id",
            "campaign_id",
            "day",
            "live_leads",
            "in_sla",
            "missed",
            "pending",
            "stale_leads",
            "tat_counts",
        )
    )


def marked_days() -> set[dt.date]:
    return set(SlaRollupDay.objects.values_list("day", flat=True))


@pytest.fixture
def history(all_day_campaign, make_contractor):
    """Five days of leads: each day one called in SLA, one called late, one never called,
    one sent as stale. Oldest day first, each lead called before the next arrives, so the
    engine hands out the lead the test means."""
    contractor = make_contractor(all_day_campaign)
    for back in range(4, -1, -1):
        created = T0 - back * DAY
        call_at(contractor, live_lead(all_day_campaign, created), created + 4 * MINUTE)
        call_at(contractor, live_lead(all_day_campaign, created + MINUTE), created + 3 * HOUR)
        live_lead(all_day_campaign, created + 2 * MINUTE)
        live_lead(all_day_campaign, created, lead_type="stale")
    return all_day_campaign


def test_the_rollup_task_writes_one_row_per_campaign_and_settled_day(history) -> None:
    with time_machine.travel(NOW, tick=False):
        summary = tasks.rollup_sla()

    # The three days before today, refreshed on every run, and day -4, never rolled up
    # before (the backlog); today is never rolled up.
    assert summary == {"days": 4, "customer_days": 4, "rows": 4, "skipped": False}
    assert marked_days() == {(T0 - back * DAY).date() for back in (1, 2, 3, 4)}
    rows = rollup_rows()
    assert [row[2] for row in rows] == [(T0 - back * DAY).date() for back in (4, 3, 2, 1)]
    customer, campaign, _, live, in_sla, missed, pending, stale, tat = rows[-1]
    assert (customer, campaign) == (history.customer_id, history.pk)
    assert (live, in_sla, missed, pending, stale) == (3, 1, 2, 0, 1)
    assert sum(tat) == 2
    assert tat[4] == 1  # called after 4 minutes: the [4, 5) minute bucket


def test_running_the_rollup_again_changes_nothing(history) -> None:
    with time_machine.travel(NOW, tick=False):
        rollup_sla(now=NOW)
        first = rollup_rows()
        marks = list(SlaRollupDay.objects.order_by("day").values_list("customer_id", "day", "window_minutes"))
        rollup_sla(now=NOW)
    assert rollup_rows() == first
    assert (
        list(SlaRollupDay.objects.order_by("day").values_list("customer_id", "day", "window_minutes"))
        == marks
    )


def test_figures_from_rollups_equal_the_live_figures(history) -> None:
    start, end = (T0 - 4 * DAY).date(), T0.date()
    live = sla_report(now=NOW, start=start, end=end)
    rollup_sla(now=NOW)
    assert (T0 - 4 * DAY).date() in marked_days()
    rolled = sla_report(now=NOW, start=start, end=end)

    assert (
        rolled.overall.sla_range
        == live.overall.sla_range
        == SlaCounts(live_leads=15, in_sla=5, missed=10, stale_leads=5)
    )
    assert rolled.overall.tat == live.overall.tat
    assert rolled.overall.daily == live.overall.daily
    assert rolled.customers == live.customers
    assert rolled.campaigns == live.campaigns


def test_past_days_are_read_from_the_rollups_and_today_live(history) -> None:
    rollup_sla(now=NOW)
    yesterday = (T0 - DAY).date()
    # Change a rollup behind the report's back: the report must show the changed figure.
    SlaDailyRollup.objects.filter(day=yesterday).update(in_sla=F("in_sla") + 1, missed=F("missed") - 1)
    live_lead(history, T0 + HOUR)

    result = sla_report(now=NOW, start=yesterday, end=T0.date())
    assert [d.sla for d in result.overall.daily] == [
        SlaCounts(live_leads=3, in_sla=2, missed=1, stale_leads=1),
        SlaCounts(live_leads=4, in_sla=1, missed=3, stale_leads=1),
    ]


def test_a_day_is_rolled_up_only_once_every_deadline_of_it_can_have_passed(all_day_campaign) -> None:
    midnight = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    live_lead(all_day_campaign, midnight - 10 * MINUTE)

    # A lead of 23:59:59 would be pending until 00:29:59: the day is not over before 00:30.
    rollup_sla(now=midnight + 30 * MINUTE - dt.timedelta(microseconds=1))
    assert (midnight - DAY).date() not in marked_days()
    rollup_sla(now=midnight + 30 * MINUTE)
    assert (midnight - DAY).date() in marked_days()
    assert rollup_rows()[0][3:7] == (1, 0, 1, 0)


def test_a_changed_sla_window_is_read_live_until_the_rollup_recomputes_the_day(history) -> None:
    rollup_sla(now=NOW)
    yesterday = (T0 - DAY).date()
    set_policy(history.customer, sla_window_minutes=240)  # the 3-hour call is in SLA now

    assert sla_report(now=NOW, start=yesterday, end=yesterday).overall.sla_range.in_sla == 2
    assert SlaRollupDay.objects.get(day=yesterday).window_minutes == 30

    rollup_sla(now=NOW)
    assert SlaRollupDay.objects.get(day=yesterday).window_minutes == 240
    assert SlaDailyRollup.objects.get(day=yesterday).in_sla == 2


def test_a_first_call_long_after_a_lead_arrived_updates_the_rollup_of_its_day(
    all_day_campaign, make_contractor
) -> None:
    old = T0 - 10 * DAY
    lead = live_lead(all_day_campaign, old)
    rollup_sla(now=NOW)  # the backlog rolls day -10: one lead, missed, not called
    assert SlaDailyRollup.objects.get(day=old.date()).tat_counts == [0] * sla.TAT_BUCKETS

    call_at(make_contractor(all_day_campaign), lead, NOW + HOUR)
    rollup_sla(now=NOW + 90 * MINUTE)

    rolled = SlaDailyRollup.objects.get(day=old.date())
    assert (rolled.live_leads, rolled.missed) == (1, 1)
    assert rolled.tat_counts[-1] == 1  # over a week: the open last bucket


def rolled_up_day_with_one_lead(campaign) -> tuple[dt.date, Lead]:
    """Day -10 with one live lead, rolled up as of NOW (the backlog takes it)."""
    lead = live_lead(campaign, T0 - 10 * DAY)
    rollup_sla(now=NOW)
    day = (T0 - 10 * DAY).date()
    assert day in marked_days()
    return day, lead


def live_leads_of(day: dt.date) -> int:
    return sla_report(now=NOW, start=day, end=day).overall.sla_range.live_leads


def test_a_lead_pushed_now_for_a_long_past_day_is_counted_there_at_once_and_rolled_again(
    all_day_campaign,
) -> None:
    day, _ = rolled_up_day_with_one_lead(all_day_campaign)
    add_lead(all_day_campaign, now=NOW, created_at=(T0 - 10 * DAY + HOUR).isoformat())

    assert day not in marked_days()  # read live until rolled up again
    assert live_leads_of(day) == 2
    rollup_sla(now=NOW)
    assert day in marked_days()
    assert SlaDailyRollup.objects.get(day=day).live_leads == 2
    assert live_leads_of(day) == 2


def test_an_imported_file_of_old_leads_forgets_the_days_it_writes_to(all_day_campaign, tmp_path) -> None:
    day, _ = rolled_up_day_with_one_lead(all_day_campaign)
    other_day = (T0 - 9 * DAY).date()
    path = tmp_path / "leads.csv"
    created = f"{T0 - 10 * DAY + HOUR:%Y-%m-%dT%H:%M:%SZ}"
    path.write_text(f"external_id,lead_type,created_at\nold-1,live,{created}\nnew-1,live,\n")
    rollup_sla(now=NOW, days=[other_day])
    with time_machine.travel(NOW, tick=False):
        summary = import_leads(
            path,
            mapping=LeadMapping(),
            customer_id=all_day_campaign.customer_id,
            campaign_id=all_day_campaign.pk,
        )
    assert summary.created == 2
    assert day not in marked_days()
    assert other_day in marked_days()  # no lead of it was written
    assert live_leads_of(day) == 2


def test_a_repush_forgets_the_past_days_a_lead_leaves_and_joins_unless_nothing_changed(
    all_day_campaign,
) -> None:
    day, lead = rolled_up_day_with_one_lead(all_day_campaign)
    body = {
        "customer_id": lead.customer_id,
        "campaign_id": lead.campaign_id,
        "external_id": lead.external_id,
        "lead_type": "live",
        "created_at": lead.created_at.isoformat(),
    }
    ingest_lead_batch([body], allowed_customer_id=None, now=NOW)  # the same data again
    assert day in marked_days()

    later_day = (T0 - 8 * DAY).date()
    rollup_sla(now=NOW, days=[later_day])
    moved = {**body, "created_at": (T0 - 8 * DAY).isoformat()}
    ingest_lead_batch([moved], allowed_customer_id=None, now=NOW)
    assert day not in marked_days()  # the day it left
    assert later_day not in marked_days()  # the day it joined
    assert (live_leads_of(day), live_leads_of(later_day)) == (0, 1)


def test_a_patched_lead_type_forgets_the_rollup_of_the_leads_day(all_day_campaign) -> None:
    day, lead = rolled_up_day_with_one_lead(all_day_campaign)
    update_lead(lead_id=lead.pk, changes={"city": "Pune"}, now=NOW)
    assert day in marked_days()
    update_lead(lead_id=lead.pk, changes={"lead_type": "stale"}, now=NOW)
    assert day not in marked_days()
    assert sla_report(now=NOW, start=day, end=day).overall.sla_range == SlaCounts(stale_leads=1)


def test_recent_days_are_left_to_the_rollups_own_refresh(all_day_campaign) -> None:
    rollup_sla(now=NOW)
    day = (T0 - 2 * DAY).date()
    assert day in marked_days()
    add_lead(all_day_campaign, now=NOW, created_at=(T0 - 2 * DAY).isoformat())
    assert day in marked_days()
    rollup_sla(now=NOW)
    assert SlaDailyRollup.objects.get(day=day).live_leads == 1


@pytest.mark.django_db(transaction=True)
def test_a_rollup_of_a_day_waits_for_a_write_of_its_leads_in_progress(all_day_campaign) -> None:
    # The write forgets the day's rollup and commits while the rollup runs: counted before
    # the commit and marked after it, the day would stay rolled up without the new lead.
    day = (T0 - 10 * DAY).date()
    rolled: list[RollupSummary] = []
    with transaction.atomic():
        add_lead(all_day_campaign, now=NOW, created_at=(T0 - 10 * DAY).isoformat())
        rollup = threading.Thread(target=lambda: rolled.append(rollup_on_own_connection(day)))
        rollup.start()
        rollup.join(timeout=1)
        assert rollup.is_alive()  # waiting for the write's day lock
    rollup.join(timeout=30)
    assert [summary.customer_days for summary in rolled] == [1]
    assert SlaDailyRollup.objects.get(day=day).live_leads == 1


def rollup_on_own_connection(day: dt.date) -> RollupSummary:
    try:
        return rollup_sla(now=NOW, days=[day])
    finally:
        connection.close()


def test_days_never_rolled_up_are_backfilled_newest_first_a_few_per_run(
    all_day_campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sla, "ROLLUP_BACKLOG_DAYS_PER_RUN", 2)
    for back in range(4, 9):  # days -4 .. -8, older than the refreshed days
        live_lead(all_day_campaign, T0 - back * DAY)

    rollup_sla(now=NOW)
    assert marked_days() == {(T0 - back * DAY).date() for back in (1, 2, 3, 4, 5)}
    rollup_sla(now=NOW)
    assert marked_days() >= {(T0 - back * DAY).date() for back in (6, 7)}
    rollup_sla(now=NOW)
    assert len(marked_days()) == 8
    assert SlaDailyRollup.objects.count() == 5  # days without leads are marked, with no rows


def test_a_second_rollup_at_the_same_time_skips() -> None:
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [sla.ROLLUP_LOCK_KEY])
        assert rollup_sla(now=NOW).skipped
        # Released explicitly: a closed session's locks go only when its backend has exited.
        other.execute("SELECT pg_advisory_unlock(%s)", [sla.ROLLUP_LOCK_KEY])
        assert not rollup_sla(now=NOW).skipped


def test_the_rollup_runs_every_ten_minutes_from_beat() -> None:
    (schedule,) = [s for s in SCHEDULES if s.task == "prioritization.tasks.rollup_sla"]
    assert schedule.every_seconds == 600


def test_the_rollup_command_recomputes_a_range_of_days(history, capsys: pytest.CaptureFixture[str]) -> None:
    with time_machine.travel(NOW, tick=False):
        call_command("rollup_sla", "--from", (T0 - 4 * DAY).date().isoformat(), "--to", T0.date().isoformat())
    # Today is still open: four days rolled up.
    assert marked_days() == {(T0 - back * DAY).date() for back in (1, 2, 3, 4)}
    assert "Rolled up 4 day(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-13-01"], "'2026-13-01' is not a day; write it as YYYY-MM-DD."),
        (["--from", "2026-11-05", "--to", "2026-11-01"], "--from 2026-11-05 is after --to 2026-11-01."),
        (["--to", "2026-11-01"], "--to needs --from."),
        # Past the years leads may carry: the day's end would overflow Python's calendar.
        (["--from", "9999-12-31"], "9999-12-31: Enter a day in the years 1900 to 2099."),
        (
            ["--from", "2026-11-01", "--to", "2100-01-01"],
            "2100-01-01: Enter a day in the years 1900 to 2099.",
        ),
    ],
)
def test_the_rollup_command_refuses_bad_days_in_one_line(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call_command("rollup_sla", *args)


# --- Query plans ---------------------------------------------------------------------------------


def test_todays_figures_are_read_through_the_customer_creation_index(all_day_campaign) -> None:
    live_lead(all_day_campaign, T0)
    text = plan(
        sla._DAY_COUNTS_SQL.format(campaign_filter=""),
        {
            "customers": [all_day_campaign.customer_id],
            "windows": [30.0],
            "start": T0,
            "end": T0 + DAY,
            "edges": list(sla.TAT_BUCKET_EDGES_SECONDS),
            "now": NOW,
        },
    )
    assert "lead_customer_created" in text
    assert "Seq Scan on leads_leadevent" not in text


def test_queue_at_risk_and_contractor_figures_walk_the_queue_indexes(all_day_campaign) -> None:
    # A queue as the figures meet it, with statistics of its own: a table left empty by other
    # tests keeps whatever row count an earlier ANALYZE saw, and on that the planner may read
    # the at-risk leads through the ready index, which at scale would filter the whole queue.
    LeadFactory.create_batch(40, campaign=all_day_campaign, lead_type="stale", created_at=T0)
    LeadFactory.create_batch(40, campaign=all_day_campaign, created_at=T0, first_attempt_at=T0)
    LeadFactory.create_batch(2, campaign=all_day_campaign, created_at=T0, sla_deadline=NOW + MINUTE)
    # Other campaigns' queues: the one asked about is a small part of the open leads (else
    # reading every open lead through lead_open_id is as cheap as any lookup by campaign).
    for _ in range(4):
        LeadFactory.create_batch(100, campaign=campaign_calling_all_day(all_day_campaign.customer))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_lead")
    campaigns = {"campaigns": [all_day_campaign.pk], "now": NOW}
    queue = plan(sla._QUEUE_SQL, campaigns)
    assert "lead_claim_ready" in queue
    assert "lead_waiting_due" in queue
    assert "lead_held_lease" in queue
    at_risk = plan(sla._AT_RISK_SQL, {**campaigns, "until": [NOW + 10 * MINUTE]})
    assert "lead_claim_sla" in at_risk
    assert "lead_waiting_due" in at_risk
    active = plan(sla._ACTIVE_SQL, {**campaigns, "since": NOW - 15 * MINUTE})
    # decision_recent or decision_contractor, as the planner likes on an empty table.
    assert "Seq Scan on prioritization_decision" not in active


def test_a_claimed_lead_of_a_past_day_counts_in_its_rollup(all_day_campaign, make_contractor) -> None:
    lead = live_lead(all_day_campaign, T0 - DAY)
    claim_at(make_contractor(all_day_campaign), lead, T0 - DAY + 10 * MINUTE)
    rollup_sla(now=NOW)
    assert SlaDailyRollup.objects.get(day=(T0 - DAY).date()).in_sla == 1
