"""Rescoring after policy changes, the beat tasks, and the schedule command."""

import datetime as dt
import io
import threading

import pytest
import time_machine
from django.core.management import call_command
from django.db import DataError, connection
from django.db.backends.signals import connection_created
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from leads.models import Campaign, Lead, QueueStatus
from prioritization import services, tasks
from prioritization.schedules import NAME_PREFIX, SCHEDULES
from prioritization.services import (
    RESCORE_LOCK_KEY,
    claim_next_lead,
    release_lead,
    rescore_lead_ids,
    rescore_leads,
)
from tests.conftest import generic_plan_nodes
from tests.factories import CampaignFactory, CustomerFactory, LeadFactory
from tests.prioritization.conftest import T0, add_lead, add_leads, set_policy

MINUTE = dt.timedelta(minutes=1)


def xmins(ids: list[int]) -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, xmin::text::bigint FROM leads_lead WHERE id = ANY(%s)", [ids])
        return dict(cursor.fetchall())


@pytest.mark.django_db
def test_a_policy_change_reaches_queued_leads_at_rescoring_and_new_leads_at_once(
    ingest_api, customer, campaign: Campaign, make_contractor
) -> None:
    old = set_policy(customer, city_weights={"Pune": 1.0})
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        pune = add_lead(campaign, city="Pune", created_at=T0 - 5 * MINUTE)
        mumbai = add_lead(campaign, city="Mumbai", created_at=T0 - 1 * MINUTE)
        new = set_policy(customer, city_weights={"Pune": 10.0})
        response = ingest_api.post(
            "/api/v1/leads/",
            {
                "customer_id": customer.pk,
                "campaign_id": campaign.pk,
                "external_id": "after",
                "lead_type": "stale",
            },
            format="json",
        )
        assert response.status_code in (200, 201), response.json()
    posted = Lead.objects.get(external_id="after")
    assert posted.scored_version == new.pk
    assert {pune.scored_version, mumbai.scored_version} == {old.pk}
    # Before rescoring the queued leads keep their stored version: Mumbai (fresher) first.
    with time_machine.travel(T0, tick=False):
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
        assert claim is not None
        assert claim.lead.pk == mumbai.pk
        assert claim.decision.policy_version_id == old.pk
    release_lead(lead_id=mumbai.pk, contractor_id=contractor.pk, now=T0)
    summary = rescore_leads()
    assert summary.rewritten == 2
    assert not summary.skipped
    assert set(Lead.objects.values_list("scored_version", flat=True)) == {new.pk}
    with time_machine.travel(T0, tick=False):
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == pune.pk
    assert claim.decision.policy_version_id == new.pk
    assert claim.decision.reasons[0] == "city = Pune: ×10"


@pytest.mark.django_db
def test_rescoring_rewrites_only_rows_whose_key_changed() -> None:
    changed, untouched = CustomerFactory(), CustomerFactory()
    changed_campaign, other_campaign = CampaignFactory(customer=changed), CampaignFactory(customer=untouched)
    with time_machine.travel(T0, tick=False):
        leads = add_leads(changed_campaign, *({"city": "Pune"} for _ in range(4)), {"city": "Delhi"})
        others = add_leads(other_campaign, *({"city": "Pune"} for _ in range(3)))
    ids = [lead.pk for lead in leads + others]
    first = rescore_leads()
    assert first.rewritten == 0
    assert first.scanned >= len(ids)
    before = xmins(ids)
    set_policy(changed, city_weights={"Pune": 2.0})
    summary = rescore_leads()
    # The Pune leads get a new key; the Delhi lead keeps its key but records the new version
    # (its band and decay come from it); the other customer's leads are not touched.
    assert summary.rewritten == 5
    after = xmins(ids)
    assert {i for i in ids if after[i] != before[i]} == {lead.pk for lead in leads}
    again = rescore_leads()
    assert again.rewritten == 0
    assert xmins(ids) == after


@pytest.mark.django_db
def test_rescoring_works_in_batches_and_scores_unscored_leads() -> None:
    campaign = CampaignFactory(customer=CustomerFactory())
    leads = LeadFactory.create_batch(7, campaign=campaign, created_at=T0, due_at=T0)
    closed = LeadFactory(
        campaign=campaign,
        status=QueueStatus.CLOSED,
        closed_reason="converted",
        closed_at=T0,
        created_at=T0,
        due_at=T0,
    )
    assert all(lead.priority_key is None for lead in leads)
    summary = rescore_leads(batch_size=3)
    assert summary.batches == 3
    assert summary.rewritten == 7
    assert not Lead.objects.filter(pk__in=[lead.pk for lead in leads], priority_key__isnull=True).exists()
    closed.refresh_from_db()
    assert closed.priority_key is None  # closed leads are left alone


@pytest.mark.django_db
def test_a_failing_batch_inside_a_transaction_raises_its_own_error_and_frees_the_rescoring_lock(
    monkeypatch,
) -> None:
    campaign = CampaignFactory(customer=CustomerFactory())
    LeadFactory.create_batch(3, campaign=campaign, created_at=T0, due_at=T0)
    broken = services._RESCORE_WRITE_SQL.replace(
        "SET priority_key = v.priority_key", "SET priority_key = 1 / 0"
    )
    monkeypatch.setattr(services, "_RESCORE_WRITE_SQL", broken)

    with pytest.raises(DataError, match="division by zero"):
        rescore_leads()

    # The batch rolled back alone: the caller's transaction goes on, the lock is free.
    assert not Lead.objects.filter(campaign=campaign, priority_key__isnull=False).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert cursor.fetchone()[0] == 0


@pytest.mark.django_db
def test_rescore_lead_ids_touches_only_those_leads() -> None:
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    with time_machine.travel(T0, tick=False):
        first, second = add_leads(campaign, {"city": "Pune"}, {"city": "Pune"})
    version = set_policy(customer, city_weights={"Pune": 3.0})
    assert rescore_lead_ids([first.pk]) == 1
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.scored_version == version.pk
    assert second.scored_version != version.pk
    assert rescore_lead_ids([]) == 0


@pytest.mark.django_db(transaction=True)
def test_a_second_rescoring_run_at_the_same_time_is_skipped() -> None:
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    add_leads(campaign, {"city": "Pune"}, {"city": "Delhi"})
    set_policy(customer, city_weights={"Pune": 2.0})
    locked, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_lock() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [RESCORE_LOCK_KEY])
                locked.set()
                done.wait(timeout=30)
                cursor.execute("SELECT pg_advisory_unlock(%s)", [RESCORE_LOCK_KEY])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    other_run = threading.Thread(target=hold_lock)
    other_run.start()
    try:
        assert locked.wait(timeout=30)
        skipped = rescore_leads()
        assert skipped.skipped
        assert skipped.scanned == 0
        assert skipped.rewritten == 0
        assert tasks.rescore_leads()["skipped"] is True
    finally:
        done.set()
        other_run.join()
    assert not errors
    summary = rescore_leads()
    assert not summary.skipped
    assert summary.rewritten == 2


@pytest.mark.django_db(transaction=True)
def test_the_writer_thread_connects_only_when_a_batch_changed() -> None:
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    add_leads(campaign, {"city": "Pune"}, {"city": "Delhi"})
    set_policy(customer, city_weights={"Pune": 2.0})
    connected: list[str] = []

    def record(sender: object, **kwargs: object) -> None:
        connected.append(threading.current_thread().name)

    connection_created.connect(record)
    try:
        assert rescore_leads().rewritten == 2
        assert connected == ["rescore-writer"]
        connected.clear()
        unchanged = rescore_leads()  # every key is as stored
    finally:
        connection_created.disconnect(record)
    assert (unchanged.scanned, unchanged.rewritten) == (2, 0)
    assert connected == []


@pytest.mark.django_db
def test_the_beat_task_functions_return_small_summaries() -> None:
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    with time_machine.travel(T0, tick=False):
        add_lead(campaign, city="Pune")
        add_lead(campaign, rescheduled_at=T0 + 5 * MINUTE)
    set_policy(customer, city_weights={"Pune": 2.0})
    result = tasks.rescore_leads()
    assert result.pop("max_batch_seconds") >= 0
    assert result == {"scanned": 2, "rewritten": 2, "batches": 1, "skipped": False}
    assert tasks.rescore_leads()["rewritten"] == 0
    with time_machine.travel(T0 + 4 * MINUTE, tick=False):
        assert tasks.wake_due_leads() == {"woken": 0}
    with time_machine.travel(T0 + 5 * MINUTE, tick=False):
        assert tasks.wake_due_leads() == {"woken": 1}
    assert not Lead.objects.filter(status=QueueStatus.WAITING).exists()


@pytest.mark.django_db
def test_setup_periodic_tasks_is_idempotent() -> None:
    call_command("setup_periodic_tasks")
    first = {
        t.name: (t.pk, t.task, t.interval.every, t.interval.period, t.enabled)
        for t in PeriodicTask.objects.all()
    }
    assert {s.name for s in SCHEDULES} <= set(first)
    assert first["leadrank: rescore leads"][1:] == ("prioritization.tasks.rescore_leads", 60, "seconds", True)
    # Someone disables a task by hand; the command puts it back as declared.
    PeriodicTask.objects.filter(name="leadrank: rescore leads").update(enabled=False)
    call_command("setup_periodic_tasks")
    second = {
        t.name: (t.pk, t.task, t.interval.every, t.interval.period, t.enabled)
        for t in PeriodicTask.objects.all()
    }
    assert second == first


@pytest.mark.django_db
def test_setup_periodic_tasks_leaves_a_task_as_declared_untouched_so_its_first_run_stays_due() -> None:
    # Beat counts a never-run task's first interval from date_changed, which every save moves:
    # make run calls the command at each start, and the daily training never came due.
    call_command("setup_periodic_tasks")
    before = dict(PeriodicTask.objects.values_list("name", "date_changed"))

    with time_machine.travel(timezone.now() + dt.timedelta(hours=12)):
        call_command("setup_periodic_tasks")

    assert dict(PeriodicTask.objects.values_list("name", "date_changed")) == before


@pytest.mark.django_db
def test_setup_periodic_tasks_removes_its_retired_schedules_and_keeps_others() -> None:
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    # A schedule an earlier release declared, and one staff added by hand.
    PeriodicTask.objects.create(
        name="leadrank: fail stalled imports", task="leads.tasks.fail_stalled_imports", interval=every_minute
    )
    PeriodicTask.objects.create(name="nightly report", task="reports.nightly", interval=every_minute)
    out = io.StringIO()

    call_command("setup_periodic_tasks", stdout=out)

    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert "leadrank: fail stalled imports" not in names
    assert names >= {schedule.name for schedule in SCHEDULES} | {"nightly report"}
    assert "Removed 1 retired: leadrank: fail stalled imports." in out.getvalue()
    assert all(schedule.name.startswith(NAME_PREFIX) for schedule in SCHEDULES)


@pytest.mark.django_db
def test_setup_periodic_tasks_puts_back_hand_edits_and_bears_duplicate_intervals() -> None:
    call_command("setup_periodic_tasks")
    # The beat admin allows two rows of the same interval (the table has no unique key), and
    # an expiry or a one-off run set by hand would leave a task dead.
    IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="leadrank: rescore leads").update(
        expires=timezone.now() - dt.timedelta(days=1), one_off=True, kwargs='{"x": 1}'
    )

    call_command("setup_periodic_tasks")

    task = PeriodicTask.objects.get(name="leadrank: rescore leads")
    assert (task.expires, task.one_off, task.kwargs, task.enabled) == (None, False, "{}", True)
    assert (task.interval.every, task.interval.period) == (60, "seconds")


@pytest.mark.django_db
def test_a_rescoring_pass_walks_the_open_leads_only_however_many_are_closed() -> None:
    # Closed leads pile up for ever; through the primary key, every pass (each minute) would
    # read each of them to skip it.
    campaign = CampaignFactory()
    leads = add_leads(campaign, *({} for _ in range(300)))
    Lead.objects.filter(pk__in=[lead.pk for lead in leads[:290]]).update(
        status=QueueStatus.CLOSED, closed_reason="withdrawn", closed_at=timezone.now()
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_lead")
    nodes = generic_plan_nodes(services._RESCORE_READ_SQL, {"after": 0, "limit": 5000})
    scans = [node for node in nodes if node.get("Relation Name") == "leads_lead"]
    assert [node.get("Index Name") for node in scans] == ["lead_open_id"], scans
