"""The admin's simulator screen: the form (the policy form's fields), a run recorded and
enqueued on commit, the Celery task called directly (no eager mode), the table and the
chart when it is done, and failures shown as admin messages."""

import datetime as dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from leads.models import Customer
from prioritization import admin_preview, tasks
from prioritization.models import (
    PolicyVersion,
    SimulationRun,
    SimulationStatus,
    version_values,
)
from prioritization.scoring import FIFO
from prioritization.simulation.runs import REPEAT_WINDOW, RESEND_AFTER, RUN_TIME_BOUND
from tests.factories import CustomerFactory
from tests.prioritization.conftest import set_policy
from tests.prioritization.simulation_builders import write_data_dir
from tests.prioritization.test_policy_review import model_of

pytestmark = pytest.mark.django_db

START = reverse("admin:prioritization_simulationrun_add")
RUNS = reverse("admin:prioritization_simulationrun_changelist")


def run_url(run: SimulationRun) -> str:
    return reverse("admin:prioritization_simulationrun_change", args=[run.pk])


def chart_url(run: SimulationRun) -> str:
    return reverse("admin:prioritization_simulationrun_chart", args=[run.pk])


def form_data(chosen: Customer, **changes: Any) -> dict[str, Any]:
    """What the browser posts: the default settings, a small scenario, then ``changes``."""
    data: dict[str, Any] = {
        "customer": chosen.pk,
        "contractors": 3,
        "start": "2026-02-09 08:00",
        "days": 0.1,
        "seed": 1,
    }
    for name, value in version_values(PolicyVersion()).items():
        data[name] = json.dumps(value) if isinstance(value, dict) else ("" if value is None else value)
    data.update(changes)
    return data


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run ids handed to the broker."""
    ids: list[int] = []
    monkeypatch.setattr(tasks.run_simulation, "delay", ids.append)
    return ids


def test_the_form_starts_the_draft_from_the_customers_policy_in_force(admin_client: Client) -> None:
    customer = CustomerFactory()
    set_policy(customer, sla_protect_minutes=17.0, source_weights={"Google": 1.5})
    page = admin_client.get(START, {"customer": customer.pk})
    assert page.status_code == 200
    form = page.context["form"]
    assert form.initial["customer"] == customer.pk
    assert form.initial["sla_protect_minutes"] == 17.0
    assert form.initial["source_weights"] == {"Google": 1.5}
    assert b"Run the comparison" in page.content
    # Without a customer (or with nonsense) the draft starts from the default policy.
    for query in ({}, {"customer": "x"}, {"customer": "99999999999999999999"}):
        assert admin_client.get(START, query).context["form"].initial["sla_protect_minutes"] == 10.0


def test_starting_a_comparison_records_the_run_and_enqueues_it_on_commit(
    admin_client: Client, sent: list[int], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    customer = CustomerFactory()
    active = set_policy(customer, sla_protect_minutes=15.0)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(START, form_data(customer, sla_protect_minutes=20, stale_every=5))
    run = SimulationRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == run_url(run)
    assert sent == []  # nothing leaves before the commit
    assert run.sent_at is None
    for callback in callbacks:
        callback()
    assert sent == [run.pk]
    run.refresh_from_db()
    assert run.sent_at is not None  # when the sweep sends it again if no worker takes it
    assert run.status == SimulationStatus.QUEUED
    assert run.customer == customer
    assert run.created_by is not None
    assert (run.draft["sla_protect_minutes"], run.draft["stale_every"]) == (20.0, 5)
    assert run.active["sla_protect_minutes"] == 15.0
    assert run.active_label == f"{active.policy} v{active.number}"
    assert run.parameters["contractors"] == 3
    assert run.parameters["start"].startswith("2026-02-09T08:00")
    page = admin_client.get(run_url(run))
    assert page.status_code == 200
    assert b'data-status="queued"' in page.content
    assert b'http-equiv="refresh"' in page.content
    assert b"sla_protect_minutes" in page.content  # what the draft changes


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sla_target": 2}, "sla_target"),
        ({"source_weights": '{"Google": 1000}'}, None),
        ({"contractors": 0}, "contractors"),
        ({"days": 100}, "days"),
        ({"start": "tomorrow"}, "start"),
        ({"start": "9999-12-31 23:00"}, "start"),
        ({"customer": 999999}, "customer"),
    ],
)
def test_a_bad_draft_or_scenario_is_a_form_error_and_starts_nothing(
    admin_client: Client, sent: list[int], changes: dict[str, Any], field: str | None
) -> None:
    customer = CustomerFactory()
    response = admin_client.post(START, form_data(customer, **changes))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert (field in errors) if field else errors
    assert not SimulationRun.objects.exists()
    assert sent == []


def test_the_same_form_posted_twice_starts_one_run_and_shows_it_again(
    admin_client: Client, sent: list[int], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    customer = CustomerFactory()
    data = form_data(customer, sla_protect_minutes=20)
    with django_capture_on_commit_callbacks(execute=True):
        first = admin_client.post(START, data)
        again = admin_client.post(START, data, follow=True)  # a double click

    run = SimulationRun.objects.get()
    assert first["Location"] == run_url(run)
    assert again.redirect_chain == [(run_url(run), 302)]
    shown = [str(message) for message in get_messages(again.wsgi_request)]
    assert f"You already started this comparison (simulation {run.pk}, queued)" in " ".join(shown)
    assert sent == [run.pk]
    # Running, it is still the same comparison.
    SimulationRun.objects.filter(pk=run.pk).update(status=SimulationStatus.RUNNING)
    assert admin_client.post(START, data)["Location"] == run_url(run)
    assert SimulationRun.objects.count() == 1


def test_another_scenario_draft_or_user_or_a_finished_run_starts_a_new_comparison(
    admin_client: Client, client: Client, sent: list[int], django_user_model: Any
) -> None:
    customer = CustomerFactory()
    data = form_data(customer)
    admin_client.post(START, data)
    for changes in ({"seed": 2}, {"days": 0.2}, {"contractors": 4}, {"sla_protect_minutes": 20}):
        admin_client.post(START, {**data, **changes})
    admin_client.post(START, form_data(CustomerFactory()))
    other = django_user_model.objects.create_superuser("other", "other@example.com", "pw")
    client.force_login(other)
    client.post(START, data)
    assert SimulationRun.objects.count() == 7
    # Once the first is done and the double-click window has passed, asking again runs it again.
    SimulationRun.objects.update(
        status=SimulationStatus.DONE, created_at=timezone.now() - REPEAT_WINDOW - dt.timedelta(seconds=1)
    )
    admin_client.post(START, data)
    assert SimulationRun.objects.count() == 8


def test_the_same_run_asked_for_again_seconds_after_it_failed_is_shown_not_run_again(
    admin_client: Client, sent: list[int]
) -> None:
    data = form_data(CustomerFactory())
    admin_client.post(START, data)
    run = SimulationRun.objects.get()
    SimulationRun.objects.filter(pk=run.pk).update(status=SimulationStatus.FAILED)

    assert admin_client.post(START, data)["Location"] == run_url(run)
    assert SimulationRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_double_click_reaching_two_web_workers_at_once_starts_one_run(
    admin_user: Any, sent: list[int]
) -> None:
    # The second POST arrives while the first has looked for an identical run and not yet
    # recorded its own: it must wait for the first to commit, then find that run.
    data = form_data(CustomerFactory())
    first_looked, second_looked = threading.Event(), threading.Event()
    responses: dict[str, Any] = {}
    errors: list[BaseException] = []
    params = connection.get_connection_params()

    def looked_for_a_run(sql: str) -> bool:
        return sql.startswith("SELECT") and 'FROM "prioritization_simulationrun"' in sql

    def wait_for_the_second() -> None:
        # Until the second request waits for a lock, or (without one) has looked too.
        with psycopg.connect(**params, autocommit=True) as watcher:
            for _ in range(1000):
                (blocked,) = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchone()
                if blocked or second_looked.wait(timeout=0.01):
                    return

    def post(name: str) -> None:
        def pause(execute, sql, sql_params, many, context):  # type: ignore[no-untyped-def]
            result = execute(sql, sql_params, many, context)
            if looked_for_a_run(sql):
                if name == "first" and not first_looked.is_set():
                    first_looked.set()
                    wait_for_the_second()
                elif name == "second":
                    second_looked.set()
            return result

        browser = Client()
        browser.force_login(admin_user)
        try:
            with connection.execute_wrapper(pause):
                responses[name] = browser.post(START, data)
        except BaseException as exc:
            errors.append(exc)
        finally:
            first_looked.set()  # (a first request that never looked lets the second go)
            connection.close()

    first = threading.Thread(target=post, args=("first",))
    first.start()
    assert first_looked.wait(timeout=30)
    second = threading.Thread(target=post, args=("second",))
    second.start()
    first.join()
    second.join()

    assert not errors
    run = SimulationRun.objects.get()
    assert responses["first"]["Location"] == responses["second"]["Location"] == run_url(run)
    assert sent == [run.pk]


def test_an_unreachable_broker_fails_the_run_with_a_message(
    admin_client: Client,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    def unreachable(run_id: int) -> None:
        raise BrokerError("connection refused")

    monkeypatch.setattr(tasks.run_simulation, "delay", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(START, form_data(CustomerFactory()))
    run = SimulationRun.objects.get()
    assert run.status == SimulationStatus.FAILED
    assert "could not be reached" in run.message
    page = admin_client.get(run_url(run))
    shown = [str(message) for message in get_messages(page.wsgi_request)]
    assert any("The simulation failed" in message and "could not be reached" in message for message in shown)


def test_the_task_runs_the_comparison_and_the_page_shows_the_table_and_chart(
    admin_client: Client, sent: list[int], tmp_path: Path, settings: Any
) -> None:
    settings.LEADRANK_DATA_DIR = write_data_dir(tmp_path / "data")
    customer = CustomerFactory()
    admin_client.post(START, form_data(customer, sla_protect_minutes=20))
    run = SimulationRun.objects.get()

    assert tasks.run_simulation(run.pk) == {"run_id": run.pk, "status": SimulationStatus.DONE}

    run.refresh_from_db()
    assert run.status == SimulationStatus.DONE
    assert run.finished_at is not None
    names = [policy["name"] for policy in run.results["policies"]]
    assert names == ["FIFO", "in force", "draft"]
    assert "vs FIFO" in run.message
    page = admin_client.get(run_url(run))
    assert page.status_code == 200
    assert b'http-equiv="refresh"' not in page.content
    assert b'id="simulation-table"' in page.content
    assert b"expected conversions" in page.content
    assert b"Landing Pages Ltd" in page.content
    chart = admin_client.get(chart_url(run))
    assert chart["Content-Type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG")
    listing = admin_client.get(RUNS)
    assert listing.status_code == 200
    assert b"vs FIFO" in listing.content
    # A second delivery of the message does not run it again.
    assert tasks.run_simulation(run.pk)["status"] == "skipped"


def test_a_run_that_cannot_be_simulated_fails_with_a_message_on_its_page(
    admin_client: Client, sent: list[int], tmp_path: Path, settings: Any
) -> None:
    settings.LEADRANK_DATA_DIR = write_data_dir(tmp_path / "data")
    admin_client.post(
        START, form_data(CustomerFactory(), start="2026-02-20 08:00")
    )  # no calls that day in the test log
    run = SimulationRun.objects.get()
    assert tasks.run_simulation(run.pk)["status"] == SimulationStatus.FAILED
    run.refresh_from_db()
    assert run.status == SimulationStatus.FAILED
    assert "no calls between" in run.message
    page = admin_client.get(run_url(run))
    assert any("no calls between" in str(m) for m in get_messages(page.wsgi_request))
    assert admin_client.get(chart_url(run)).status_code == 404


def test_fifo_in_the_comparison_keeps_the_rules_of_the_policy_in_force(
    admin_client: Client, sent: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = CustomerFactory()
    set_policy(customer, reschedule_limit=1, lease_seconds=300)
    admin_client.post(START, form_data(customer))
    run = SimulationRun.objects.get()
    seen: dict[str, Any] = {}

    def compare(**kwargs: Any) -> Any:
        seen.update({entry.name: entry.values for entry in kwargs["entries"]})
        raise ValueError("stop here")

    monkeypatch.setattr("prioritization.simulation.runs.compare_policies", compare)
    assert tasks.run_simulation(run.pk)["status"] == SimulationStatus.FAILED
    assert seen["FIFO"]["ordering"] == FIFO
    assert (seen["FIFO"]["reschedule_limit"], seen["FIFO"]["lease_seconds"]) == (1, 300)
    assert seen["in force"]["ordering"] != FIFO


def test_the_sweep_fails_runs_whose_worker_died_and_sends_again_those_no_worker_took(
    sent: list[int],
) -> None:
    now = timezone.now()
    customer = CustomerFactory()

    def run(status: str, **times: dt.timedelta) -> SimulationRun:
        return SimulationRun.objects.create(
            customer=customer, status=status, **{field: now - ago for field, ago in times.items()}
        )

    dead = run(SimulationStatus.RUNNING, started_at=RUN_TIME_BOUND + dt.timedelta(minutes=1))
    slow = run(SimulationStatus.RUNNING, started_at=RUN_TIME_BOUND - dt.timedelta(minutes=1))
    lost = run(SimulationStatus.QUEUED, sent_at=RESEND_AFTER + dt.timedelta(minutes=1))
    never_sent = run(SimulationStatus.QUEUED, created_at=RESEND_AFTER + dt.timedelta(minutes=1))
    waiting = run(SimulationStatus.QUEUED, sent_at=RESEND_AFTER - dt.timedelta(minutes=1))
    done = run(SimulationStatus.DONE, started_at=RUN_TIME_BOUND * 2)

    assert tasks.sweep_simulation_runs() == {"failed": 1, "sent_again": 2}

    dead.refresh_from_db()
    assert dead.status == SimulationStatus.FAILED
    assert dead.finished_at is not None
    assert "no result within 2.2 hours" in dead.message
    assert sorted(sent) == sorted([lost.pk, never_sent.pk])
    for again in (lost, never_sent):
        again.refresh_from_db()
        assert again.status == SimulationStatus.QUEUED
        assert again.sent_at >= now
    for untouched, status in (
        (slow, SimulationStatus.RUNNING),
        (waiting, SimulationStatus.QUEUED),
        (done, SimulationStatus.DONE),
    ):
        assert SimulationRun.objects.get(pk=untouched.pk).status == status
    assert tasks.sweep_simulation_runs() == {"failed": 0, "sent_again": 0}
    # Whichever copy of a message sent twice a worker takes first runs it; the other finds
    # it no longer queued.
    SimulationRun.objects.filter(pk=lost.pk).update(status=SimulationStatus.RUNNING)
    assert tasks.run_simulation(lost.pk)["status"] == "skipped"


def test_a_run_the_broker_refuses_to_take_again_stays_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(run_id: int) -> None:
        raise BrokerError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(tasks.run_simulation, "delay", unreachable)
    run = SimulationRun.objects.create(
        customer=CustomerFactory(),
        status=SimulationStatus.QUEUED,
        sent_at=timezone.now() - RESEND_AFTER - dt.timedelta(minutes=1),
    )

    assert tasks.sweep_simulation_runs() == {"failed": 0, "sent_again": 0}

    run.refresh_from_db()
    assert (run.status, run.message) == (SimulationStatus.QUEUED, "")


def test_runs_are_read_only_records(admin_client: Client) -> None:
    run = SimulationRun.objects.create(customer=CustomerFactory())
    assert admin_client.get(RUNS).status_code == 200
    assert admin_client.post(run_url(run), {}).status_code == 200  # the page, never a save
    assert (
        admin_client.get(reverse("admin:prioritization_simulationrun_change", args=[987654])).status_code
        == 404
    )


def test_the_simulator_needs_a_staff_login(client: Client) -> None:
    response = client.get(START)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_the_admin_index_links_to_the_simulator(admin_client: Client) -> None:
    page = admin_client.get(reverse("admin:index"))
    assert b'id="policy-simulator-link"' in page.content
    assert START.encode() in page.content


def test_the_form_offers_the_newest_models_and_the_one_the_draft_starts_from(
    admin_client: Client, sent: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model ever trained was an option (20,000 models: a 1.6 MB page in 4.8 s)."""
    monkeypatch.setattr(admin_preview, "LEARNED_MODEL_CHOICES", 3)
    customer = CustomerFactory()
    in_use, *newer = (model_of(customer) for _ in range(5))  # same trained_at: newest by id
    set_policy(customer, weights_source="learned", learned_model=in_use)

    form = admin_client.get(START, {"customer": customer.pk}).context["form"]

    assert list(form.fields["learned_model"].queryset) == [*reversed(newer[1:]), in_use]
    assert form.initial["learned_model"] == in_use
    # Posted back, the model in use is still a valid choice, though not among the newest.
    response = admin_client.post(
        START, form_data(customer, weights_source="learned", learned_model=in_use.pk)
    )
    assert response.status_code == 302
    assert SimulationRun.objects.count() == 1


def test_a_draft_scored_with_another_customers_model_is_a_form_error(
    admin_client: Client, sent: list[int]
) -> None:
    # As on the customer's policy page: another customer's multipliers are theirs.
    mine, theirs = CustomerFactory(), CustomerFactory()
    foreign = model_of(theirs)

    response = admin_client.post(START, form_data(mine, weights_source="learned", learned_model=foreign.pk))

    assert response.status_code == 200
    assert "belongs to another customer" in str(response.context["form"].errors["learned_model"])
    assert not SimulationRun.objects.exists()
    assert sent == []
    # The customer's own model and a pooled one are accepted (with seeds of their own: the
    # model is not copied into the simulation, so the two drafts are otherwise one comparison).
    for model in (model_of(mine), model_of(None)):
        admin_client.post(
            START, form_data(mine, weights_source="learned", learned_model=model.pk, seed=model.pk)
        )
    assert SimulationRun.objects.count() == 2
