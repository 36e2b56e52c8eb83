"""/metrics: who may read it, every metric appears and moves when its event happens, counters
of several processes are summed, and the demand record behind the empty-queue alert."""

import datetime as dt
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.db import DatabaseError
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from leads.importers import LeadMapping
from leads.models import Campaign, CloseReason, Lead, QueueStatus
from leads.services import import_leads, ingest_lead_batch
from prioritization import alerts, demand, metrics
from prioritization.models import Alert, AlertKind, CampaignDemand
from prioritization.services import claim_next_lead, wake_due_leads
from tests.conftest import manage_py
from tests.factories import CampaignFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_lead, add_leads, set_policy

NEXT = "/api/v1/next-lead/"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _no_remembered_demand() -> Iterator[None]:
    demand.recorder.forget()
    yield
    demand.recorder.forget()


def scrape(client: Client, **extra: Any) -> Samples:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: object) -> float:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


# --- Who may read it ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_debug_metrics_are_open_to_loopback_and_refused_to_other_addresses(client: Client) -> None:
    assert not settings.DEBUG
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 403
    assert b"LEADRANK_METRICS_ALLOWED_IPS" in refused.content
    assert b"leadrank_" not in refused.content


@pytest.mark.django_db
def test_a_forwarded_header_does_not_make_a_remote_client_local(client: Client) -> None:
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert response.status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        {"HTTP_X_FORWARDED_FOR": "203.0.113.9"},
        {"HTTP_FORWARDED": "for=203.0.113.9"},
        {"HTTP_X_REAL_IP": "203.0.113.9"},
        {"HTTP_X_FORWARDED_PROTO": "https"},
        {"HTTP_X_FORWARDED_FOR": "127.0.0.1"},  # what a client wrote, passed on by the proxy
    ],
)
def test_a_request_forwarded_by_a_local_proxy_is_not_taken_for_a_local_client(
    client: Client, header: dict[str, str]
) -> None:
    # granian listens on 127.0.0.1, so a proxy in front of it on the same machine is the
    # TCP peer of every client on the internet.
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", **header)
    assert response.status_code == 403
    assert b"leadrank_" not in response.content


@pytest.mark.django_db
@override_settings(LEADRANK_METRICS_TOKEN="s3cret-token")
def test_a_request_forwarded_by_a_proxy_is_admitted_with_the_token(client: Client) -> None:
    forwarded = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **forwarded).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **forwarded).status_code == 403


@pytest.mark.django_db
@override_settings(LEADRANK_METRICS_ALLOWED_IPS=["10.0.0.0/8", "192.0.2.7"])
def test_the_allowed_networks_setting_admits_its_addresses_only(client: Client) -> None:
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.8").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


@pytest.mark.django_db
@override_settings(LEADRANK_METRICS_TOKEN="s3cret-token", LEADRANK_METRICS_ALLOWED_IPS=[])
def test_the_bearer_token_admits_any_address_and_a_wrong_or_missing_one_does_not(client: Client) -> None:
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", **remote).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="bearer s3cret-token", **remote).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-tokeN", **remote).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic s3cret-token", **remote).status_code == 403
    assert client.get("/metrics", **remote).status_code == 403


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_debug_opens_metrics_to_any_address(client: Client) -> None:
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200


@pytest.mark.django_db
def test_metrics_answer_get_and_head_only(client: Client) -> None:
    assert client.post("/metrics").status_code == 405
    head = client.head("/metrics", REMOTE_ADDR="127.0.0.1")  # as uptime probes ask
    assert (head.status_code, head.content) == (200, b"")


def test_a_bad_allowed_networks_setting_stops_start_up_with_a_readable_message() -> None:
    env = {
        **os.environ,
        "LEADRANK_METRICS_ALLOWED_IPS": "10.0.0.0/8,not-a-network",
        "DATABASE_URL": settings.DATABASE_URL,
    }
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LEADRANK_METRICS_ALLOWED_IPS: 'not-a-network' is not an address or CIDR network" in result.stderr


# --- Each metric moves with its event -----------------------------------------------------------


@pytest.mark.django_db
def test_next_lead_answers_move_the_claims_empty_answers_and_latency(
    client: Client, contract_api: APIClient, make_contractor: Any
) -> None:
    campaign = campaign_calling_all_day()
    first, second = make_contractor(campaign), make_contractor(campaign)
    add_lead(campaign)
    before = scrape(client)

    body = {"campaign_ids": [campaign.pk], "contractor_id": first.pk}
    assert contract_api.post(NEXT, body, format="json").status_code == 200
    body = {"campaign_ids": [campaign.pk], "contractor_id": second.pk}
    assert contract_api.post(NEXT, body, format="json").status_code == 204
    assert contract_api.post(NEXT, body, format="json").status_code == 204
    body = {"campaign_ids": [campaign.pk], "contractor_id": 999_999}
    assert contract_api.post(NEXT, body, format="json").status_code == 404
    assert contract_api.post(NEXT, {"campaign_ids": []}, format="json").status_code == 400
    after = scrape(client)

    def moved(name: str, **labels: object) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("leadrank_claims_total") == 1
    assert moved("leadrank_next_lead_empty_total") == 2
    assert moved("leadrank_next_lead_seconds_count", result="lead") == 1
    assert moved("leadrank_next_lead_seconds_count", result="empty") == 2
    assert moved("leadrank_next_lead_seconds_count", result="refused") == 2
    assert moved("leadrank_next_lead_seconds_count", result="error") == 0
    assert moved("leadrank_next_lead_seconds_sum", result="lead") > 0
    assert moved("leadrank_next_lead_seconds_bucket", result="lead", le="+Inf") == 1


@pytest.mark.django_db
def test_queue_depth_counts_open_leads_per_customer_and_queue_state(
    client: Client, make_contractor: Any
) -> None:
    customer = CustomerFactory(name="Acme")
    campaign = campaign_calling_all_day(customer)
    with time_machine.travel(T0, tick=False):
        add_leads(campaign, {}, {}, {"lead_type": "stale"})
        add_lead(campaign, rescheduled_at=(T0 + dt.timedelta(hours=3)).isoformat())
        held = add_lead(campaign)
        Lead.objects.exclude(pk=held.pk).filter(status=QueueStatus.READY).update(priority_key=0.0)
        claim_next_lead(contractor_id=make_contractor(campaign).pk, campaign_ids=[campaign.pk])
        samples = scrape(client)
    labels = {"customer_id": customer.pk, "customer": "Acme"}
    states = {s: value(samples, "leadrank_queue_depth", state=s, **labels) for s in metrics._QUEUE_STATES}
    assert states == {"live_due": 2, "live_later": 1, "stale_due": 1, "stale_later": 0, "held": 1}


@pytest.mark.django_db
def test_sla_attainment_today_its_projection_target_and_leads_at_risk_per_customer(client: Client) -> None:
    customer = CustomerFactory(name="Acme")
    set_policy(customer, sla_window_minutes=30, sla_protect_minutes=10, sla_target=0.9)
    campaign = campaign_calling_all_day(customer)
    minutes = dt.timedelta(minutes=1)
    with time_machine.travel(T0, tick=False):
        called, *_ = add_leads(
            campaign,
            {"created_at": (T0 - 60 * minutes).isoformat()},
            {"created_at": (T0 - 60 * minutes).isoformat()},
            {"created_at": (T0 - 25 * minutes).isoformat()},
            {"created_at": (T0 - 5 * minutes).isoformat()},
        )
        Lead.objects.filter(pk=called.pk).update(
            first_attempt_at=T0 - 50 * minutes,
            status=QueueStatus.CLOSED,
            closed_reason=CloseReason.CONVERTED,
            closed_at=T0 - 49 * minutes,
        )
        # The figures are those of the last alert evaluation (the beat task, every minute).
        assert (
            "leadrank_sla_target",
            frozenset({("customer_id", str(customer.pk)), ("customer", "Acme")}),
        ) not in scrape(client)
        alerts.evaluate_alerts(now=T0)
        samples = scrape(client)
    labels = {"customer_id": customer.pk, "customer": "Acme"}
    assert value(samples, "leadrank_sla_figures_timestamp_seconds", **labels) == T0.timestamp()
    assert value(samples, "leadrank_sla_attainment_today", **labels) == pytest.approx(1 / 2)
    # In SLA 1 + pending 2 − at risk 1, of 4.
    assert value(samples, "leadrank_sla_projected_attainment_today", **labels) == pytest.approx(2 / 4)
    assert value(samples, "leadrank_sla_target", **labels) == pytest.approx(0.9)
    assert value(samples, "leadrank_leads_at_risk", **labels) == 1


@pytest.mark.django_db
def test_a_customer_without_decided_leads_has_no_attainment_sample(client: Client) -> None:
    customer = CustomerFactory(name="Quiet")
    campaign_calling_all_day(customer)
    alerts.evaluate_alerts(now=T0)
    samples = scrape(client)
    labels = frozenset({("customer_id", str(customer.pk)), ("customer", "Quiet")})
    assert ("leadrank_sla_target", labels) in samples
    assert ("leadrank_sla_attainment_today", labels) not in samples


@pytest.mark.django_db
def test_leases_expired_counts_every_expiry_whichever_process_finds_it(
    client: Client, make_contractor: Any
) -> None:
    customer = CustomerFactory()
    set_policy(customer, lease_seconds=60)
    campaign = campaign_calling_all_day(customer)
    holder = make_contractor(campaign)
    before = value(scrape(client), "leadrank_leases_expired_total")
    with time_machine.travel(T0, tick=False):
        add_leads(campaign, {}, {})
        claim_next_lead(contractor_id=holder.pk, campaign_ids=[campaign.pk])
    assert value(scrape(client), "leadrank_leases_expired_total") == before
    # The beat task finds this one; a claim would count the same way (same event).
    wake_due_leads(now=T0 + dt.timedelta(seconds=60))
    assert value(scrape(client), "leadrank_leases_expired_total") == before + 1


@pytest.mark.django_db
def test_import_rows_count_api_items_and_file_rows_by_result(
    client: Client, tmp_path: Path, campaign: Campaign
) -> None:
    before = scrape(client)
    good = {"customer_id": campaign.customer_id, "campaign_id": campaign.pk, "lead_type": "live"}
    ingest_lead_batch(
        [{**good, "external_id": "a"}, {**good, "external_id": "b", "lead_type": "warm"}],
        allowed_customer_id=None,
    )
    ingest_lead_batch([{**good, "external_id": "a"}], allowed_customer_id=None)
    path = tmp_path / "leads.csv"
    path.write_text(
        "external_id,customer_id,campaign_id,lead_type\n"
        f"f1,{campaign.customer_id},{campaign.pk},live\n"
        f"f2,{campaign.customer_id},{campaign.pk},stale\n"
        f"f3,{campaign.customer_id},{campaign.pk},lukewarm\n"
        f"a,{campaign.customer_id},{campaign.pk},live\n"
    )
    summary = import_leads(path, mapping=LeadMapping(), errors_out=io.StringIO())
    assert (summary.created, summary.updated, summary.rejected) == (2, 1, 1)
    after = scrape(client)

    def moved(**labels: str) -> float:
        name = "leadrank_import_rows_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(source="api", result="created") == 1
    assert moved(source="api", result="updated") == 1
    assert moved(source="api", result="rejected") == 1
    assert moved(source="file", result="created") == 2
    assert moved(source="file", result="updated") == 1
    assert moved(source="file", result="rejected") == 1


@pytest.mark.django_db
def test_open_alerts_are_counted_by_kind(client: Client, campaign: Campaign) -> None:
    Alert.objects.create(
        kind=AlertKind.EMPTY_QUEUE,
        customer_id=campaign.customer_id,
        campaign=campaign,
        opened_at=T0,
        checked_at=T0,
        message="empty",
    )
    Alert.objects.create(
        kind=AlertKind.SLA_AT_RISK,
        customer_id=campaign.customer_id,
        opened_at=T0,
        checked_at=T0,
        closed_at=T0,
        message="closed",
    )
    samples = scrape(client)
    assert value(samples, "leadrank_alerts_open", kind="empty_queue") == 1
    assert value(samples, "leadrank_alerts_open", kind="sla_at_risk") == 0
    assert value(samples, "leadrank_metrics_database_up") == 1


@pytest.mark.django_db
def test_a_database_failure_gives_database_up_zero_and_the_process_metrics_not_an_error(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(**kwargs: object) -> Iterator[object]:
        raise DatabaseError("connection refused")

    monkeypatch.setattr(metrics, "database_families", fail)
    samples = scrape(client)
    assert value(samples, "leadrank_metrics_database_up") == 0
    assert any(name == "leadrank_claims_total" for name, _ in samples)


# --- Several processes -----------------------------------------------------------------------

_CHILD = """
import django
django.setup()
from prioritization import metrics
metrics.record_next_lead(seconds=0.004, status=200, at=0.0)
metrics.record_next_lead(seconds=0.002, status=204, at=0.0)
metrics.record_import_rows(source="file", created=3, rejected=1)
"""


@pytest.mark.django_db
def test_counters_of_several_processes_are_summed_in_multiprocess_mode(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": settings.DATABASE_URL,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD], cwd=settings.BASE_DIR, env=env, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr.decode()
    assert len(list(tmp_path.glob("counter_*.db"))) == 2

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    samples = scrape(client)
    assert value(samples, "leadrank_claims_total") == 2
    assert value(samples, "leadrank_next_lead_empty_total") == 2
    assert value(samples, "leadrank_next_lead_seconds_count", result="lead") == 2
    assert value(samples, "leadrank_import_rows_total", source="file", result="created") == 6
    assert value(samples, "leadrank_import_rows_total", source="file", result="rejected") == 2
    assert value(samples, "leadrank_metrics_database_up") == 1

    metrics.reset_multiprocess_dir(tmp_path)
    assert not list(tmp_path.glob("*.db"))
    assert value(scrape(client), "leadrank_claims_total") == 0


# --- Demand: which campaigns contractors ask for ---------------------------------------------


def _demand() -> dict[int, tuple[dt.datetime, dt.datetime | None]]:
    return {d.campaign_id: (d.last_asked_at, d.last_empty_at) for d in CampaignDemand.objects.all()}


@pytest.mark.django_db
def test_a_campaign_is_written_when_first_asked_for_then_at_most_once_per_lag() -> None:
    a, b = CampaignFactory(), CampaignFactory()
    recorder = demand.DemandRecorder(max_lag_seconds=30)
    t = T0.timestamp()

    assert recorder.record([a.pk], empty=False, at=t) is True
    assert _demand() == {a.pk: (T0, None)}
    assert recorder.record([a.pk], empty=True, at=t + 10) is False  # remembered, not written
    assert _demand() == {a.pk: (T0, None)}
    # b was never written: asking for it writes everything remembered, a included.
    assert recorder.record([b.pk], empty=False, at=t + 20) is True
    at = lambda seconds: T0 + dt.timedelta(seconds=seconds)  # noqa: E731
    assert _demand() == {a.pk: (at(10), at(10)), b.pk: (at(20), None)}
    # a was written with b at +20: not again before +50.
    assert recorder.record([a.pk], empty=False, at=t + 45) is False
    assert recorder.record([a.pk], empty=False, at=t + 51) is True
    assert _demand()[a.pk] == (at(51), at(10))


@pytest.mark.django_db
def test_campaigns_first_asked_at_different_times_share_one_write_per_lag() -> None:
    a, b, c = CampaignFactory(), CampaignFactory(), CampaignFactory()
    recorder = demand.DemandRecorder(max_lag_seconds=30)
    t = T0.timestamp()
    at = lambda seconds: T0 + dt.timedelta(seconds=seconds)  # noqa: E731

    # Each is new to this process when first asked for: written at once.
    assert [recorder.record([x.pk], empty=False, at=t + s) for x, s in ((a, 0), (b, 5), (c, 10))] == [
        True,
        True,
        True,
    ]
    # Asked again and again: nothing is written until 30 s after the last write (+10), even
    # though a and b were first written earlier than that.
    for second in range(12, 40):
        assert recorder.record([a.pk, b.pk, c.pk], empty=second == 39, at=t + second) is False
    assert _demand() == {a.pk: (at(0), None), b.pk: (at(5), None), c.pk: (at(10), None)}
    # Then one write carries all three.
    assert recorder.record([a.pk], empty=False, at=t + 40) is True
    assert _demand() == {a.pk: (at(40), at(39)), b.pk: (at(39), at(39)), c.pk: (at(39), at(39))}
    assert recorder.record([b.pk], empty=False, at=t + 45) is False


@pytest.mark.django_db
def test_a_slower_process_never_moves_the_times_back() -> None:
    campaign = CampaignFactory()
    demand.DemandRecorder().record([campaign.pk], empty=True, at=T0.timestamp() + 60)
    demand.DemandRecorder().record([campaign.pk], empty=False, at=T0.timestamp())
    later = T0 + dt.timedelta(seconds=60)
    assert _demand() == {campaign.pk: (later, later)}


@pytest.mark.django_db
def test_an_unknown_campaign_is_skipped_not_an_error() -> None:
    campaign = CampaignFactory()
    demand.DemandRecorder().record([campaign.pk, 987_654_321], empty=False, at=T0.timestamp())
    assert set(_demand()) == {campaign.pk}


@pytest.mark.django_db
def test_a_failed_demand_write_is_kept_and_retried_by_the_next_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    campaign = CampaignFactory()
    recorder = demand.DemandRecorder()
    monkeypatch.setattr(demand, "_FLUSH_SQL", "SELECT no_such_function()")
    assert recorder.record([campaign.pk], empty=True, at=T0.timestamp()) is False
    monkeypatch.undo()
    assert recorder.record([campaign.pk], empty=False, at=T0.timestamp() + 1) is True
    assert _demand() == {campaign.pk: (T0 + dt.timedelta(seconds=1), T0)}


@pytest.mark.django_db
def test_next_lead_answers_record_the_demand_of_every_campaign_of_the_tuple(
    contract_api: APIClient, make_contractor: Any
) -> None:
    full, empty = campaign_calling_all_day(), campaign_calling_all_day()
    contractor = make_contractor(full, empty)
    add_lead(full)
    with time_machine.travel(T0, tick=False):
        body = {"campaign_ids": [full.pk, empty.pk], "contractor_id": contractor.pk}
        assert contract_api.post(NEXT, body, format="json").status_code == 200
    assert _demand() == {full.pk: (T0, None), empty.pk: (T0, None)}

    demand.recorder.forget()
    other = make_contractor(empty)
    with time_machine.travel(T0 + dt.timedelta(minutes=1), tick=False):
        body = {"campaign_ids": [empty.pk], "contractor_id": other.pk}
        assert contract_api.post(NEXT, body, format="json").status_code == 204
    later = T0 + dt.timedelta(minutes=1)
    assert _demand()[empty.pk] == (later, later)


# --- The benchmark's measurements run --------------------------------------------------------


def test_the_benchmark_times_recording_and_the_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    from prioritization import metrics_bench

    monkeypatch.setattr(demand, "recorder", demand.recorder)  # the benchmark swaps it; put it back
    recording = metrics_bench.time_recording(calls=200)
    assert 0 < recording["lead_us"] < 10_000
    middleware = metrics_bench.time_middleware(requests=50, rounds=1)
    assert middleware["with_us"] > 0
    assert middleware["without_us"] > 0


def test_the_benchmark_command_refuses_a_bad_size_with_one_line() -> None:
    result = manage_py("bench_metrics", "--leads", "0")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "manage.py bench_metrics: error: argument --leads: must be at least 1, got 0"
    )
