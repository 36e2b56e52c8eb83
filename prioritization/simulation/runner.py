"""One policy over one scenario, in simulated time, through the engine's own services.

Works on the current database connection, which must be a throwaway database (the
comparison creates one per policy; tests use their own test database). Every step is
the production code path, called with the simulated clock as ``now``:

- a lead arrives: :func:`leads.services.ingest_lead_batch` (validation, the set-based
  upsert, the arrival scorer that gives it its key under the policy in force);
- a contractor is free: :func:`prioritization.services.claim_next_lead` with the
  contractor's campaign tuple (the claim also wakes due reschedules);
- a call ends: :func:`prioritization.services.record_outcome` (no answer: rescheduled
  22 to 24 h later by the policy's rules, the 4th no-answer makes the lead stale);
- a call outlasts its lease: :func:`prioritization.services.extend_lease`, as the
  Contract app does;
- the policy is switched on: a new version of the default policy, then
  :func:`prioritization.services.rescore_leads` over whatever is queued already.

The simulator itself only decides *when* things happen (a discrete-event loop over
arrivals, shifts and call ends) and *what* each call's outcome is (the fixed model of
:mod:`prioritization.simulation.outcomes`, with random draws per lead and attempt so
that every policy meets the same luck). Idle contractors do not poll: they ask again
when a lead arrives in, or becomes due in, one of their campaigns.

Figures are read back from the leads the engine stored (first call attempt, attempts)
and from the calls the loop made.
"""

import datetime as dt
import heapq
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from django.db import models

from leads.importers import LeadInput
from leads.models import ALL_WEEKDAYS, Campaign, Contractor, Customer, Disposition, Lead, QueueStatus
from leads.services import upsert_leads
from prioritization.models import PolicyVersion, PriorityPolicy
from prioritization.services import (
    ClaimRefused,
    claim_next_lead,
    ensure_default_policy,
    extend_lease,
    record_outcome,
    rescore_leads,
)
from prioritization.simulation.outcomes import LIVE, STALE, conversion_probability
from prioritization.simulation.scenario import LeadSpec, Scenario

# Campaigns of the simulation call around the clock: staffing comes from the shifts.
_OPEN = dt.time(0, 0)
_CLOSE = dt.time(23, 59, 59, 999_999)


class SimulationError(Exception):
    """The simulation could not run; the message says why in one line."""


class _Kind(IntEnum):
    """Event kinds; at one instant, lower values are handled first (calls end, then shifts
    change, then new work appears and is offered to whoever is free)."""

    CALL_END = 0
    EXTEND = 1
    SHIFT_OFF = 2
    SHIFT_ON = 3
    ARRIVAL = 4
    DUE = 5
    RETRY = 6


@dataclass
class _Call:
    lead_id: int
    lead: LeadSpec
    attempt: int
    disposition: str
    ends_at: dt.datetime
    lease_expires_at: dt.datetime


@dataclass
class _Agent:
    index: int  # in Simulation._agents: the subject of its events
    id: int
    campaigns: list[int]
    on_duty: bool = False
    call: _Call | None = None


@dataclass
class Tally:
    """What the calls of one customer came to."""

    calls: int = 0
    stale_calls: int = 0
    picked_up: int = 0
    expected_conversions: float = 0.0
    conversions: int = 0


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not sorted_values:
        return None
    position = share * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass
class _Figures:
    leads: int = 0
    live_leads: int = 0
    sla_met: int = 0
    sla_judged: int = 0
    never_called: int = 0
    tat_seconds: list[float] = field(default_factory=list)

    def as_dict(self, tally: Tally) -> dict[str, Any]:
        tat = sorted(self.tat_seconds)
        return {
            "sla_attainment": round(self.sla_met / self.sla_judged, 4) if self.sla_judged else None,
            "tat_p50_s": _rounded(percentile(tat, 0.5)),
            "tat_p90_s": _rounded(percentile(tat, 0.9)),
            "expected_conversions": round(tally.expected_conversions, 2),
            "conversions": tally.conversions,
            "stale_calls": tally.stale_calls,
            "never_called": self.never_called,
            "leads": self.leads,
            "live_leads": self.live_leads,
            "sla_judged": self.sla_judged,
            "calls": tally.calls,
            "picked_up": tally.picked_up,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Simulation:
    """The event loop of one policy over one scenario (see the module docstring)."""

    def __init__(self, scenario: Scenario, *, policy_name: str, policy_values: dict[str, Any]) -> None:
        self.scenario = scenario
        self.policy_name = policy_name
        self.policy_values = policy_values
        self._events: list[tuple[dt.datetime, int, int, int]] = []  # (when, kind, seq, subject)
        self._seq = 0
        self._agents: list[_Agent] = []
        self._idle: dict[int, _Agent] = {}  # on duty, nothing to call: in the order they became idle
        self._customer_ids: list[int] = []
        self._plans: dict[int, str] = {}
        self._campaign_ids: list[int] = []
        self._lead_ids: dict[str, int] = {}
        self._spec_of_lead: dict[int, LeadSpec] = {}
        self._campaign_index: dict[int, int] = {}
        self._tallies = [Tally() for _ in scenario.customers]
        self.empty_claims = 0
        self.claims = 0

    # --- Setting up -------------------------------------------------------------------------

    def _create_world(self) -> None:
        scenario = self.scenario
        customers = [Customer(name=name, pricing_plan=plan) for name, plan in scenario.customers]
        Customer.objects.bulk_create(customers)
        self._customer_ids = [c.pk for c in customers]
        self._plans = {c.pk: c.pricing_plan for c in customers}
        campaigns = [
            Campaign(
                customer_id=self._customer_ids[customer],
                name=name,
                time_zone="UTC",
                calling_hours_start=_OPEN,
                calling_hours_end=_CLOSE,
                calling_days=list(ALL_WEEKDAYS),
            )
            for customer, name in scenario.campaigns
        ]
        Campaign.objects.bulk_create(campaigns)
        self._campaign_ids = [c.pk for c in campaigns]
        self._campaign_index = {pk: index for index, pk in enumerate(self._campaign_ids)}
        contractors = [Contractor(name=spec.name, created_at=scenario.start) for spec in scenario.contractors]
        Contractor.objects.bulk_create(contractors)
        Qualified = Contractor.campaigns.through
        Qualified.objects.bulk_create(
            Qualified(contractor_id=contractor.pk, campaign_id=self._campaign_ids[campaign])
            for contractor, spec in zip(contractors, scenario.contractors, strict=True)
            for campaign in spec.campaigns
        )
        for contractor, spec in zip(contractors, scenario.contractors, strict=True):
            agent = _Agent(
                index=len(self._agents),
                id=contractor.pk,
                campaigns=sorted(self._campaign_ids[c] for c in spec.campaigns),
            )
            self._agents.append(agent)
            for on, off in spec.duty:
                self._push(on, _Kind.SHIFT_ON, agent.index)
                self._push(off, _Kind.SHIFT_OFF, agent.index)

    def _switch_policy_on(self) -> PolicyVersion:
        """Make the judged settings the default policy's current version (the simulated
        customers have no policy of their own), then rescore what is queued, as a policy
        change does in production."""
        ensure_default_policy()
        policy = PriorityPolicy.objects.get(customer__isnull=True)
        number = (policy.versions.aggregate(models.Max("number"))["number__max"] or 0) + 1
        version = PolicyVersion(
            policy=policy,
            number=number,
            created_at=self.scenario.start,
            note=f"Simulation: {self.policy_name}",
            **self.policy_values,
        )
        version.full_clean(exclude=["policy", "created_by"])
        version.save()
        PriorityPolicy.objects.filter(pk=policy.pk).update(current_version=version)
        rescore_leads()
        return version

    def _ingest(self, specs: Sequence[LeadSpec], now: dt.datetime) -> None:
        """Push leads through the ingest path's upsert (the arrival scorer gives them their
        keys). The API's parsing and reference checks are skipped: the simulator built
        these leads and their campaigns itself."""
        leads = [
            LeadInput(
                customer_id=self._customer_ids[spec.customer],
                campaign_id=self._campaign_ids[spec.campaign],
                external_id=spec.external_id,
                lead_type=spec.lead_type,
                city=spec.city,
                source=spec.source,
                last_activity=spec.last_activity,
                stage=spec.stage,
                pricing_plan=None,  # the customer's plan
                rescheduled_at=None,
                created_at=spec.at if spec.lead_type == LIVE else spec.last_activity,
            )
            for spec in specs
        ]
        results = upsert_leads(leads, customer_plans=self._plans, now=now)
        for spec, result in zip(specs, results, strict=True):
            if result.status != "created":
                raise SimulationError(f"Lead {spec.external_id} existed already: the database is not fresh.")
            self._lead_ids[spec.external_id] = result.lead_id
            self._spec_of_lead[result.lead_id] = spec

    # --- The loop -----------------------------------------------------------------------------

    def _push(self, when: dt.datetime, kind: _Kind, subject: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, int(kind), self._seq, subject))

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        scenario = self.scenario
        self._create_world()
        # Leads queued before the policy is switched on (a stale backlog) are scored on
        # arrival under the policy in force, then rescored by the switch.
        backlog = [spec for spec in scenario.leads if spec.at <= scenario.start]
        if backlog:
            self._ingest(backlog, scenario.start)
        version = self._switch_policy_on()
        for index, spec in enumerate(scenario.leads):
            if spec.at > scenario.start:
                self._push(spec.at, _Kind.ARRIVAL, index)

        end = scenario.end
        while self._events:
            when, kind, _, subject = heapq.heappop(self._events)
            if when >= end and kind not in (_Kind.CALL_END, _Kind.EXTEND):
                continue  # the horizon: calls under way finish, nothing new starts
            self._handle(_Kind(kind), subject, when)
        figures = self._figures()
        figures["policy_version"] = version.number
        figures["seconds"] = round(time.perf_counter() - started, 1)
        return figures

    def _handle(self, kind: _Kind, subject: int, now: dt.datetime) -> None:
        if kind == _Kind.ARRIVAL:
            spec = self.scenario.leads[subject]
            self._ingest([spec], now)
            self._offer(self._campaign_ids[spec.campaign], now)
        elif kind == _Kind.DUE:
            self._offer(subject, now)
        elif kind == _Kind.CALL_END:
            self._end_call(self._agents[subject], now)
        elif kind == _Kind.EXTEND:
            self._extend(subject, now)
        elif kind == _Kind.SHIFT_ON:
            agent = self._agents[subject]
            agent.on_duty = True
            if agent.call is None:
                self._claim(subject, now)
        elif kind == _Kind.SHIFT_OFF:
            agent = self._agents[subject]
            agent.on_duty = False
            self._idle.pop(agent.id, None)  # one in a call finishes it, then leaves
        elif kind == _Kind.RETRY:
            agent = self._agents[subject]
            if agent.on_duty and agent.call is None:
                self._claim(subject, now)

    def _offer(self, campaign_id: int, now: dt.datetime) -> None:
        """A lead became claimable in the campaign: the contractor idle longest among those
        qualified for it asks for the next lead (as it would on its next poll)."""
        for agent in list(self._idle.values()):
            if campaign_id in agent.campaigns:
                self._claim(agent.index, now)
                return

    def _claim(self, index: int, now: dt.datetime) -> None:
        agent = self._agents[index]
        try:
            claim = claim_next_lead(contractor_id=agent.id, campaign_ids=agent.campaigns, now=now)
        except ClaimRefused as exc:
            self._idle.pop(agent.id, None)
            if exc.status == 429 and exc.retry_after is not None:
                self._push(max(exc.retry_after, now + dt.timedelta(seconds=1)), _Kind.RETRY, index)
                return
            raise SimulationError(f"The engine refused a claim: {exc}") from exc
        if claim is None:
            self.empty_claims += 1
            self._idle.setdefault(agent.id, agent)
            return
        self._idle.pop(agent.id, None)
        self.claims += 1
        lead = claim.lead
        if claim.repeated or lead.lease_expires_at is None:
            raise SimulationError(f"Contractor {agent.id} was handed lead {lead.pk} it already held.")
        spec = self._spec_of_lead[lead.pk]
        model = self.scenario.model
        attempt = lead.attempt_count + 1
        # Draws per lead and attempt, not from one shared stream: each policy's k-th call
        # to a lead meets the same luck, so differences come from the policy.
        rng = random.Random(f"{self.scenario.seed}:call:{spec.external_id}:{attempt}")
        picked_up = rng.random() < model.pickup_probability
        convert_draw = rng.random()
        handling = spec.handling_seconds or self.scenario.handling.draw(spec.call_type, rng)
        tally = self._tallies[spec.customer]
        tally.calls += 1
        if lead.lead_type == STALE:
            tally.stale_calls += 1
        if picked_up:
            probability = conversion_probability(
                base=spec.base,
                lead_type=lead.lead_type,
                waited_seconds=(now - lead.due_at).total_seconds(),
                activity_age_seconds=(now - (lead.last_activity or lead.created_at)).total_seconds(),
                model=model,
            )
            tally.picked_up += 1
            tally.expected_conversions += probability
            converted = convert_draw < probability
            tally.conversions += converted
            disposition = Disposition.CONVERTED if converted else Disposition.NOT_INTERESTED
            seconds = handling
        else:
            disposition = Disposition.NO_ANSWER
            seconds = model.no_answer_seconds
        ends_at = now + dt.timedelta(seconds=seconds)
        agent.call = _Call(lead.pk, spec, attempt, disposition, ends_at, lead.lease_expires_at)
        self._push(ends_at, _Kind.CALL_END, index)
        self._schedule_extension(index, agent.call)

    def _schedule_extension(self, index: int, call: _Call) -> None:
        """A call that would outlast its lease gets a fresh lease a second before it runs out
        (the Contract app extends while the contractor is on the phone)."""
        if call.ends_at >= call.lease_expires_at:
            self._push(call.lease_expires_at - dt.timedelta(seconds=1), _Kind.EXTEND, index)

    def _extend(self, index: int, now: dt.datetime) -> None:
        agent = self._agents[index]
        call = agent.call
        if call is None:
            return
        lead = extend_lease(lead_id=call.lead_id, contractor_id=agent.id, now=now)
        assert lead.lease_expires_at is not None
        call.lease_expires_at = lead.lease_expires_at
        self._schedule_extension(index, call)

    def _end_call(self, agent: _Agent, now: dt.datetime) -> None:
        call = agent.call
        assert call is not None
        # record_outcome draws the reschedule moment from this: seeded, so runs repeat.
        reschedule_rng = random.Random(
            f"{self.scenario.seed}:reschedule:{call.lead.external_id}:{call.attempt}"
        )
        result = record_outcome(
            lead_id=call.lead_id,
            contractor_id=agent.id,
            disposition=call.disposition,
            now=now,
            rng=reschedule_rng,
        )
        agent.call = None
        lead = result.lead
        if agent.on_duty and now < self.scenario.end:
            self._claim(agent.index, now)
        if lead.status == QueueStatus.WAITING and lead.due_at < self.scenario.end:
            self._push(lead.due_at, _Kind.DUE, lead.campaign_id)
        elif lead.status == QueueStatus.READY and now < self.scenario.end:
            self._offer(lead.campaign_id, now)  # became stale: callable at once

    # --- Figures ---------------------------------------------------------------------------------

    def _figures(self) -> dict[str, Any]:
        scenario = self.scenario
        window = dt.timedelta(minutes=scenario.sla_minutes)
        stored = dict(
            Lead.objects.filter(customer_id__in=self._customer_ids).values_list(
                "external_id", "first_attempt_at"
            )
        )
        overall = _Figures()
        by_customer = [_Figures() for _ in scenario.customers]
        tat_curve: list[float] = []
        for spec in scenario.leads:
            first = stored.get(spec.external_id)
            for figures in (overall, by_customer[spec.customer]):
                figures.leads += 1
                figures.never_called += first is None
            if spec.lead_type != LIVE:
                continue
            # A lead never called counts with the wait it had at the end (a lower bound).
            waited = ((first if first is not None else scenario.end) - spec.at).total_seconds()
            deadline = spec.at + window
            judged = first is not None or deadline <= scenario.end
            for figures in (overall, by_customer[spec.customer]):
                figures.live_leads += 1
                figures.tat_seconds.append(waited)
                if judged:
                    figures.sla_judged += 1
                    figures.sla_met += first is not None and first <= deadline
            tat_curve.append(waited)
        total = Tally()
        for tally in self._tallies:
            total.calls += tally.calls
            total.stale_calls += tally.stale_calls
            total.picked_up += tally.picked_up
            total.expected_conversions += tally.expected_conversions
            total.conversions += tally.conversions
        result: dict[str, Any] = {"name": self.policy_name, **overall.as_dict(total)}
        result["customers"] = {
            name: figures.as_dict(tally)
            for (name, _), figures, tally in zip(scenario.customers, by_customer, self._tallies, strict=True)
        }
        tat_curve.sort()
        result["tat_curve_s"] = [_rounded(percentile(tat_curve, q / 100)) for q in range(101)]
        result["claims"] = self.claims
        result["empty_claims"] = self.empty_claims
        return result


def run_policy(scenario: Scenario, *, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Simulate one policy over the scenario in the current database; its figures."""
    return Simulation(scenario, policy_name=name, policy_values=values).run()
