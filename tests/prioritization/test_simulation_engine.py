"""The simulator drives the engine's own code: claims, outcomes, reschedules, leases and
rescoring happen in the database exactly as in production, at the simulated instants.

These run :func:`run_policy` in the test database (the command runs it in throwaway
clones; see test_simulation_command)."""

import dataclasses
import datetime as dt
import itertools
import math
from typing import Any

import pytest
from django.db import transaction

from leads.models import EventKind, Lead, LeadEvent, LeadType, QueueStatus
from prioritization.models import Decision, PolicyVersion, PriorityPolicy, version_values
from prioritization.scoring import BY_SCORE, FIFO
from prioritization.simulation.outcomes import STALE, OutcomeModel
from prioritization.simulation.runner import run_policy
from prioritization.simulation.scenario import Scenario
from tests.prioritization.simulation_builders import T0, lead, scenario

pytestmark = pytest.mark.django_db

SECOND = dt.timedelta(seconds=1)
ALWAYS_ANSWERED = OutcomeModel(pickup_probability=1.0)
NEVER_ANSWERED = OutcomeModel(pickup_probability=0.0)


def policy(**changes: Any) -> dict[str, Any]:
    return {**version_values(PolicyVersion()), **changes}


class _Undo(Exception):
    pass


def run_and_undo(world: Scenario, values: dict[str, Any], name: str = "test") -> dict[str, Any]:
    """Run, then roll the database back, so that one test can run several times."""
    result: dict[str, Any] = {}
    try:
        with transaction.atomic():
            result.update(run_policy(world, name=name, values=values))
            raise _Undo
    except _Undo:
        pass
    return result


def claimed_order() -> list[str]:
    return list(Decision.objects.order_by("decided_at", "id").values_list("lead__external_id", flat=True))


def test_fifo_serves_leads_in_the_order_they_arrived() -> None:
    # One contractor busy 10 minutes per call; four leads arrive a second apart.
    world = scenario([lead(i, T0 + i * SECOND, handling=600) for i in range(4)], model=ALWAYS_ANSWERED)
    run_policy(world, name="FIFO", values=policy(ordering=FIFO))
    assert claimed_order() == ["sim-0", "sim-1", "sim-2", "sim-3"]
    # Every answer came from the engine's claim, under the simulated version.
    version = PriorityPolicy.objects.get(customer__isnull=True).current_version
    assert version is not None
    assert version.ordering == FIFO
    assert set(Decision.objects.values_list("policy_version_id", flat=True)) == {version.pk}


def test_the_default_policy_serves_the_freshest_lead_first() -> None:
    world = scenario([lead(i, T0 + i * SECOND, handling=600) for i in range(4)], model=ALWAYS_ANSWERED)
    run_policy(world, name="default", values=policy(ordering=BY_SCORE))
    # The first is the only one there; after it the freshest (score decays with the wait),
    # then the one whose SLA deadline is nearest (at risk) before the other.
    order = claimed_order()
    assert order[0] == "sim-0"
    assert order[1] == "sim-3"
    assert order != sorted(order)


def test_the_figures_follow_from_the_calls_made() -> None:
    # Three leads a second apart, one contractor, 20-minute calls, every call answered:
    # first calls at T0, T0 + 20 min, T0 + 40 min, so waits of 0, 1199 and 2398 seconds.
    world = scenario(
        [lead(i, T0 + i * SECOND, handling=1200, base=0.5) for i in range(3)], model=ALWAYS_ANSWERED
    )
    figures = run_policy(world, name="FIFO", values=policy(ordering=FIFO))
    waits = [0.0, 1199.0, 2398.0]
    assert figures["sla_attainment"] == pytest.approx(2 / 3, abs=1e-4)  # the third waited 40 minutes
    assert figures["tat_p50_s"] == 1199.0
    assert figures["tat_p90_s"] == pytest.approx(1199 + 0.8 * 1199, abs=0.1)
    expected = sum(0.5 * math.exp(-wait / 1200) for wait in waits)
    assert figures["expected_conversions"] == pytest.approx(expected, abs=0.01)
    assert (figures["calls"], figures["picked_up"], figures["never_called"], figures["stale_calls"]) == (
        3,
        3,
        0,
        0,
    )
    customer = figures["customers"]["Simulated customer 0"]
    assert customer["sla_attainment"] == figures["sla_attainment"]
    assert customer["expected_conversions"] == figures["expected_conversions"]
    # The figures are the engine's: first attempts stored on the leads.
    first = dict(Lead.objects.values_list("external_id", "first_attempt_at"))
    assert [(first[f"sim-{i}"] - (T0 + i * SECOND)).total_seconds() for i in range(3)] == waits


def test_a_lead_nobody_reached_counts_against_the_sla_once_its_deadline_passed() -> None:
    # The contractor arrives an hour late: both leads wait an hour.
    world = scenario(
        [lead(0, T0), lead(1, T0 + 3 * dt.timedelta(hours=1))],
        contractors=[((0,), T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))],
        model=ALWAYS_ANSWERED,
        hours=3.25,
    )
    figures = run_policy(world, name="FIFO", values=policy(ordering=FIFO))
    # sim-0 called after 60 min (missed); sim-1 arrived at 3 h, nobody on duty, its
    # deadline (3 h 30) is after the end (3 h 15): not judged, but never called.
    assert (figures["sla_judged"], figures["sla_attainment"], figures["never_called"]) == (1, 0.0, 1)
    assert figures["tat_p50_s"] == pytest.approx((3600 + 900) / 2)  # the uncalled one counts 15 min so far


def test_a_no_answer_is_rescheduled_by_the_engines_own_rules() -> None:
    world = scenario([lead(0, T0)], model=NEVER_ANSWERED, hours=1)
    run_policy(world, name="default", values=policy())
    stored = Lead.objects.get(external_id="sim-0")
    assert stored.status == QueueStatus.WAITING
    assert stored.reschedule_count == 1
    assert stored.attempt_count == 1
    # record_outcome picked a moment 22 to 24 h after the call ended (30 s of ringing).
    called = T0 + dt.timedelta(seconds=30)
    assert called + dt.timedelta(hours=22) <= stored.due_at <= called + dt.timedelta(hours=24)
    kinds = list(LeadEvent.objects.filter(lead=stored).order_by("id").values_list("kind", "disposition"))
    assert kinds == [(EventKind.CLAIMED, ""), (EventKind.ATTEMPT, "no_answer"), (EventKind.RESCHEDULED, "")]


def test_after_the_reschedule_limit_a_lead_turns_stale_and_is_called_as_stale() -> None:
    # A reschedule window of 36 to 72 seconds lets the limit be reached within the hour.
    values = policy(reschedule_min_hours=0.01, reschedule_max_hours=0.02, reschedule_limit=2)
    world = scenario([lead(0, T0)], model=NEVER_ANSWERED, hours=1)
    figures = run_policy(world, name="default", values=values)
    stored = Lead.objects.get(external_id="sim-0")
    assert stored.lead_type == LeadType.STALE
    assert LeadEvent.objects.filter(lead=stored, kind=EventKind.BECAME_STALE).count() == 1
    # Attempts 1 to 3 live (two reschedules, then stale), every later one to a stale lead.
    assert figures["calls"] == stored.attempt_count
    assert figures["stale_calls"] == stored.attempt_count - 3 > 0


def test_a_call_longer_than_the_lease_keeps_its_lead_through_extensions() -> None:
    world = scenario([lead(0, T0, handling=1500), lead(1, T0 + SECOND)], model=ALWAYS_ANSWERED, hours=1)
    figures = run_policy(world, name="default", values=policy(lease_seconds=600))
    first = Lead.objects.get(external_id="sim-0")
    assert first.status == QueueStatus.CLOSED
    assert LeadEvent.objects.filter(lead=first, kind=EventKind.LEASE_EXTENDED).count() == 2
    assert not LeadEvent.objects.filter(kind=EventKind.LEASE_EXPIRED).exists()
    assert figures["calls"] == 2  # the second lead was not handed out while the first was held


def test_a_claim_cap_makes_the_contractor_wait_until_the_engine_allows_the_next_claim() -> None:
    world = scenario(
        [lead(i, T0 + i * SECOND, handling=60) for i in range(3)], model=ALWAYS_ANSWERED, hours=2.5
    )
    figures = run_policy(world, name="capped", values=policy(claims_per_hour_cap=1))
    claims = list(Decision.objects.order_by("decided_at").values_list("decided_at", flat=True))
    assert len(claims) == figures["calls"] == 3
    assert all(later - earlier >= dt.timedelta(hours=1) for earlier, later in itertools.pairwise(claims))


def test_switching_the_policy_on_rescores_the_leads_already_queued() -> None:
    backlog = lead(0, T0, lead_type=STALE)
    world = scenario([backlog], contractors=[], hours=1)
    run_policy(world, name="default", values=policy(stale_activity_decay_days=3.0))
    version = PriorityPolicy.objects.get(customer__isnull=True).current_version
    assert version is not None
    assert version.stale_activity_decay_days == 3.0
    stored = Lead.objects.get(external_id="sim-0")
    assert stored.lead_type == LeadType.STALE
    assert stored.created_at == backlog.last_activity
    assert stored.scored_version == version.pk  # rescored by rescore_leads after the switch


def test_the_same_seed_gives_the_same_figures_and_another_seed_other_ones() -> None:
    leads = [lead(i, T0 + i * 40 * SECOND, handling=300 + 7 * i) for i in range(30)]
    two = [((0,), T0, T0 + dt.timedelta(hours=3)), ((0,), T0, T0 + dt.timedelta(hours=3))]
    world = scenario(leads, contractors=two, hours=3)
    first = run_and_undo(world, policy())
    again = run_and_undo(world, policy())
    for figures in (first, again):
        figures.pop("seconds")
        figures.pop("policy_version")
    assert first == again
    other = run_and_undo(dataclasses.replace(world, seed=2), policy())
    assert (other["picked_up"], other["expected_conversions"]) != (
        first["picked_up"],
        first["expected_conversions"],
    )
