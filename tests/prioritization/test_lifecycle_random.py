"""A lead's whole life through the engine's services, as seeded random operations checked
against a small model and the database's invariants after every step ("model-based").

Customers push and re-push leads, contractors claim, report every disposition, release,
extend and go silent, the Contract app PATCHes, beat rescores and wakes, product staff
change policies and pause campaigns, and time jumps from seconds to a day. After each step
the database must still say what the README says: one holder per lead and per contractor,
closed leads stay closed, reschedules stay inside their window and limit, keys agree with
the facts, every claim is logged once and is the brute-force oracle's first, nothing is lost.
"""

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import time_machine
from django.db.models import Count

from leads.models import (
    Campaign,
    CloseReason,
    Contractor,
    Customer,
    EventKind,
    Lead,
    LeadEvent,
    LeadType,
    QueueStatus,
)
from leads.services import LeadConflict, ingest_lead_batch, update_lead
from prioritization.calling_hours import CallingHours, next_opening
from prioritization.models import Decision
from prioritization.scoring import priority_key, sla_deadline
from prioritization.services import (
    LeadStateConflict,
    claim_next_lead,
    current_versions,
    extend_lease,
    facts_of,
    params_for_version,
    record_outcome,
    release_lead,
    rescore_leads,
    wake_due_leads,
    withdraw_lead,
)
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, set_policy
from tests.prioritization.test_claims import oracle, random_lead

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DISPOSITIONS = ["no_answer", "busy", "not_interested", "callback", "converted", "wrong_number", "do_not_call"]
CLOSING = {
    "converted": CloseReason.CONVERTED,
    "not_interested": CloseReason.NOT_INTERESTED,
    "wrong_number": CloseReason.WRONG_NUMBER,
    "do_not_call": CloseReason.DO_NOT_CALL,
}
# Afternoons in India, weekdays: 08:30 to 13:30 UTC. Open at T0 (Tuesday 10:00 UTC).
KOLKATA_AFTERNOONS: dict[str, Any] = {
    "time_zone": "Asia/Kolkata",
    "calling_hours_start": dt.time(14),
    "calling_hours_end": dt.time(19),
    "calling_days": [0, 1, 2, 3, 4],
}
# Rates stay the same in every version of a customer's policy: a decay or protection change
# between rescoring runs is the known, documented gap (xfail in test_claims.py).
RATES: dict[str, dict[str, float]] = {
    "a": {"live_decay_minutes": 15, "stale_activity_decay_days": 7, "sla_protect_minutes": 10},
    "b": {"live_decay_minutes": 40, "stale_activity_decay_days": 14, "sla_protect_minutes": 20},
    "c": {"live_decay_minutes": 20, "stale_activity_decay_days": 14, "sla_protect_minutes": 10},
}
# Each customer keeps its reschedule limit; the window stays the business rule's 22-24 h.
LIMITS = {"a": 3, "b": 1, "c": 3}


@dataclass
class Held:
    lead_id: int
    lease: dt.datetime


@dataclass
class Sent:
    """An outcome that was recorded, to be sent again later under its key."""

    lead_id: int
    contractor_id: int
    disposition: str
    callback_at: dt.datetime | None
    key: str


@dataclass
class World:
    rng: random.Random
    customers: dict[str, Customer]
    campaigns: list[Campaign]
    contractors: list[Contractor]
    qualified: dict[int, list[int]]
    # What we expect, kept by the test: the model.
    payloads: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    lead_ids: dict[tuple[int, str], int] = field(default_factory=dict)
    holds: dict[int, Held] = field(default_factory=dict)  # contractor → lead held
    closed: dict[int, str] = field(default_factory=dict)  # lead → closed_reason
    first_attempt: dict[int, dt.datetime] = field(default_factory=dict)
    live_reschedules: Counter[int] = field(default_factory=Counter)
    # Holds ended by a withdrawal or a PATCH reschedule (no event of their own says so).
    holds_ended_otherwise: Counter[int] = field(default_factory=Counter)
    # Waiting leads due outside their campaign's calling hours (tests/leads/test_ingest_calling_hours.py):
    # collected, not raised at once, so that the run goes on to find other faults.
    due_outside_hours: dict[int, str] = field(default_factory=dict)
    new_claims: int = 0
    sent: list[Sent] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    keys: int = 0
    seen: Counter[str] = field(default_factory=Counter)

    def campaign(self, campaign_id: int) -> Campaign:
        return next(c for c in self.campaigns if c.pk == campaign_id)

    def limit_of(self, customer_id: int) -> int:
        return next(LIMITS[name] for name, c in self.customers.items() if c.pk == customer_id)

    def new_key(self) -> str:
        self.keys += 1
        return f"k-{self.keys}"


def build_world(rng: random.Random) -> World:
    customers = {name: CustomerFactory() for name in ("a", "b", "c")}
    for name, customer in customers.items():
        set_policy(customer, **policy_values(name, rng))
    campaigns = [
        campaign_calling_all_day(customers["a"]),
        campaign_calling_all_day(customers["a"]),
        campaign_calling_all_day(customers["b"]),
        campaign_calling_all_day(customers["c"]),
        CampaignFactory(customer=customers["c"], **KOLKATA_AFTERNOONS),
    ]
    contractors = []
    qualified = {}
    for i in range(5):
        # The first one is qualified everywhere; the others for a few campaigns each.
        mine = campaigns if i == 0 else rng.sample(campaigns, rng.randint(2, len(campaigns)))
        contractor = ContractorFactory(campaigns=mine)
        contractors.append(contractor)
        qualified[contractor.pk] = [c.pk for c in mine]
    return World(rng, customers, campaigns, contractors, qualified)


def policy_values(name: str, rng: random.Random) -> dict[str, Any]:
    """A version of customer ``name``'s policy: its rates and limit, other settings at random."""
    return {
        **RATES[name],
        "reschedule_limit": LIMITS[name],
        "city_weights": rng.choice([{}, {"Mumbai": 2.5, "Pune": 0.6}, {"Delhi": 4.0, "Mumbai": 0.5}]),
        "source_weights": rng.choice([{}, {"ads": 2.0, "referral": 3.0}]),
        "stage_weights": rng.choice([{}, {"demo": 1.8, "lost": 0.2}]),
        "plan_weights": rng.choice([{}, {"enterprise": 1.7}, {"starter": 0.3}]),
        "sla_window_minutes": rng.choice([30, 45, 60]),
        "stale_every": rng.choice([0, 0, 2, 3]),
        "lease_seconds": rng.choice([60, 120, 300, 600]),
    }


# --- Operations ---------------------------------------------------------------------------


def push_new(world: World, now: dt.datetime) -> None:
    campaign = world.rng.choice(world.campaigns)
    items = []
    for _ in range(world.rng.randint(1, 3)):
        item = {
            "customer_id": campaign.customer_id,
            "campaign_id": campaign.pk,
            "external_id": f"x-{len(world.payloads) + len(items)}",
            **random_lead(world.rng, now),
        }
        items.append(item)
    results = ingest_lead_batch([as_json(i) for i in items], allowed_customer_id=None, now=now)
    for item, result in zip(items, results, strict=True):
        assert result.status == "created", result
        key = (item["customer_id"], item["external_id"])
        world.payloads[key] = item
        world.lead_ids[key] = result.lead_id
    world.seen["pushed new"] += len(items)


def as_json(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in item.items()}


def push_again(world: World, now: dt.datetime) -> None:
    """The customer sends a lead it sent before: the same record, or with changes."""
    if not world.payloads:
        return
    rng = world.rng
    key = rng.choice(sorted(world.payloads))
    item = dict(world.payloads[key])
    lead_id = world.lead_ids[key]
    before = Lead.objects.get(pk=lead_id)
    roll = rng.random()
    if roll < 0.25:
        item["lead_type"] = "stale" if item["lead_type"] == "live" else "live"
    if rng.random() < 0.3:
        item["city"] = rng.choice(["Mumbai", "Pune", "Delhi", ""])
        item["source"] = rng.choice(["ads", "referral", ""])
    resched = rng.random()
    if resched < 0.2:
        item.pop("rescheduled_at", None)
    elif resched < 0.45:
        base = before.rescheduled_at or now
        item["rescheduled_at"] = base - dt.timedelta(minutes=rng.uniform(1, 600))
    elif resched < 0.7:
        base = max(before.rescheduled_at or now, now)
        item["rescheduled_at"] = base + dt.timedelta(minutes=rng.uniform(1, rng.choice([60, 30 * 60])))
    if rng.random() < 0.1:
        # Another campaign of the same customer.
        same = [c for c in world.campaigns if c.customer_id == key[0]]
        item["campaign_id"] = rng.choice(same).pk
    if rng.random() < 0.2:
        item.pop("created_at", None)  # not sent: the stored one stays
    if rng.random() < 0.15:
        # Not a field of the API's leads (only files of past outcomes map one): ignored.
        item["converted"] = rng.choice([True, False])
    results = ingest_lead_batch([as_json(item)], allowed_customer_id=None, now=now)
    assert results[0].status == "updated", results
    assert results[0].lead_id == lead_id
    item.pop("converted", None)
    if "created_at" not in item:
        item["created_at"] = world.payloads[key]["created_at"]
    world.payloads[key] = item
    after = Lead.objects.get(pk=lead_id)
    world.seen["pushed again"] += 1

    # A push never touches the engine's state: holds, closings, counts, the first call.
    for name in (
        "holder_id",
        "lease_expires_at",
        "claimed_at",
        "attempt_count",
        "reschedule_count",
        "first_attempt_at",
        "closed_reason",
    ):
        assert getattr(after, name) == getattr(before, name), f"re-push of lead {lead_id} changed {name}"
    if before.status in (QueueStatus.HELD, QueueStatus.CLOSED):
        assert after.status == before.status, f"re-push moved lead {lead_id} out of {before.status}"
    sent = item.get("rescheduled_at")
    called_or_patched = (
        before.attempt_count > 0
        or LeadEvent.objects.filter(
            lead_id=lead_id, kind=EventKind.UPDATED, detail__has_key="rescheduled_at"
        ).exists()
    )
    moved_back = sent is not None and before.rescheduled_at is not None and sent < before.rescheduled_at
    if moved_back and called_or_patched:
        assert after.rescheduled_at == before.rescheduled_at, (
            f"re-push moved back the schedule of lead {lead_id} from {before.rescheduled_at} to {sent}"
        )
    if (
        before.lead_type == LeadType.STALE
        and item["lead_type"] == "live"
        and LeadEvent.objects.filter(lead_id=lead_id, kind=EventKind.BECAME_STALE).exists()
    ):
        assert after.lead_type == LeadType.STALE, f"re-push made lead {lead_id} live again"


def held_now(contractor_id: int, now: dt.datetime) -> Lead | None:
    return Lead.objects.filter(holder_id=contractor_id, lease_expires_at__gt=now).first()


def claim(world: World, now: dt.datetime) -> None:
    rng = world.rng
    # Mostly a contractor who is free (the Contract app asks when one is), sometimes a retry.
    free = [c for c in world.contractors if held_now(c.pk, now) is None]
    contractor = rng.choice(free if free and rng.random() < 0.75 else world.contractors)
    mine = world.qualified[contractor.pk]
    tuple_ids = rng.sample(mine, rng.randint(1, len(mine)))
    holding = held_now(contractor.pk, now)
    expected, band = (None, None) if holding else oracle(contractor.pk, tuple_ids, now)
    decisions_before = Decision.objects.count()
    result = claim_next_lead(contractor_id=contractor.pk, campaign_ids=tuple_ids, now=now)
    if holding is not None:
        # Asking again while holding returns the same lead, and decides nothing new.
        assert result is not None, f"contractor {contractor.pk} holds lead {holding.pk} but was told 204"
        assert result.repeated
        assert result.lead.pk == holding.pk == world.holds[contractor.pk].lead_id
        assert result.decision.lead_id == holding.pk
        assert Decision.objects.count() == decisions_before
        world.seen["repeated claim"] += 1
        return
    got = result.lead.pk if result else None
    assert got == expected, f"at {now}: engine handed out {got}, the oracle ranks {expected} ({band}) first"
    if result is None:
        world.seen["nothing to call"] += 1
        return
    assert band is not None
    assert not result.repeated
    lead = result.lead
    assert lead.pk not in world.closed, f"closed lead {lead.pk} was handed out"
    assert lead.campaign_id in tuple_ids
    assert lead.campaign_id not in world.paused
    assert CallingHours.of(world.campaign(lead.campaign_id)).is_open(now)
    assert (lead.status, lead.holder_id, lead.claimed_at) == (QueueStatus.HELD, contractor.pk, now)
    assert lead.due_at <= now, f"lead {lead.pk} handed out before it is due ({lead.due_at})"
    # Exactly one decision per claim, logged with the lead, contractor, band and lease.
    assert Decision.objects.count() == decisions_before + 1
    decision = Decision.objects.get(pk=result.decision.pk)
    assert (decision.lead_id, decision.contractor_id, decision.decided_at) == (lead.pk, contractor.pk, now)
    assert decision.band == band.name.lower()
    assert decision.lease_expires_at == lead.lease_expires_at
    # Whoever held it before lost it when its lease ran out.
    for other, held in list(world.holds.items()):
        if held.lead_id == lead.pk:
            assert held.lease <= now, f"lead {lead.pk} held by {other} until {held.lease} handed out again"
            del world.holds[other]
    world.holds[contractor.pk] = Held(lead.pk, lead.lease_expires_at)
    world.new_claims += 1
    world.seen[f"claim {band.name}"] += 1


def lead_row(lead_id: int) -> dict[str, Any]:
    return Lead.objects.filter(pk=lead_id).values().get()


def report(world: World, now: dt.datetime) -> None:
    """An outcome from the holder (most often), a stranger, or a retry of an earlier one."""
    rng = world.rng
    roll = rng.random()
    if roll < 0.15 and world.sent:
        send_again(world, rng.choice(world.sent), now)
        return
    if not world.holds:
        return
    contractor_id = rng.choice(sorted(world.holds))
    lead_id = world.holds[contractor_id].lead_id
    if roll < 0.25:
        strangers = [c.pk for c in world.contractors if c.pk != contractor_id]
        stranger = rng.choice(strangers)
        before = lead_row(lead_id)
        if before["holder_id"] == stranger:
            return
        with pytest.raises(LeadStateConflict):
            record_outcome(
                lead_id=lead_id,
                contractor_id=stranger,
                disposition=rng.choice(DISPOSITIONS),
                callback_at=now + HOUR,
                idempotency_key=rng.choice(["", world.new_key()]),
                now=now,
            )
        assert lead_row(lead_id) == before, "an outcome from a contractor who does not hold the lead wrote it"
        world.seen["stranger's outcome refused"] += 1
        return
    record(world, contractor_id, lead_id, now)


def record(world: World, contractor_id: int, lead_id: int, now: dt.datetime) -> None:
    rng = world.rng
    # No-answers most often, as on a real floor: they drive reschedules and the stale rule.
    disposition = rng.choices(DISPOSITIONS, [30, 12, 10, 13, 10, 5, 5])[0]
    callback_at = now + dt.timedelta(minutes=rng.uniform(-10, 48 * 60)) if disposition == "callback" else None
    key = world.new_key() if rng.random() < 0.6 else ""
    before = Lead.objects.get(pk=lead_id)
    accepted = before.status == QueueStatus.HELD and before.holder_id == contractor_id
    events_before = LeadEvent.objects.filter(lead_id=lead_id).count()
    limit = world.limit_of(before.customer_id)
    call = {
        "lead_id": lead_id,
        "contractor_id": contractor_id,
        "disposition": disposition,
        "callback_at": callback_at,
        "idempotency_key": key,
    }
    if not accepted:
        # Its lease ran out and a claim or beat gave it back (or to another) meanwhile.
        assert world.holds[contractor_id].lease <= now
        with pytest.raises(LeadStateConflict):
            record_outcome(**call, now=now)
        del world.holds[contractor_id]
        world.seen["late outcome refused"] += 1
        return
    result = record_outcome(**call, now=now, rng=random.Random(rng.random()))
    assert not result.repeated
    del world.holds[contractor_id]
    after = Lead.objects.get(pk=lead_id)
    hours = CallingHours.of(world.campaign(after.campaign_id))
    assert after.attempt_count == before.attempt_count + 1
    assert after.holder_id is None
    assert after.first_attempt_at == (before.first_attempt_at or before.claimed_at)
    assert after.last_attempt_at == before.claimed_at
    if disposition in CLOSING:
        assert (after.status, after.closed_reason) == (QueueStatus.CLOSED, CLOSING[disposition])
        world.closed[lead_id] = after.closed_reason
    elif disposition == "callback":
        assert callback_at is not None
        assert after.due_at == after.rescheduled_at == next_opening(max(callback_at, now), hours)
        assert after.lead_type == before.lead_type
        assert after.reschedule_count == before.reschedule_count
    elif before.lead_type == LeadType.LIVE and before.reschedule_count >= limit:
        # The no-answer after the last reschedule: stale, callable at once (its due time stays).
        assert after.lead_type == LeadType.STALE, f"lead {lead_id} past its {limit} reschedules is still live"
        assert after.reschedule_count == before.reschedule_count
        assert after.due_at == before.due_at
        assert LeadEvent.objects.filter(lead_id=lead_id, kind=EventKind.BECAME_STALE).exists()
        world.seen["became stale"] += 1
    else:
        assert after.lead_type == before.lead_type
        assert after.reschedule_count == before.reschedule_count + 1
        # 22-24 h later, moved to the next opening when that falls outside calling hours.
        assert next_opening(now + 22 * HOUR, hours) <= after.due_at <= next_opening(now + 24 * HOUR, hours)
        assert hours.is_open(after.due_at), f"lead {lead_id} rescheduled outside calling hours"
        assert after.rescheduled_at == after.due_at
        if before.lead_type == LeadType.LIVE:
            world.live_reschedules[lead_id] += 1
            assert world.live_reschedules[lead_id] <= limit
        world.seen["rescheduled"] += 1
    if after.status != QueueStatus.CLOSED:
        assert after.status == (QueueStatus.READY if after.due_at <= now else QueueStatus.WAITING)
    world.seen[f"outcome {disposition}"] += 1
    if key:
        world.sent.append(Sent(lead_id, contractor_id, disposition, callback_at, key))
    if rng.random() < 0.3:
        # The Contract app retries at once (the same key, or none): nothing changes.
        row = lead_row(lead_id)
        events = LeadEvent.objects.filter(lead_id=lead_id).count()
        again = record_outcome(**call, now=now + dt.timedelta(seconds=1))
        assert again.repeated, f"the same {disposition} sent again for lead {lead_id} was recorded twice"
        assert lead_row(lead_id) == row
        assert LeadEvent.objects.filter(lead_id=lead_id).count() == events
        world.seen["retried at once"] += 1
    assert LeadEvent.objects.filter(lead_id=lead_id).count() > events_before


def send_again(world: World, sent: Sent, now: dt.datetime) -> None:
    """An outcome sent again under its key, however long after: a repeat, nothing changes."""
    row = lead_row(sent.lead_id)
    events = LeadEvent.objects.filter(lead_id=sent.lead_id).count()
    result = record_outcome(
        lead_id=sent.lead_id,
        contractor_id=sent.contractor_id,
        disposition=sent.disposition,
        callback_at=sent.callback_at,
        idempotency_key=sent.key,
        now=now,
    )
    assert result.repeated, f"outcome {sent} sent again under its key was recorded again"
    assert lead_row(sent.lead_id) == row
    assert LeadEvent.objects.filter(lead_id=sent.lead_id).count() == events
    world.seen["sent again under its key"] += 1


def release_or_extend(world: World, now: dt.datetime) -> None:
    if not world.holds:
        return
    rng = world.rng
    contractor_id = rng.choice(sorted(world.holds))
    held = world.holds[contractor_id]
    before = Lead.objects.get(pk=held.lead_id)
    holds_it = before.status == QueueStatus.HELD and before.holder_id == contractor_id
    if rng.random() < 0.5:
        if not holds_it:
            with pytest.raises(LeadStateConflict):
                release_lead(lead_id=held.lead_id, contractor_id=contractor_id, now=now)
            del world.holds[contractor_id]
            return
        lead = release_lead(lead_id=held.lead_id, contractor_id=contractor_id, now=now)
        assert lead.status == (QueueStatus.READY if lead.due_at <= now else QueueStatus.WAITING)
        del world.holds[contractor_id]
        world.seen["released"] += 1
        return
    if not holds_it or held.lease <= now:
        with pytest.raises(LeadStateConflict):
            extend_lease(lead_id=held.lead_id, contractor_id=contractor_id, now=now)
        world.seen["extension refused"] += 1
        return
    lead = extend_lease(lead_id=held.lead_id, contractor_id=contractor_id, now=now)
    version = current_versions([lead.customer_id])[lead.customer_id]
    assert lead.lease_expires_at == max(held.lease, now + dt.timedelta(seconds=version.lease_seconds))
    held.lease = lead.lease_expires_at
    world.seen["extended"] += 1


def withdraw(world: World, now: dt.datetime) -> None:
    if not world.lead_ids:
        return
    lead_id = world.rng.choice(sorted(world.lead_ids.values()))
    if Lead.objects.filter(pk=lead_id, status=QueueStatus.HELD).exists():
        world.holds_ended_otherwise[lead_id] += 1
    lead = withdraw_lead(lead_id=lead_id, now=now)
    assert lead.status == QueueStatus.CLOSED
    world.closed.setdefault(lead_id, CloseReason.WITHDRAWN)
    assert lead.closed_reason == world.closed[lead_id]
    for contractor_id, held in list(world.holds.items()):
        if held.lead_id == lead_id:
            del world.holds[contractor_id]
    world.seen["withdrawn"] += 1


def patch(world: World, now: dt.datetime) -> None:
    """The Contract app propagates a rescheduled_at or lead_type change."""
    if not world.lead_ids:
        return
    rng = world.rng
    lead_id = rng.choice(sorted(world.lead_ids.values()))
    before = Lead.objects.get(pk=lead_id)
    changes: dict[str, Any] = {}
    if rng.random() < 0.7:
        changes["rescheduled_at"] = rng.choice(
            [None, now + dt.timedelta(minutes=rng.uniform(-120, rng.choice([90, 40 * 60])))]
        )
    if not changes or rng.random() < 0.4:
        changes["lead_type"] = rng.choice(["live", "stale"])
    moves = "rescheduled_at" in changes and changes["rescheduled_at"] != before.rescheduled_at
    if moves and changes["rescheduled_at"] is not None and before.status == QueueStatus.CLOSED:
        with pytest.raises(LeadConflict):
            update_lead(lead_id=lead_id, changes=changes, now=now)
        world.seen["patch of a closed lead refused"] += 1
        return
    lead = update_lead(lead_id=lead_id, changes=changes, now=now)
    if before.status == QueueStatus.CLOSED:
        assert (lead.status, lead.closed_reason) == (QueueStatus.CLOSED, before.closed_reason)
    elif moves and changes["rescheduled_at"] is not None:
        # A held lead being rescheduled is released: its call is over.
        hours = CallingHours.of(world.campaign(lead.campaign_id))
        assert lead.rescheduled_at == next_opening(changes["rescheduled_at"], hours)
        assert lead.due_at == max(lead.created_at, lead.rescheduled_at)
        assert lead.holder_id is None
        assert lead.status == (QueueStatus.READY if lead.due_at <= now else QueueStatus.WAITING)
        for contractor_id, held in list(world.holds.items()):
            if held.lead_id == lead_id:
                del world.holds[contractor_id]
        if before.status == QueueStatus.HELD:
            world.holds_ended_otherwise[lead_id] += 1
    elif before.status == QueueStatus.HELD:
        assert (lead.status, lead.holder_id) == (QueueStatus.HELD, before.holder_id)
    world.seen["patched"] += 1


def change_policy(world: World, now: dt.datetime) -> None:
    name = world.rng.choice(sorted(world.customers))
    set_policy(world.customers[name], **policy_values(name, world.rng))
    world.seen["policy changed"] += 1


def rescore(world: World, now: dt.datetime) -> None:
    rescore_leads()
    # Every open lead is keyed under its customer's version in force now.
    versions = current_versions(c.pk for c in world.customers.values())
    for lead in Lead.objects.exclude(status=QueueStatus.CLOSED):
        assert lead.scored_version == versions[lead.customer_id].pk, f"lead {lead.pk} not rescored"
    world.seen["rescored"] += 1


def wake(world: World, now: dt.datetime) -> None:
    wake_due_leads(now=now)
    assert not Lead.objects.filter(status=QueueStatus.WAITING, due_at__lte=now).exists()
    assert not Lead.objects.filter(status=QueueStatus.HELD, lease_expires_at__lte=now).exists()
    world.seen["woken"] += 1


def pause_or_resume(world: World, now: dt.datetime) -> None:
    # A pause is short: a paused campaign is resumed most of the time.
    if world.paused and world.rng.random() < 0.7:
        campaign = world.campaign(world.rng.choice(sorted(world.paused)))
    else:
        campaign = world.rng.choice(world.campaigns)
    active = campaign.pk in world.paused
    Campaign.objects.filter(pk=campaign.pk).update(active=active)
    if active:
        world.paused.discard(campaign.pk)
    else:
        world.paused.add(campaign.pk)
    world.seen["paused or resumed"] += 1


OPERATIONS = [
    (push_new, 6),
    (push_again, 8),
    (claim, 30),
    (report, 30),
    (release_or_extend, 8),
    (withdraw, 2),
    (patch, 6),
    (change_policy, 1.5),
    (rescore, 2),
    (wake, 3),
    (pause_or_resume, 1.5),
]


# --- Invariants -----------------------------------------------------------------------------


def check_invariants(world: World, now: dt.datetime) -> None:
    leads = {lead.pk: lead for lead in Lead.objects.all()}
    # Nothing lost, nothing duplicated: one lead per external id pushed.
    assert set(leads) == set(world.lead_ids.values())
    attempts = dict(
        LeadEvent.objects.filter(kind=EventKind.ATTEMPT).values_list("lead").annotate(n=Count("id"))
    )
    events = Counter(
        LeadEvent.objects.filter(
            kind__in=[EventKind.CLAIMED, EventKind.RELEASED, EventKind.LEASE_EXPIRED]
        ).values_list("lead", "kind")
    )
    holders = Counter(lead.holder_id for lead in leads.values() if lead.holder_id is not None)
    assert not [c for c, n in holders.items() if n > 1], "a contractor holds two leads"

    for lead in leads.values():
        where = f"lead {lead.pk} ({lead.status}, {lead.lead_type}) at {now}"
        if lead.status == QueueStatus.HELD:
            assert lead.holder_id, where
            assert lead.lease_expires_at, where
            assert lead.claimed_at, where
            held = world.holds.get(lead.holder_id)
            assert held is not None, f"{where}: held by {lead.holder_id}, who holds nothing here"
            assert held.lead_id == lead.pk, f"{where}: held by {lead.holder_id}, who holds {held.lead_id}"
            assert lead.lease_expires_at == held.lease, where
        else:
            assert (lead.holder_id, lead.lease_expires_at, lead.claimed_at) == (None, None, None), where
        if lead.status == QueueStatus.CLOSED:
            assert world.closed.get(lead.pk) == lead.closed_reason, f"{where}: closed as {lead.closed_reason}"
            assert lead.closed_at is not None
        else:
            assert lead.pk not in world.closed, f"{where}: closed as {world.closed.get(lead.pk)}, reopened"
            assert lead.closed_reason == ""
            # Due when its data says: created_at, or its (re)schedule if later.
            expected_due = max(lead.created_at, lead.rescheduled_at or lead.created_at)
            assert lead.due_at == expected_due, f"{where}: due {lead.due_at}, data says {expected_due}"
            # Its stored key and deadline are those its facts give under its stored version.
            params = params_for_version(lead.scored_version)
            facts = facts_of(lead)
            assert lead.priority_key == pytest.approx(priority_key(facts, params), abs=1e-9), (
                f"{where}: key {lead.priority_key} is not its facts' {priority_key(facts, params)}"
            )
            assert lead.sla_deadline == sla_deadline(facts, params), where
        if lead.status == QueueStatus.READY:
            assert lead.due_at <= now, f"{where}: ready before it is due ({lead.due_at})"
        # Reschedules and callbacks land inside calling hours (DESIGN, "Rules").
        if (
            lead.status == QueueStatus.WAITING
            and lead.pk not in world.due_outside_hours
            and not CallingHours.of(world.campaign(lead.campaign_id)).is_open(lead.due_at)
        ):
            world.due_outside_hours[lead.pk] = f"{where}: due {lead.due_at}, campaign {lead.campaign_id}"
        # Every hold ends once: by an attempt, a release, a lapsed lease, a withdrawal or a
        # PATCH reschedule; or it is still on.
        ends = (
            attempts.get(lead.pk, 0)
            + events[(lead.pk, EventKind.RELEASED)]
            + events[(lead.pk, EventKind.LEASE_EXPIRED)]
            + world.holds_ended_otherwise[lead.pk]
            + (lead.status == QueueStatus.HELD)
        )
        assert events[(lead.pk, EventKind.CLAIMED)] == ends, f"{where}: claims and the ends of holds differ"
        # (A waiting lead already due is fine: claims and beat wake them lazily; `wake` checks.)
        assert lead.attempt_count == attempts.get(lead.pk, 0), f"{where}: attempts vs attempt events"
        if lead.lead_type == LeadType.LIVE:
            assert world.live_reschedules[lead.pk] <= world.limit_of(lead.customer_id), where
        if lead.pk in world.first_attempt:
            assert lead.first_attempt_at == world.first_attempt[lead.pk], f"{where}: first call moved"
        elif lead.first_attempt_at is not None:
            assert lead.attempt_count > 0, where
            world.first_attempt[lead.pk] = lead.first_attempt_at

    # The model's holds: still held as recorded, or their lease ran out and the lead went back.
    for contractor_id, held in list(world.holds.items()):
        lead = leads[held.lead_id]
        if lead.status == QueueStatus.HELD and lead.holder_id == contractor_id:
            continue
        assert held.lease <= now, (
            f"lead {held.lead_id} of contractor {contractor_id} left it before its lease"
        )
        del world.holds[contractor_id]
    # Every claim logged exactly one decision (and one claimed event).
    assert Decision.objects.count() == world.new_claims
    assert LeadEvent.objects.filter(kind=EventKind.CLAIMED).count() == world.new_claims


def next_weekday_morning(after: dt.datetime) -> dt.datetime:
    """10:00 UTC (15:30 in Kolkata) on the first weekday after ``after``."""
    day = (after + dt.timedelta(days=1)).date()
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC)


def drain(world: World, now: dt.datetime) -> None:
    """Days later, with every campaign open and active: every lead not closed is handed out
    (the oracle's first each time) and closes. Nothing was lost on the way."""
    Campaign.objects.update(active=True)
    world.paused.clear()
    everywhere = ContractorFactory(campaigns=world.campaigns)
    ids = [c.pk for c in world.campaigns]
    open_leads = set(Lead.objects.exclude(status=QueueStatus.CLOSED).values_list("pk", flat=True))
    served = set()
    while True:
        expected, _ = oracle(everywhere.pk, ids, now)
        result = claim_next_lead(contractor_id=everywhere.pk, campaign_ids=ids, now=now)
        assert (result.lead.pk if result else None) == expected
        if result is None:
            break
        assert result.lead.pk not in served
        served.add(result.lead.pk)
        record_outcome(lead_id=result.lead.pk, contractor_id=everywhere.pk, disposition="converted", now=now)
        now += dt.timedelta(seconds=5)
    assert served == open_leads, f"never handed out again: {sorted(open_leads - served)}"
    assert not Lead.objects.exclude(status=QueueStatus.CLOSED).exists()


@pytest.mark.parametrize("seed", [20261124, 1234, 103])
@pytest.mark.django_db
def test_a_random_life_of_leads_through_every_service_keeps_the_engines_invariants(seed: int) -> None:
    rng = random.Random(seed)
    world = build_world(rng)
    operations, weights = zip(*OPERATIONS, strict=True)
    now = T0
    with time_machine.travel(now, tick=False) as traveller:
        for _ in range(3):
            push_new(world, now)
        for step in range(400):
            if rng.random() < 0.08:
                # Reschedules come due: often a day later (the time of day stays near the
                # Kolkata campaign's hours), else anywhere up to 25 h (nights, weekends).
                hours = rng.uniform(22, 24.5) if rng.random() < 0.6 else rng.uniform(1, 25)
                now += dt.timedelta(hours=hours)
            else:
                now += dt.timedelta(seconds=rng.expovariate(1 / 150))
            traveller.move_to(now)
            operation = rng.choices(operations, weights)[0]
            try:
                operation(world, now)
                check_invariants(world, now)
            except AssertionError as error:
                raise AssertionError(
                    f"seed {seed}, step {step}, {operation.__name__} at {now}: {error}"
                ) from error
        # Past every schedule, so that every lead not closed is due.
        last_due = max(
            [now, *Lead.objects.exclude(status=QueueStatus.CLOSED).values_list("due_at", flat=True)]
        )
        end = next_weekday_morning(last_due)
        traveller.move_to(end)
        drain(world, end)

    # The run went through what it is meant to.
    for seen in (
        "claim LIVE",
        "claim STALE",
        "rescheduled",
        "became stale",
        "pushed again",
        "patched",
        "outcome callback",
        "released",
        "extended",
        "repeated claim",
        "sent again under its key",
        "stranger's outcome refused",
    ):
        assert world.seen[seen] > 0, (seen, dict(world.seen))
    assert not world.due_outside_hours, (
        f"{len(world.due_outside_hours)} waiting leads due outside their campaign's calling hours, e.g. "
        + "; ".join(list(world.due_outside_hours.values())[:3])
    )
