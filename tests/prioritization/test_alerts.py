"""Alerts: when they open, that they open once, when they clear, their webhooks and their banner."""

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import requests
import time_machine
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.test import Client
from kombu.exceptions import OperationalError as KombuOperationalError

from leads.models import Campaign, CloseReason, Customer, Lead, QueueStatus
from prioritization import alerts, tasks
from prioritization.models import Alert, AlertKind, CampaignDemand, SlaSnapshot, WebhookState
from prioritization.schedules import SCHEDULES
from prioritization.services import claim_next_lead
from tests.factories import CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_lead, add_leads, set_policy

pytestmark = pytest.mark.django_db

MINUTE = dt.timedelta(minutes=1)
HOOK = "https://hooks.example.com/leadrank"


def sla_customer(name: str = "Acme", webhook: str = "", target: float = 0.9) -> tuple[Customer, Campaign]:
    customer = CustomerFactory(name=name, alert_webhook_url=webhook)
    set_policy(customer, sla_window_minutes=30, sla_protect_minutes=10, sla_target=target)
    return customer, campaign_calling_all_day(customer)


def call(lead: Lead, at: dt.datetime) -> None:
    """The lead's first call started at ``at`` (and it converted)."""
    Lead.objects.filter(pk=lead.pk).update(
        first_attempt_at=at, status=QueueStatus.CLOSED, closed_reason=CloseReason.CONVERTED, closed_at=at
    )


def created(minutes_ago: float) -> dict[str, str]:
    return {"created_at": (T0 - minutes_ago * MINUTE).isoformat()}


def evaluate(at: dt.datetime = T0) -> alerts.EvaluationSummary:
    return alerts.evaluate_alerts(now=at)


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Webhook deliveries enqueued (never sent to a broker in tests)."""
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.deliver_alert_webhook, "delay", lambda *args: sent.append(args))
    return sent


# --- SLA projected below target -----------------------------------------------------------------


def test_a_customer_projected_below_target_gets_one_alert_with_its_figures(caplog: Any) -> None:
    customer, campaign = sla_customer()
    with time_machine.travel(T0, tick=False):
        served, _missed = add_leads(campaign, created(60), created(60))
        call(served, T0 - 50 * MINUTE)
        with caplog.at_level(logging.WARNING, logger="prioritization.alerts"):
            summary = evaluate()
    alert = Alert.objects.get()
    assert summary.opened == [alert.pk]
    assert (alert.kind, alert.customer_id, alert.campaign_id) == (AlertKind.SLA_AT_RISK, customer.pk, None)
    assert alert.opened_at == alert.checked_at == T0
    assert alert.closed_at is None
    assert alert.detail["attainment"] == 0.5
    assert alert.detail["projected_attainment"] == 0.5
    assert alert.detail["target"] == 0.9
    assert (alert.detail["in_sla"], alert.detail["missed"]) == (1, 1)
    assert "Acme: projected SLA attainment today 50% is below the target 90%" in alert.message
    assert f"Alert {alert.pk} opened: Acme" in caplog.text


def test_the_same_condition_keeps_its_one_alert_and_refreshes_its_figures() -> None:
    _, campaign = sla_customer()
    with time_machine.travel(T0, tick=False):
        served, _missed = add_leads(campaign, created(60), created(60))
        call(served, T0 - 50 * MINUTE)
        first = evaluate()
        add_lead(campaign, **created(45))  # another miss
        second = evaluate(T0 + MINUTE)
        third = evaluate(T0 + 2 * MINUTE)
    alert = Alert.objects.get()
    assert first.opened == [alert.pk]
    assert second.opened == third.opened == []
    assert second.kept == third.kept == [alert.pk]
    assert alert.opened_at == T0
    assert alert.checked_at == T0 + 2 * MINUTE
    assert alert.detail["missed"] == 2
    assert "33%" in alert.message


def test_the_alert_closes_when_the_projection_is_back_and_a_new_fall_opens_a_new_one(caplog: Any) -> None:
    _, campaign = sla_customer(target=0.5)
    with time_machine.travel(T0, tick=False):
        add_leads(campaign, created(60))
        opened = evaluate()
        for lead in add_leads(campaign, created(20), created(20)):
            call(lead, T0 - 10 * MINUTE)
        with caplog.at_level(logging.INFO, logger="prioritization.alerts"):
            cleared = evaluate(T0 + MINUTE)
        add_leads(campaign, created(50), created(50))
        again = evaluate(T0 + 2 * MINUTE)
    first, second = Alert.objects.order_by("pk")
    assert opened.opened == [first.pk]
    assert cleared.closed == [first.pk]
    assert first.closed_at == T0 + MINUTE
    assert f"Alert {first.pk} cleared" in caplog.text
    assert again.opened == [second.pk]
    assert second.closed_at is None


def test_exactly_at_target_or_without_live_leads_today_there_is_no_alert() -> None:
    _, campaign = sla_customer(target=0.5)
    sla_customer(name="Quiet")
    with time_machine.travel(T0, tick=False):
        served, _missed = add_leads(campaign, created(60), created(60))
        call(served, T0 - 45 * MINUTE)
        add_lead(campaign, lead_type="stale", **created(60))  # sent as stale: never counted
        # Yesterday's misses are yesterday's.
        add_leads(campaign, {"created_at": (T0 - dt.timedelta(days=1)).isoformat()})
        assert evaluate().opened == []


def test_leads_at_risk_count_as_misses_in_the_projection() -> None:
    # Each customer: 1 lead in SLA, 2 on track, and one more created 21 (Tight) or 19 (Easy)
    # minutes ago: with a 30-minute window and 10 protected minutes, Tight's is at risk.
    for name, age in (("Tight", 21), ("Easy", 19)):
        _, campaign = sla_customer(name=name, target=0.8)
        with time_machine.travel(T0, tick=False):
            served, *_ = add_leads(campaign, created(60), created(5), created(5), created(age))
            call(served, T0 - 50 * MINUTE)
    summary = evaluate()
    alert = Alert.objects.get()
    assert summary.opened == [alert.pk]
    assert alert.customer.name == "Tight"
    assert alert.detail["at_risk"] == 1
    assert alert.detail["pending"] == 2
    assert alert.detail["projected_attainment"] == 0.75
    assert alert.detail["attainment"] == 1.0


def test_each_evaluation_keeps_every_customers_figures_of_today_for_the_metrics() -> None:
    customer, campaign = sla_customer()
    quiet, _ = sla_customer(name="Quiet")
    with time_machine.travel(T0, tick=False):
        served, _missed = add_leads(campaign, created(60), created(60))
        call(served, T0 - 50 * MINUTE)
        evaluate()
        add_lead(campaign, **created(1))
        evaluate(T0 + MINUTE)
    snapshot = SlaSnapshot.objects.get(customer=customer)
    assert (snapshot.in_sla, snapshot.missed, snapshot.pending, snapshot.at_risk) == (1, 1, 1, 0)
    assert (snapshot.target, snapshot.computed_at) == (0.9, T0 + MINUTE)
    assert SlaSnapshot.objects.get(customer=quiet).pending == 0
    assert SlaSnapshot.objects.count() == 2


# --- Empty queues asked for ------------------------------------------------------------------------


def asked(campaign: Campaign, at: dt.datetime, empty_at: dt.datetime | None = None) -> None:
    CampaignDemand.objects.update_or_create(
        campaign=campaign, defaults={"last_asked_at": at, "last_empty_at": empty_at}
    )


def test_a_campaign_asked_for_with_nothing_to_call_opens_an_empty_queue_alert() -> None:
    customer = CustomerFactory(name="Acme")
    campaign = campaign_calling_all_day(customer, name="Spring")
    asked(campaign, T0 - MINUTE, empty_at=T0 - MINUTE)
    summary = evaluate()
    alert = Alert.objects.get()
    assert summary.opened == [alert.pk]
    assert (alert.kind, alert.customer_id, alert.campaign_id) == (
        AlertKind.EMPTY_QUEUE,
        customer.pk,
        campaign.pk,
    )
    assert (
        alert.message
        == "Acme / Spring: contractors ask for this campaign (last at 09:59 UTC) and it has no lead to call"
    )
    assert alert.detail == {
        "last_asked_at": (T0 - MINUTE).isoformat(),
        "last_empty_at": (T0 - MINUTE).isoformat(),
    }


def test_a_campaign_with_a_lead_to_call_now_is_not_empty(make_contractor: Any) -> None:
    customer = CustomerFactory()
    set_policy(customer, lease_seconds=60)
    ready, waiting_due, expired, later, closed = (campaign_calling_all_day(customer) for _ in range(5))
    with time_machine.travel(T0 - 10 * MINUTE, tick=False):
        add_lead(ready)
        add_lead(waiting_due, rescheduled_at=(T0 - MINUTE).isoformat())
        add_lead(expired)
        claim_next_lead(contractor_id=make_contractor(expired).pk, campaign_ids=[expired.pk])
        add_lead(later, rescheduled_at=(T0 + MINUTE).isoformat())
        done = add_lead(closed)
        call(done, T0 - 9 * MINUTE)
    for campaign in (ready, waiting_due, expired, later, closed):
        asked(campaign, T0)
    assert Lead.objects.get(campaign=waiting_due).status == QueueStatus.WAITING  # not woken yet
    evaluate()
    assert set(Alert.objects.values_list("campaign_id", flat=True)) == {later.pk, closed.pk}


def test_only_recent_demand_on_active_campaigns_raises_and_an_alert_clears_when_demand_stops() -> None:
    customer = CustomerFactory()
    recent, old, inactive = (
        campaign_calling_all_day(customer),
        campaign_calling_all_day(customer),
        campaign_calling_all_day(customer),
    )
    inactive.active = False
    inactive.save()
    asked(recent, T0 - dt.timedelta(seconds=alerts.DEMAND_WINDOW_SECONDS))
    asked(old, T0 - dt.timedelta(seconds=alerts.DEMAND_WINDOW_SECONDS + 1))
    asked(inactive, T0)
    evaluate()
    alert = Alert.objects.get()
    assert alert.campaign_id == recent.pk
    summary = evaluate(T0 + dt.timedelta(seconds=1))
    assert summary.closed == [alert.pk]


def test_an_empty_queue_alert_clears_when_a_lead_arrives() -> None:
    campaign = campaign_calling_all_day(CustomerFactory())
    asked(campaign, T0)
    evaluate()
    with time_machine.travel(T0, tick=False):
        add_lead(campaign)
    assert evaluate(T0 + MINUTE).closed == [Alert.objects.get().pk]


# --- No storms --------------------------------------------------------------------------------------


def test_the_database_refuses_a_second_open_alert_for_one_condition() -> None:
    customer = CustomerFactory()
    values = {"kind": AlertKind.SLA_AT_RISK, "customer": customer, "opened_at": T0, "checked_at": T0}
    Alert.objects.create(message="first", **values)
    Alert.objects.create(message="closed one", closed_at=T0, **values)  # closed alerts may repeat
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(message="second", **values)


def test_an_evaluation_running_elsewhere_makes_a_second_one_skip() -> None:
    asked(campaign_calling_all_day(CustomerFactory()), T0)
    with psycopg.connect(**{**connection.get_connection_params(), "autocommit": True}) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [alerts.ALERT_LOCK_KEY])
        assert evaluate().skipped is True
        assert not Alert.objects.exists()
        assert not SlaSnapshot.objects.exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [alerts.ALERT_LOCK_KEY])
    assert evaluate().opened


def test_an_evaluation_overtaken_by_a_later_one_does_not_apply_what_it_read(monkeypatch: Any) -> None:
    # A reads its conditions (the queue empty), then B runs to the end (a lead arrived: B
    # closes the alert), then A takes the lock: applying what it read reopened the alert.
    campaign = campaign_calling_all_day(CustomerFactory())
    asked(campaign, T0)
    (first,) = evaluate(T0).opened
    read = alerts.current_conditions

    def overtaken(*, now: dt.datetime, outlooks: Any) -> Any:
        conditions = read(now=now, outlooks=outlooks)
        with time_machine.travel(T0 + 1.5 * MINUTE, tick=False):
            add_lead(campaign)
        monkeypatch.setattr(alerts, "current_conditions", read)
        assert evaluate(T0 + 1.5 * MINUTE).closed == [first]  # B
        return conditions

    monkeypatch.setattr(alerts, "current_conditions", overtaken)
    summary = evaluate(T0 + MINUTE)  # A

    assert summary.skipped is True
    assert not Alert.objects.filter(closed_at__isnull=True).exists()


def test_the_beat_task_evaluates_every_minute() -> None:
    (schedule,) = [s for s in SCHEDULES if s.task == "prioritization.tasks.evaluate_alerts"]
    assert schedule.every_seconds == 60
    asked(campaign_calling_all_day(CustomerFactory()), dt.datetime.now(dt.UTC))
    summary = tasks.evaluate_alerts()
    assert summary["opened"] == [Alert.objects.get().pk]


# --- Webhooks -----------------------------------------------------------------------------------------


class FakeReceiver(requests.adapters.BaseAdapter):
    """Answers with the given statuses (or raises the given exceptions) in turn; the last repeats."""

    def __init__(self, outcomes: tuple[int | Exception, ...]) -> None:
        super().__init__()
        self.outcomes = list(outcomes)
        self.requests: list[tuple[requests.PreparedRequest, dict[str, Any]]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append((request, kwargs))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        response = requests.Response()
        response.status_code = outcome
        response.request = request
        response.url = request.url or ""
        response._content = b"{}"
        return response

    def close(self) -> None:
        pass

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.body or b"") for request, _ in self.requests]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeReceiver]:
    def install(*outcomes: int | Exception) -> FakeReceiver:
        fake = FakeReceiver(outcomes)

        def session() -> requests.Session:
            http = requests.Session()
            http.mount("http://", fake)
            http.mount("https://", fake)
            return http

        monkeypatch.setattr(alerts, "webhook_session", session)
        return fake

    return install


def open_empty_queue_alert(webhook: str = HOOK) -> Alert:
    customer = CustomerFactory(name="Acme", alert_webhook_url=webhook)
    campaign = campaign_calling_all_day(customer, name="Spring")
    asked(campaign, T0)
    evaluate()
    return Alert.objects.get()


def test_opening_and_clearing_enqueue_webhooks_on_commit_only_for_customers_with_a_url(
    django_capture_on_commit_callbacks: Any, no_broker: list[tuple[int, str]]
) -> None:
    with_hook = campaign_calling_all_day(CustomerFactory(alert_webhook_url=HOOK))
    without = campaign_calling_all_day(CustomerFactory())
    asked(with_hook, T0)
    asked(without, T0)
    with django_capture_on_commit_callbacks() as callbacks:
        evaluate()
        assert no_broker == []  # nothing leaves before the commit
    assert len(callbacks) == 1
    for callback in callbacks:
        callback()
    hooked = Alert.objects.get(campaign=with_hook)
    assert no_broker == [(hooked.pk, "opened")]
    assert hooked.opened_webhook == WebhookState.PENDING
    assert Alert.objects.get(campaign=without).opened_webhook == WebhookState.NONE

    with django_capture_on_commit_callbacks(execute=True):
        evaluate(T0 + dt.timedelta(seconds=alerts.DEMAND_WINDOW_SECONDS + 1))
    assert no_broker == [(hooked.pk, "opened"), (hooked.pk, "resolved")]
    hooked.refresh_from_db()
    assert hooked.resolved_webhook == WebhookState.PENDING
    assert Alert.objects.get(campaign=without).resolved_webhook == WebhookState.NONE


def test_the_webhook_posts_the_alert_as_json_once(receiver: Callable[..., FakeReceiver]) -> None:
    alert = open_empty_queue_alert()
    fake = receiver(200)
    with time_machine.travel(T0 + MINUTE, tick=False):
        assert alerts.deliver_alert_webhook(alert_id=alert.pk, event="opened") == WebhookState.DELIVERED
    (request, kwargs) = fake.requests[0]
    assert request.method == "POST"
    assert request.url == HOOK
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == alerts.USER_AGENT
    assert kwargs["timeout"] == settings.LEADRANK_ALERT_WEBHOOK_TIMEOUT_SECONDS
    assert fake.bodies[0] == {
        "event": "alert.opened",
        "sent_at": (T0 + MINUTE).isoformat(),
        "alert": {
            "id": alert.pk,
            "kind": "empty_queue",
            "customer_id": alert.customer_id,
            "customer": "Acme",
            "campaign_id": alert.campaign_id,
            "campaign": "Spring",
            "message": alert.message,
            "opened_at": T0.isoformat(),
            "closed_at": None,
            "detail": alert.detail,
        },
    }
    alert.refresh_from_db()
    assert alert.opened_webhook == WebhookState.DELIVERED
    # A second delivery of the same event (a redelivered task) sends nothing.
    assert alerts.deliver_alert_webhook(alert_id=alert.pk, event="opened") == "skipped"
    assert len(fake.requests) == 1


def test_a_cleared_alert_posts_a_resolved_event(receiver: Callable[..., FakeReceiver]) -> None:
    alert = open_empty_queue_alert()
    evaluate(T0 + dt.timedelta(hours=1))
    fake = receiver(204)
    assert tasks.deliver_alert_webhook(alert.pk, "resolved")["state"] == WebhookState.DELIVERED
    body = fake.bodies[0]
    assert body["event"] == "alert.resolved"
    assert body["alert"]["closed_at"] == (T0 + dt.timedelta(hours=1)).isoformat()


def test_a_server_error_or_timeout_is_retried_then_delivered(receiver: Callable[..., FakeReceiver]) -> None:
    alert = open_empty_queue_alert()
    cut = requests.exceptions.ChunkedEncodingError("connection broken while the answer was read")
    fake = receiver(503, requests.ConnectTimeout("slow"), 429, requests.ConnectionError("refused"), cut, 200)
    result = tasks.deliver_alert_webhook.apply(args=[alert.pk, "opened"]).get()
    assert result["state"] == WebhookState.DELIVERED
    assert len(fake.requests) == 6
    alert.refresh_from_db()
    assert alert.opened_webhook == WebhookState.DELIVERED


def test_a_webhook_that_keeps_failing_is_given_up_after_the_retries(
    receiver: Callable[..., FakeReceiver],
) -> None:
    alert = open_empty_queue_alert()
    fake = receiver(500)
    result = tasks.deliver_alert_webhook.apply(args=[alert.pk, "opened"]).get()
    assert result["state"] == WebhookState.FAILED
    assert len(fake.requests) == 1 + alerts.WEBHOOK_RETRIES
    alert.refresh_from_db()
    assert alert.opened_webhook == WebhookState.FAILED
    assert alert.webhook_error == "HTTP 500 from https://hooks.example.com"
    assert alert.closed_at is None  # the alert itself is untouched


SECRET_HOOK = "https://bot:pa55@hooks.example.com/T0/B0/s3cret-token?sig=abc123"


REFUSED = requests.ConnectionError(
    "HTTPSConnectionPool(host='hooks.example.com', port=443): "
    "Max retries exceeded with url: /T0/B0/s3cret-token?sig=abc123"
)


@pytest.mark.parametrize("outcome", [404, REFUSED])
def test_a_webhook_error_keeps_no_part_of_the_url_that_may_be_its_secret(
    receiver: Callable[..., FakeReceiver], outcome: int | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    # Errors are kept on the alert (shown to whoever may view alerts) and logged: the path,
    # query and credentials of a webhook URL are often the receiver's secret.
    alert = open_empty_queue_alert(SECRET_HOOK)
    receiver(*[outcome] * (1 + alerts.WEBHOOK_RETRIES))

    tasks.deliver_alert_webhook.apply(args=[alert.pk, "opened"]).get()

    alert.refresh_from_db()
    assert alert.opened_webhook == WebhookState.FAILED
    assert "hooks.example.com" in alert.webhook_error
    for secret in ("s3cret-token", "abc123", "pa55", "bot:"):
        assert secret not in alert.webhook_error
        assert secret not in caplog.text


def test_a_secret_path_is_left_out_as_requests_quotes_it_too() -> None:
    # requests names the URL in its errors percent-encoded ("{" as "%7B"), not as written.
    url = "http://hooks.invalid/services/T0/B0/s3cr{et}tok^en"
    error = "HTTPConnectionPool(host='hooks.invalid', port=80): Max retries exceeded with url: "

    for quoted in ("/services/T0/B0/s3cr%7Bet%7Dtok%5Een", url):
        shown = alerts.without_url_secrets(error + quoted, url)
        assert "s3cr" not in shown
        assert "hooks.invalid" in shown


def test_a_client_error_is_not_retried(receiver: Callable[..., FakeReceiver]) -> None:
    alert = open_empty_queue_alert()
    fake = receiver(404)
    assert tasks.deliver_alert_webhook.apply(args=[alert.pk, "opened"]).get()["state"] == WebhookState.FAILED
    assert len(fake.requests) == 1


def test_retry_delays_grow_and_are_capped() -> None:
    delays = [alerts.webhook_retry_delay(n) for n in range(alerts.WEBHOOK_RETRIES + 2)]
    assert delays == [30, 60, 120, 240, 480, 600, 600]


def test_a_url_removed_since_the_alert_opened_sends_nothing(receiver: Callable[..., FakeReceiver]) -> None:
    alert = open_empty_queue_alert()
    Customer.objects.filter(pk=alert.customer_id).update(alert_webhook_url="")
    fake = receiver(200)
    assert alerts.deliver_alert_webhook(alert_id=alert.pk, event="opened") == WebhookState.NONE
    assert fake.requests == []


def test_a_broker_that_is_down_marks_the_delivery_failed_without_breaking_the_evaluation(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    def broker_down(*args: object) -> None:
        raise KombuOperationalError("Connection refused")

    monkeypatch.setattr(tasks.deliver_alert_webhook, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        alert = open_empty_queue_alert()
    alert.refresh_from_db()
    assert alert.closed_at is None
    assert alert.opened_webhook == WebhookState.FAILED
    assert "Could not enqueue" in alert.webhook_error


def test_webhook_urls_must_be_http_or_https(admin_client: Client) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomerFactory(alert_webhook_url="javascript:alert(1)")
    response = admin_client.post(
        "/admin/leads/customer/add/",
        {
            "name": "Acme",
            "pricing_plan": "pro",
            "created_at_0": "2026-11-24",
            "created_at_1": "10:00:00",
            "alert_webhook_url": "ftp://files.example.com/hook",
        },
    )
    assert response.status_code == 200
    assert "alert_webhook_url" in response.context["adminform"].form.errors
    assert not Customer.objects.filter(name="Acme").exists()


# --- The banner ---------------------------------------------------------------------------------------


def test_open_alerts_are_shown_on_every_admin_page_to_staff_only(
    admin_client: Client, client: Client
) -> None:
    alert = open_empty_queue_alert()
    Alert.objects.create(
        kind=AlertKind.SLA_AT_RISK,
        customer_id=alert.customer_id,
        opened_at=T0,
        checked_at=T0,
        closed_at=T0,
        message="An old alert that has cleared",
    )
    for page in ("/admin/", "/admin/leads/lead/", "/admin/prioritization/prioritypolicy/"):
        html = admin_client.get(page).content.decode()
        assert 'id="alert-banner"' in html, page
        assert alert.message in html
        assert f"/admin/prioritization/alert/{alert.pk}/change/" in html
        assert "An old alert that has cleared" not in html
    login = client.get("/admin/login/").content.decode()
    assert 'id="alert-banner"' not in login
    assert alert.message not in login


def test_the_banner_shows_the_newest_alerts_and_links_to_the_rest(admin_client: Client) -> None:
    customer = CustomerFactory()
    for minute in range(7):
        campaign = campaign_calling_all_day(customer, name=f"Campaign {minute}")
        Alert.objects.create(
            kind=AlertKind.EMPTY_QUEUE,
            customer=customer,
            campaign=campaign,
            opened_at=T0 + minute * MINUTE,
            checked_at=T0,
            message=f"queue {minute} is empty",
        )
    html = admin_client.get("/admin/").content.decode()
    assert "queue 6 is empty" in html
    assert "queue 2 is empty" in html
    assert "queue 1 is empty" not in html
    assert "and 2 more" in html
    assert "/admin/prioritization/alert/?state=open" in html


def test_no_banner_without_open_alerts(admin_client: Client) -> None:
    assert 'id="alert-banner"' not in admin_client.get("/admin/").content.decode()


def test_the_alert_admin_lists_open_alerts_read_only(admin_client: Client) -> None:
    alert = open_empty_queue_alert()
    listing = admin_client.get("/admin/prioritization/alert/?state=open")
    assert listing.status_code == 200
    assert alert.message in listing.content.decode()
    assert admin_client.get(f"/admin/prioritization/alert/{alert.pk}/change/").status_code == 200
    assert admin_client.get("/admin/prioritization/alert/add/").status_code == 403
    assert list(listing.context["cl"].result_list) == [alert]
    closed = admin_client.get("/admin/prioritization/alert/?state=closed")
    assert list(closed.context["cl"].result_list) == []
