"""Findings of a review of the reporting and learning side (SLA alerts, the simulator, model
evaluation), each pinned by a test that failed before its fix."""

import base64
import datetime as dt
import re
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from prioritization import alerts
from prioritization.admin_dashboard import queue_chart
from prioritization.evaluation import EvaluationInputError, evaluate_file
from prioritization.models import Alert, SimulationRun, SlaSnapshot
from prioritization.services import release_lead, withdraw_lead
from prioritization.simulation.arrivals import DataError, read_call_log, read_shift_template
from prioritization.simulation.scenario import ScenarioOptions, build_scenario
from prioritization.sla import QueueDepth, SlaCounts, rollup_sla, sla_report
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import T0, add_leads
from tests.prioritization.sla_world import claim_at, live_lead
from tests.prioritization.test_alerts import MINUTE, sla_customer
from tests.prioritization.test_dashboard import charts
from tests.prioritization.test_evaluate_model import history_rows, write_csv
from tests.prioritization.test_simulation_admin import START, form_data

MIDNIGHT = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


# --- Alerts: today's projection ------------------------------------------------------------------


@pytest.mark.django_db
def test_yesterdays_leads_at_risk_after_midnight_do_not_sink_todays_projection() -> None:
    # Five minutes after midnight: three leads of 23:43-23:45 yesterday are at risk (10
    # protected minutes of a 30-minute window) and today's two leads are on track.
    customer, campaign = sla_customer(target=0.9)
    now = MIDNIGHT + 5 * MINUTE
    with time_machine.travel(now, tick=False):
        add_leads(
            campaign,
            *({"created_at": (MIDNIGHT - m * MINUTE).isoformat()} for m in (15, 16, 17)),
            *({"created_at": (MIDNIGHT + m * MINUTE).isoformat()} for m in (1, 2)),
        )
        report = alerts.today_report(now=now)
        summary = alerts.evaluate_alerts(now=now)
    # Yesterday's leads are at risk now (the dashboard lists them), but they are not today's.
    assert (report.overall.at_risk, report.overall.at_risk_today) == (3, 0)
    assert summary.opened == [], list(Alert.objects.values_list("message", flat=True))
    snapshot = SlaSnapshot.objects.get(customer=customer)  # what /metrics exposes
    assert (snapshot.pending, snapshot.at_risk) == (2, 0)


@pytest.mark.django_db
def test_todays_leads_at_risk_still_count_as_misses_after_midnight() -> None:
    _, campaign = sla_customer(target=0.9)
    now = MIDNIGHT + 25 * MINUTE
    with time_machine.travel(now, tick=False):
        add_leads(
            campaign,
            {"created_at": (MIDNIGHT - 10 * MINUTE).isoformat()},  # yesterday's, at risk
            {"created_at": (MIDNIGHT + 1 * MINUTE).isoformat()},  # today's, at risk
            {"created_at": (MIDNIGHT + 20 * MINUTE).isoformat()},  # today's, on track
        )
        alerts.evaluate_alerts(now=now)
    alert = Alert.objects.get()
    assert (alert.detail["at_risk"], alert.detail["pending"]) == (1, 1)
    assert alert.detail["projected_attainment"] == 0.5


# --- SLA figures ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_lead_withdrawn_during_its_first_call_counts_by_that_call(
    all_day_campaign, make_contractor
) -> None:
    contractor = make_contractor(all_day_campaign)
    during = live_lead(all_day_campaign, T0)
    claim_at(contractor, during, T0 + 5 * MINUTE)  # called 5 minutes after arriving: in SLA
    withdraw_lead(lead_id=during.pk, now=T0 + 35 * MINUTE)  # mid-call, past the deadline
    # A claim given back (or whose lease ran out) before the withdrawal was no call.
    released = live_lead(all_day_campaign, T0)
    claim_at(contractor, released, T0 + 6 * MINUTE)
    release_lead(lead_id=released.pk, contractor_id=contractor.pk, now=T0 + 7 * MINUTE)
    withdraw_lead(lead_id=released.pk, now=T0 + 40 * MINUTE)
    # Withdrawn before the deadline while being called: it was served, so it counts.
    early = live_lead(all_day_campaign, T0 + 60 * MINUTE)
    claim_at(contractor, early, T0 + 62 * MINUTE)
    withdraw_lead(lead_id=early.pk, now=T0 + 63 * MINUTE)

    now = T0 + 3 * dt.timedelta(hours=1)
    report = sla_report(now=now, start=T0.date(), end=T0.date())
    assert report.overall.sla_range == SlaCounts(live_leads=3, in_sla=2, missed=1)
    assert report.overall.tat.called == 2
    # The rollup of the day says the same.
    rollup_sla(now=T0 + dt.timedelta(days=2), days=[T0.date()])
    assert sla_report(now=T0 + dt.timedelta(days=2), start=T0.date(), end=T0.date()).overall.sla_range == (
        SlaCounts(live_leads=3, in_sla=2, missed=1)
    )


# --- SLA dashboard ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_campaign_of_a_customer_with_a_long_name_gets_its_own_queue_bar(client: Client) -> None:
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    customer = CustomerFactory(name="Northwind Traders International Holdings")
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)
    with time_machine.travel(now, tick=False):
        for name, leads in (("Inbound", 3), ("Outbound", 1)):
            campaign = CampaignFactory(customer=customer, name=name)
            for _ in range(leads):
                live_lead(campaign, now - 5 * MINUTE)
        page = client.get(reverse("sla-dashboard"))
    assert page.status_code == 200
    queue = charts(page.content.decode())["chart-queue"]
    # Cut at 40 characters, both labels read "Northwind Traders International Holding":
    # the bars shared one row, the shorter hidden in the longer.
    assert ">Northwind Traders Internation… / Inbound<" in queue
    assert ">Northwind Traders Internatio… / Outbound<" in queue


def test_two_campaigns_whose_labels_read_the_same_still_get_a_bar_each() -> None:
    uri = queue_chart([("Same", QueueDepth(live_due=5)), ("Same", QueueDepth(live_due=3))])
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert svg.count(">Same<") == 2  # one row (and tick label) per campaign


# --- Simulator ---------------------------------------------------------------------------------


def synthetic(start: dt.datetime, tmp_path: Path, **fields: object) -> ScenarioOptions:
    """Poisson arrivals and made-up leads: no data file needed (the shift template's
    built-in copy is used)."""
    return ScenarioOptions(
        data_dir=tmp_path, contractors=8, start=start, days=1.0, rate_per_hour=10, synthetic_leads=True,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_start_given_with_an_offset_puts_contractors_on_the_same_utc_shifts(tmp_path: Path) -> None:
    utc = dt.datetime(2026, 2, 8, tzinfo=dt.UTC)
    same_instant = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))  # 02:00+02:00
    expected = build_scenario(synthetic(utc, tmp_path))
    given = build_scenario(synthetic(same_instant, tmp_path))
    # The shift template's hours are UTC hours, as the arrivals' are: shift 1 is 00:00-06:00.
    assert given.contractors[0].duty == expected.contractors[0].duty == ((utc, utc + dt.timedelta(hours=6)),)
    assert [spec.duty for spec in given.contractors] == [spec.duty for spec in expected.contractors]
    assert given.start == expected.start
    assert given.start.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # 1e7 days overflowed Python's dates (a traceback); 40,000 ran past the timestamps
        # leads take. Both are now beyond the simulator's 28 days.
        (["--days", "1e7"], "argument --days: must be between 0.05 and 28, got 1e7"),
        (["--days", "40000"], "argument --days: must be between 0.05 and 28, got 40000"),
        (["--start", "2099-12-20", "--days", "28"], "must end in the years 1900 to 2099"),
    ],
)
def test_a_simulated_period_past_2099_is_one_readable_line(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("simulate", *args, "--rate", "1", "--synthetic-leads")


@pytest.mark.django_db
def test_the_admin_simulator_refuses_a_period_past_2099_in_its_form(admin_client: Client) -> None:
    customer = CustomerFactory()
    page = admin_client.post(START, form_data(customer, start="2099-12-20 00:00", days=28))
    assert page.status_code == 200
    assert page.context["form"].errors["days"] == [
        "The simulated period (the start plus the days) must end in the years 1900 to 2099."
    ]
    assert not SimulationRun.objects.exists()


def test_a_shift_template_without_any_shift_is_a_data_error(tmp_path: Path) -> None:
    template = tmp_path / "shifts.csv"
    template.write_text("hour,x,s1,s2\n" + "".join(f"{h},x,0,0\n" for h in range(24)), encoding="ascii")
    # Contractors are spread over the shifts: none was a division by zero when building.
    with pytest.raises(DataError, match="no shift covers any hour"):
        read_shift_template(template)
    template.write_bytes(b"hour,x,s1\xe9\n" + b"".join(b"%d,x,1\n" % h for h in range(24)))
    with pytest.raises(DataError, match="is not the shift template: it is not ASCII text"):
        read_shift_template(template)


def test_a_call_log_without_calls_is_a_data_error(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\t"
                   "q_start\tq_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver\n",
                   encoding="ascii")  # fmt: skip
    # Synthetic arrivals (--rate) draw call types from the log's mix: an empty mix was an
    # IndexError in the middle of building the scenario.
    with pytest.raises(DataError, match="holds no calls"):
        read_call_log(log)


# --- Model evaluation ----------------------------------------------------------------------------


def test_an_order_by_value_that_is_not_a_number_nor_empty_but_nan_is_refused(tmp_path: Path) -> None:
    rows = history_rows(60)
    rows[7][0] = "NaN"
    path = write_csv(tmp_path / "leads.csv", rows)
    # NaN compares false with everything: sorted among numbers, it let newer rows into the
    # training rows (the models learned from the future they were tested on).
    with pytest.raises(EvaluationInputError, match=r"Row 9: the --order-by column 'Lead Number' is 'NaN'"):
        evaluate_file(path, target="Converted", features=["Source"], order_by="Lead Number")
