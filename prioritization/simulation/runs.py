"""Comparisons asked for in the admin, run in the background: a customer's draft policy
against the policy in force for that customer and FIFO.

The simulated world is the standard scenario (three simulated customers drawn from the
public data, arrivals from the call-centre log): the chosen customer decides which
policy is "in force" for the comparison, and the draft is judged on the same world.
"""

import datetime as dt
import logging
import math
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from leads.models import Customer
from prioritization.models import PolicyVersion, SimulationRun, SimulationStatus
from prioritization.services import current_versions
from prioritization.simulation.arrivals import DataError
from prioritization.simulation.comparison import (
    CHILD_TIMEOUT_SECONDS,
    FIFO_NAME,
    PolicyEntry,
    PolicyError,
    compare_policies,
    fifo_entry,
    settings_of,
    validate_settings,
)
from prioritization.simulation.report import render_chart
from prioritization.simulation.runner import SimulationError
from prioritization.simulation.scenario import ScenarioOptions

logger = logging.getLogger(__name__)

ACTIVE_NAME = "in force"
DRAFT_NAME = "draft"
# A run simulates three policies (FIFO, the policy in force, the draft), this many at once.
RUN_JOBS = 2
# The longest a run can last: its children, RUN_JOBS at a time, are each stopped after
# CHILD_TIMEOUT_SECONDS; one still "running" past this (and a margin) lost its worker.
RUN_TIME_BOUND = dt.timedelta(seconds=math.ceil(3 / RUN_JOBS) * CHILD_TIMEOUT_SECONDS, minutes=10)
# A run still queued this long after it was sent is sent again.
RESEND_AFTER = dt.timedelta(minutes=15)
# The same comparison asked for again by the same user this soon is the same submission
# (a double click), even if the first run has already failed or finished.
REPEAT_WINDOW = dt.timedelta(seconds=10)


def start_simulation_run(
    *,
    customer: Customer,
    draft: dict[str, Any],
    contractors: int,
    start: dt.datetime,
    days: float,
    seed: int,
    user: User | AnonymousUser | None,
) -> tuple[SimulationRun, bool]:
    """Record the run (queued) and enqueue it once the transaction commits; returns it and
    True. Returns instead the user's run of the same comparison (customer, draft, policy in
    force, scenario and seed) still queued or running, or asked for within
    ``REPEAT_WINDOW``, and False: a form posted twice starts one comparison.

    ``draft`` holds the draft's settings as cleaned by the policy form.
    """
    draft_values, draft_notes = settings_of(PolicyVersion(**draft))
    validate_settings(DRAFT_NAME, draft_values)
    version = current_versions([customer.pk])[customer.pk]
    active_values, active_notes = settings_of(version)
    parameters = {
        "contractors": contractors,
        "start": start.isoformat(),
        "days": days,
        "seed": seed,
        "notes": [f"{DRAFT_NAME}: {note}" for note in draft_notes]
        + [f"{ACTIVE_NAME}: {note}" for note in active_notes],
    }
    author = user if user is not None and user.is_authenticated else None
    now = timezone.now()
    with transaction.atomic():
        if author is not None:
            # The two POSTs of a double click may reach two web workers at once: the user's
            # row, locked until commit, makes the second wait for the first's run, then find it.
            User.objects.select_for_update(no_key=True).filter(pk=author.pk).values_list("pk").first()
            same = (
                SimulationRun.objects.filter(
                    created_by=author,
                    customer=customer,
                    draft=draft_values,
                    active=active_values,
                    parameters=parameters,
                )
                .filter(
                    Q(status__in=[SimulationStatus.QUEUED, SimulationStatus.RUNNING])
                    | Q(created_at__gte=now - REPEAT_WINDOW)
                )
                .order_by("-created_at", "-id")
                .only("pk", "status", "created_at")
                .first()
            )
            if same is not None:
                return same, False
        run = SimulationRun.objects.create(
            customer=customer,
            draft=draft_values,
            active=active_values,
            active_label=f"{version.policy} v{version.number}",
            parameters=parameters,
            created_by=author,
            created_at=now,
        )
        transaction.on_commit(lambda: enqueue_simulation_run(run.pk))
    return run, True


def enqueue_simulation_run(run_id: int) -> None:
    """Send the run to the workers (from ``on_commit``, and again by the sweep while it
    waits); a broker that cannot be reached fails the run with a message instead of leaving
    it queued for ever."""
    from prioritization import tasks  # tasks import the services this module uses

    SimulationRun.objects.filter(pk=run_id).update(sent_at=timezone.now())
    try:
        tasks.run_simulation.delay(run_id)
    except (BrokerError, OSError) as exc:
        logger.exception("could not enqueue simulation run %s", run_id)
        _fail(run_id, f"The background queue could not be reached ({exc}); start the comparison again later.")


def sweep_simulation_runs() -> dict[str, int]:
    """Fail the runs still running past ``RUN_TIME_BOUND`` (their worker was killed or
    restarted: a redelivered message does not restart a run that is not queued), and send
    again the runs still queued ``RESEND_AFTER`` after they were sent (the broker may have
    lost the message; starting is conditional on the status, so only one copy runs).
    Returns how many runs were failed and how many sent again."""
    now = timezone.now()
    failed = SimulationRun.objects.filter(
        status=SimulationStatus.RUNNING, started_at__lt=now - RUN_TIME_BOUND
    ).update(
        status=SimulationStatus.FAILED,
        finished_at=now,
        message=(
            f"The simulation gave no result within {RUN_TIME_BOUND.total_seconds() / 3600:.1f} hours: "
            "its background worker was probably restarted or killed. Start the comparison again."
        ),
    )
    waiting = SimulationRun.objects.filter(status=SimulationStatus.QUEUED).filter(
        Q(sent_at__lt=now - RESEND_AFTER) | Q(sent_at__isnull=True, created_at__lt=now - RESEND_AFTER)
    )
    from prioritization import tasks  # tasks import the services this module uses

    sent = 0
    for run_id in waiting.values_list("pk", flat=True):
        # Only while still queued; a broker that refuses fails nothing (the first message may
        # still be queued): a later sweep tries again.
        if not waiting.filter(pk=run_id).update(sent_at=now):
            continue
        try:
            tasks.run_simulation.delay(run_id)
        except (BrokerError, OSError):
            logger.warning("could not send simulation run %s again", run_id, exc_info=True)
            continue
        sent += 1
    if failed:
        logger.warning("failed %s simulation run(s) past their time limit", failed)
    if sent:
        logger.warning("sent %s queued simulation run(s) to the workers again", sent)
    return {"failed": failed, "sent_again": sent}


def _fail(run_id: int, message: str) -> None:
    SimulationRun.objects.filter(pk=run_id).update(
        status=SimulationStatus.FAILED, finished_at=timezone.now(), message=message
    )


def execute_simulation_run(*, run_id: int) -> str:
    """Run a queued comparison and store its figures and chart; returns the final status.

    Only a queued run starts (a conditional UPDATE moves it to running), so a message
    delivered twice runs it once.
    """
    started = SimulationRun.objects.filter(pk=run_id, status=SimulationStatus.QUEUED).update(
        status=SimulationStatus.RUNNING, started_at=timezone.now()
    )
    if not started:
        logger.info("simulation run %s is not queued; nothing to do", run_id)
        return "skipped"
    run = SimulationRun.objects.get(pk=run_id)
    parameters = run.parameters
    try:
        options = ScenarioOptions(
            data_dir=Path(settings.LEADRANK_DATA_DIR),
            contractors=int(parameters["contractors"]),
            start=dt.datetime.fromisoformat(parameters["start"]),
            days=float(parameters["days"]),
            seed=int(parameters["seed"]),
        )
        active = PolicyEntry(ACTIVE_NAME, dict(run.active))
        entries = [fifo_entry(active), active, PolicyEntry(DRAFT_NAME, dict(run.draft))]
        comparison = compare_policies(options=options, entries=entries, jobs=RUN_JOBS)
        chart = render_chart(
            comparison.policies, sla_target=options.sla_target, sla_minutes=options.sla_minutes
        )
    except (DataError, PolicyError, SimulationError, ValueError, KeyError) as exc:
        _fail(run_id, str(exc))
        return SimulationStatus.FAILED
    except (psycopg.Error, DatabaseError, OSError) as exc:
        _fail(run_id, f"The simulation could not use PostgreSQL or its files: {exc}")
        return SimulationStatus.FAILED
    except Exception:
        # Bookkeeping only, then re-raised for the worker's log: a run must never stay
        # "running" after its task died.
        _fail(run_id, "The simulation stopped on an unexpected error (details are in the worker log).")
        raise
    results = comparison.as_json()
    # The chart's curve is kept with the figures (the JSON line leaves it out).
    results["policies"] = comparison.policies
    results["notes"] = list(parameters.get("notes", [])) + comparison.notes
    SimulationRun.objects.filter(pk=run_id).update(
        status=SimulationStatus.DONE,
        finished_at=timezone.now(),
        results=results,
        chart_png=chart,
        message=_headline(comparison.policies),
    )
    return SimulationStatus.DONE


def _headline(policies: list[dict[str, Any]]) -> str:
    """One line for the list: the draft against FIFO and the policy in force."""
    by_name = {policy["name"]: policy for policy in policies}
    draft = by_name.get(DRAFT_NAME)
    if draft is None:
        return ""
    parts = [f"draft: SLA {100 * (draft.get('sla_attainment') or 0):.1f}%"]
    for name in (FIFO_NAME, ACTIVE_NAME):
        other = by_name.get(name)
        if other and other.get("expected_conversions"):
            change = 100 * (draft["expected_conversions"] / other["expected_conversions"] - 1)
            parts.append(f"{change:+.1f}% expected conversions vs {name}")
    return ", ".join(parts)
