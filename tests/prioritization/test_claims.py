"""claim_next_lead: the oracle equivalence, atomicity under real concurrency, holds, leases, refusals."""

import datetime as dt
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import time_machine
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from leads.models import Campaign, Contractor, EventKind, Lead, LeadEvent, QueueStatus
from prioritization import services
from prioritization.calling_hours import CallingHours
from prioritization.models import Decision, PolicyVersion, PriorityPolicy
from prioritization.scoring import Band, wants_stale
from prioritization.services import (
    ClaimRefused,
    claim_next_lead,
    current_versions,
    ranked_leads_at,
    record_outcome,
    release_lead,
    rescore_leads,
    wake_due_leads,
)
from tests.conftest import generic_plan_nodes
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_lead, add_leads, set_policy

MINUTE = dt.timedelta(minutes=1)
CITIES = ["Mumbai", "Pune", "Delhi", "Atlantis", ""]
SOURCES = ["ads", "referral", "web", ""]
STAGES = ["demo", "new", "lost", ""]
PLANS = ["starter", "pro", "enterprise", None]


def oracle(contractor_id: int, campaign_ids: list[int], now: dt.datetime) -> tuple[int | None, Band | None]:
    """Brute force: rank every eligible lead at ``now`` with its stored version, then apply
    the stale_every rule of the policies in force with the contractor's claims so far."""
    ranked = ranked_leads_at(campaign_ids=campaign_ids, now=now)
    if not ranked:
        return None, None
    customers = Campaign.objects.filter(pk__in=campaign_ids).values_list("customer_id", flat=True)
    stale_every = max(v.stale_every for v in current_versions(customers).values())
    claims_made = Contractor.objects.get(pk=contractor_id).claims_made
    if wants_stale(claims_so_far=claims_made, stale_every=stale_every):
        stale = [r for r in ranked if r.band == Band.STALE]
        if stale:
            return stale[0].candidate.lead_id, Band.STALE
    return ranked[0].candidate.lead_id, ranked[0].band


def each_at_once(work: Callable[[int], None], contractor_ids: list[int]) -> None:
    """``work(id)`` for each contractor, each in its own thread (and database connection),
    all released at once; fails with the errors any of them met."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(contractor_ids))

    def run(contractor_id: int) -> None:
        try:
            start.wait()
            work(contractor_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(contractor_id,)) for contractor_id in contractor_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def random_lead(rng: random.Random, now: dt.datetime) -> dict[str, object]:
    live = rng.random() < 0.7
    item: dict[str, object] = {
        "lead_type": "live" if live else "stale",
        "city": rng.choice(CITIES),
        "source": rng.choice(SOURCES),
        "stage": rng.choice(STAGES),
        "created_at": now - dt.timedelta(minutes=rng.uniform(0, 40 if live else 600)),
    }
    if plan := rng.choice(PLANS):
        item["pricing_plan"] = plan
    if rng.random() < 0.7:
        item["last_activity"] = now - dt.timedelta(minutes=rng.uniform(0, 60 * 24 * 60))
    if rng.random() < 0.15:
        item["rescheduled_at"] = now + dt.timedelta(minutes=rng.uniform(1, 120))
    return item


@pytest.mark.parametrize("seed", [20261124, 7, 1234])
@pytest.mark.django_db
def test_the_claimed_lead_is_always_the_one_the_brute_force_oracle_ranks_first(seed: int) -> None:
    rng = random.Random(seed)
    customer_a, customer_b, customer_c = CustomerFactory(), CustomerFactory(), CustomerFactory()
    set_policy(
        customer_a,
        live_decay_minutes=15,
        stale_activity_decay_days=7,
        city_weights={"Mumbai": 2.5, "Pune": 0.6},
        plan_weights={"enterprise": 1.7},
        sla_protect_minutes=10,
        lease_seconds=120,
    )
    version_b = set_policy(
        customer_b,
        live_decay_minutes=40,
        source_weights={"ads": 2.0, "referral": 3.0},
        stage_weights={"demo": 1.8, "lost": 0.2},
        sla_window_minutes=45,
        sla_protect_minutes=20,
        stale_every=3,
        lease_seconds=300,
    )
    assert version_b.stale_every == 3
    campaigns = [
        campaign_calling_all_day(c) for c in (customer_a, customer_a, customer_b, customer_b, customer_c)
    ]
    # One campaign calls only in its afternoons (India): open at T0 (15:30 there), closed from
    # 13:30 UTC and on the next day's evening, so tuples meet it open and closed.
    afternoons = CampaignFactory(
        customer=customer_c,
        time_zone="Asia/Kolkata",
        calling_hours_start=dt.time(14),
        calling_hours_end=dt.time(19),
        calling_days=[0, 1, 2, 3, 4],
    )
    campaigns.append(afternoons)
    ids = [c.pk for c in campaigns]
    contractors = [ContractorFactory(campaigns=campaigns) for _ in range(6)]

    with time_machine.travel(T0, tick=False):
        for campaign in campaigns:
            add_leads(campaign, *(random_lead(rng, T0) for _ in range(25)))
        # Some leads start out held by contractors who will never report: their leases expire.
        for contractor in contractors[:3]:
            assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=ids) is not None

    now = T0
    checked = Counter[str]()
    policy_changed_at = 40
    for step in range(130):
        now += dt.timedelta(seconds=rng.expovariate(1 / 200))
        if step == 90:
            now += dt.timedelta(hours=23)  # reschedules come due
        with time_machine.travel(now, tick=False):
            if rng.random() < 0.4:
                campaign = rng.choice(campaigns)
                add_leads(campaign, *(random_lead(rng, now) for _ in range(rng.randint(1, 3))))
            if step == policy_changed_at:
                # A new version with other weights and SLA window: queued leads keep their
                # stored version until rescoring; new and re-queued leads get the new one.
                # (Same decays and protection: see the xfail test below for a decay change.)
                new_a = set_policy(
                    customer_a,
                    live_decay_minutes=15,
                    stale_activity_decay_days=7,
                    city_weights={"Delhi": 4.0, "Mumbai": 0.5},
                    plan_weights={"starter": 0.3},
                    sla_window_minutes=20,
                    sla_protect_minutes=10,
                    lease_seconds=120,
                )
            if step == policy_changed_at + 15:
                summary = rescore_leads()
                assert summary.rewritten > 0
                assert (
                    not Lead.objects.filter(customer=customer_a)
                    .exclude(status=QueueStatus.CLOSED)
                    .exclude(scored_version=new_a.pk)
                    .exists()
                )
                checked["rescored"] += 1

            free = [
                c
                for c in contractors
                if not Lead.objects.filter(
                    holder=c, status=QueueStatus.HELD, lease_expires_at__gt=now
                ).exists()
            ]
            if not free:
                continue
            contractor = rng.choice(free)
            tuple_ids = rng.sample(ids, rng.randint(1, len(ids)))
            expected, band = oracle(contractor.pk, tuple_ids, now)
            if afternoons.pk in tuple_ids and not CallingHours.of(afternoons).is_open(now):
                checked["outside calling hours"] += 1
            claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=tuple_ids)
            got = claim.lead.pk if claim else None
            assert got == expected, f"step {step} at {now}: engine {got}, oracle {expected} ({band})"
            if claim is None:
                checked["empty"] += 1
                continue
            assert not claim.repeated
            assert claim.decision.band == band.name.lower()
            checked[band.name] += 1
            if policy_changed_at <= step < policy_changed_at + 15:
                checked["between rescoring runs"] += 1

            roll = rng.random()
            lead_id = claim.lead.pk
            if roll < 0.45:
                record_outcome(lead_id=lead_id, contractor_id=contractor.pk, disposition="no_answer")
            elif roll < 0.55:
                callback_at = now + dt.timedelta(minutes=rng.uniform(5, 90))
                record_outcome(
                    lead_id=lead_id,
                    contractor_id=contractor.pk,
                    disposition="callback",
                    callback_at=callback_at,
                )
            elif roll < 0.65:
                record_outcome(lead_id=lead_id, contractor_id=contractor.pk, disposition="converted")
            elif roll < 0.75:
                release_lead(lead_id=lead_id, contractor_id=contractor.pk)
            # else: the contractor goes silent and the lease runs out.

    # The run exercised every band, the stale share, expiries and the window between rescoring runs.
    assert min(checked["AT_RISK"], checked["LIVE"], checked["STALE"]) > 0, checked
    assert checked["between rescoring runs"] >= 5, checked
    assert checked["rescored"] == 1, checked
    assert checked["outside calling hours"] >= 5, checked
    assert LeadEvent.objects.filter(kind=EventKind.LEASE_EXPIRED).exists()


def decay_changed_between_two_leads(make_contractor) -> tuple[int, Campaign, Lead, Lead]:
    """A campaign whose older lead is keyed under a live decay of 20 min and whose newer
    one, added after the policy changed to 200 min, under the new one (at T0)."""
    customer = CustomerFactory()
    set_policy(customer, live_decay_minutes=20)
    campaign = campaign_calling_all_day(customer)
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        older = add_lead(campaign, created_at=T0 - 60 * MINUTE)  # old version: score exp(−60/20)
        set_policy(customer, live_decay_minutes=200)
        newer = add_lead(campaign, created_at=T0 - 40 * MINUTE)  # new version: exp(−40/200)
    return contractor.pk, campaign, older, newer


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Known limitation: keys of one campaign stored under versions with different decays "
        "(τ) are not comparable, so between a decay change and the next rescoring pass the "
        "claim takes the lead with the highest key, not the best score."
    ),
)
@pytest.mark.django_db
def test_a_decay_change_between_rescoring_runs_still_matches_the_oracle(make_contractor) -> None:
    contractor_id, campaign, _, newer = decay_changed_between_two_leads(make_contractor)
    with time_machine.travel(T0, tick=False):
        expected, _ = oracle(contractor_id, [campaign.pk], T0)
        assert expected == newer.pk
        claim = claim_next_lead(contractor_id=contractor_id, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == expected


@pytest.mark.django_db
def test_the_gap_after_a_decay_change_closes_with_the_rescoring_pass(make_contractor) -> None:
    # The bound of the known limitation above: once one pass has rekeyed the campaign under
    # the new decay, the claim is the oracle's first again, whatever the instant.
    contractor_id, campaign, older, newer = decay_changed_between_two_leads(make_contractor)
    assert rescore_leads().rewritten == 1  # the older lead, keyed under the old decay
    for minutes in (0, 7, 90):
        now = T0 + minutes * MINUTE
        with time_machine.travel(now, tick=False):
            expected, _ = oracle(contractor_id, [campaign.pk], now)
            claim = claim_next_lead(contractor_id=contractor_id, campaign_ids=[campaign.pk])
        assert claim is not None
        assert claim.lead.pk == expected == newer.pk  # 40 min at τ = 200 beats 60 min at τ = 20
        release_lead(lead_id=claim.lead.pk, contractor_id=contractor_id, now=now)
    assert Lead.objects.get(pk=older.pk).status == QueueStatus.READY


@pytest.mark.django_db(transaction=True)
def test_concurrent_contractors_never_receive_the_same_lead() -> None:
    customer = CustomerFactory()
    set_policy(customer, stale_every=2)
    campaigns = [campaign_calling_all_day(customer) for _ in range(3)]
    ids = [c.pk for c in campaigns]
    rng = random.Random(7)
    leads = []
    for campaign in campaigns:
        leads += add_leads(campaign, *(random_lead(rng, timezone.now()) for _ in range(60)))
    # Threads run on the real clock: make the leads rescheduled into the future due now.
    Lead.objects.filter(status=QueueStatus.WAITING).update(
        status=QueueStatus.READY, due_at=timezone.now(), rescheduled_at=None
    )
    contractors = [ContractorFactory(campaigns=campaigns) for _ in range(8)]
    taken: dict[int, list[int]] = {c.pk: [] for c in contractors}

    def work(contractor_id: int) -> None:
        while True:
            claim = claim_next_lead(contractor_id=contractor_id, campaign_ids=ids)
            if claim is None:
                if not Lead.objects.filter(status=QueueStatus.READY).exists():
                    return
                continue
            assert not claim.repeated
            taken[contractor_id].append(claim.lead.pk)
            # While held, nobody else may hold it: the outcome closes it.
            record_outcome(lead_id=claim.lead.pk, contractor_id=contractor_id, disposition="converted")

    each_at_once(work, [c.pk for c in contractors])
    handed_out = [lead_id for ids_ in taken.values() for lead_id in ids_]
    assert len(handed_out) == len(set(handed_out)) == len(leads)
    assert set(handed_out) == {lead.pk for lead in leads}
    assert sum(1 for ids_ in taken.values() if ids_) > 1  # the work was really shared
    per_lead = Counter(Decision.objects.values_list("lead_id", flat=True))
    assert set(per_lead.values()) == {1}
    assert len(per_lead) == len(leads)
    assert not Lead.objects.exclude(status=QueueStatus.CLOSED).exists()
    for contractor in Contractor.objects.all():
        assert contractor.claims_made == len(taken[contractor.pk]) == contractor.decisions.count()


@pytest.mark.django_db(transaction=True)
def test_contractors_asking_at_the_same_instant_each_get_a_lead_not_nothing_to_call() -> None:
    # All choose the same best lead and one takes it, round after round: the last of them
    # needed as many rounds as there were contractors, and past 8 was told "nothing" (204).
    campaign = campaign_calling_all_day()
    now = timezone.now()
    add_leads(campaign, *({"created_at": now - dt.timedelta(seconds=i)} for i in range(100)))
    contractors = [ContractorFactory(campaigns=[campaign]) for _ in range(24)]
    handed: dict[int, int | None] = {}

    def ask(contractor_id: int) -> None:
        claim = claim_next_lead(contractor_id=contractor_id, campaign_ids=[campaign.pk])
        handed[contractor_id] = claim.lead.pk if claim else None

    each_at_once(ask, [c.pk for c in contractors])

    assert None not in handed.values()
    assert len(set(handed.values())) == len(contractors)


@pytest.mark.django_db
def test_a_claim_that_loses_every_lead_it_chooses_asks_to_retry_rather_than_saying_nothing_is_there(
    all_day_campaign: Campaign, make_contractor, monkeypatch: pytest.MonkeyPatch
) -> None:
    contractor = make_contractor(all_day_campaign)
    add_leads(all_day_campaign, *({} for _ in range(3)))
    monkeypatch.setattr(services, "MAX_TAKE_ATTEMPTS", 2)
    monkeypatch.setattr(services, "_take", lambda chosen, *args, **kwargs: chosen.candidate.lead_id)

    with pytest.raises(ClaimRefused) as refused:
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk], now=T0)

    assert refused.value.status == 503
    assert refused.value.retry_after == T0 + dt.timedelta(seconds=1)
    assert "taken by another contractor meanwhile; ask again" in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_simultaneous_holds_never_share_a_lead_and_one_contractors_parallel_retries_take_one_lead() -> None:
    customer = CustomerFactory()
    campaign = campaign_calling_all_day(customer)
    now = timezone.now()
    leads = add_leads(campaign, *({"created_at": now - MINUTE * i} for i in range(30)))
    contractors = [ContractorFactory(campaigns=[campaign]) for _ in range(6)]
    # Each contractor asks from 3 connections at once.
    requests = [c.pk for c in contractors for _ in range(3)]
    got: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(contractor_id: int) -> None:
        claim = claim_next_lead(contractor_id=contractor_id, campaign_ids=[campaign.pk])
        assert claim is not None
        with lock:
            got.append((contractor_id, claim.lead.pk))

    each_at_once(work, requests)
    lead_of = {
        contractor_id: {lead_id for c, lead_id in got if c == contractor_id} for contractor_id, _ in got
    }
    assert all(len(held) == 1 for held in lead_of.values())  # retries got the same lead
    held = [next(iter(s)) for s in lead_of.values()]
    assert len(held) == len(set(held)) == len(contractors)  # no lead held twice
    holds = Lead.objects.filter(status=QueueStatus.HELD)
    assert sorted(holds.values_list("pk", flat=True)) == sorted(held)
    assert {lead.holder_id: lead.pk for lead in holds} == {c: next(iter(s)) for c, s in lead_of.items()}
    assert Decision.objects.count() == len(contractors)
    assert Lead.objects.filter(status=QueueStatus.READY).count() == len(leads) - len(contractors)


@pytest.mark.django_db
def test_a_repeated_request_while_holding_returns_the_same_lead_without_a_second_hold(
    make_contractor,
) -> None:
    campaign = campaign_calling_all_day(CustomerFactory())
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        first, _ = add_leads(campaign, {"created_at": T0 - MINUTE}, {"created_at": T0 - 2 * MINUTE})
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    with time_machine.travel(T0 + MINUTE, tick=False):
        again = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert again is not None
    assert again.lead.pk == claim.lead.pk == first.pk
    assert again.repeated
    assert not claim.repeated
    assert again.decision.pk == claim.decision.pk
    assert Decision.objects.count() == 1
    assert Lead.objects.filter(status=QueueStatus.HELD).count() == 1
    contractor.refresh_from_db()
    assert contractor.claims_made == 1


@pytest.mark.django_db
def test_an_expired_lease_returns_the_lead_at_claim_time_without_a_beat_task(make_contractor) -> None:
    customer = CustomerFactory()
    set_policy(customer, lease_seconds=120)
    campaign = campaign_calling_all_day(customer)
    holder, other = make_contractor(campaign), make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(campaign)
        claim_next_lead(contractor_id=holder.pk, campaign_ids=[campaign.pk])
    with time_machine.travel(T0 + dt.timedelta(seconds=119), tick=False):
        assert claim_next_lead(contractor_id=other.pk, campaign_ids=[campaign.pk]) is None
    with time_machine.travel(T0 + dt.timedelta(seconds=120), tick=False):
        claim = claim_next_lead(contractor_id=other.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk
    assert claim.lead.holder_id == other.pk
    expired = LeadEvent.objects.get(lead=lead, kind=EventKind.LEASE_EXPIRED)
    assert expired.contractor_id == holder.pk
    assert expired.at == T0 + dt.timedelta(seconds=120)
    # The former holder is not holding anything any more: its outcome is a conflict.
    with pytest.raises(Exception, match="does not hold"):
        record_outcome(lead_id=lead.pk, contractor_id=holder.pk, disposition="converted")


@pytest.mark.django_db
def test_the_beat_task_also_returns_expired_leases_and_due_leads(make_contractor) -> None:
    customer = CustomerFactory()
    set_policy(customer, lease_seconds=60)
    campaign = campaign_calling_all_day(customer)
    holder = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        held = add_lead(campaign)
        claim_next_lead(contractor_id=holder.pk, campaign_ids=[campaign.pk])
        waiting = add_lead(campaign, rescheduled_at=T0 + dt.timedelta(minutes=5))
        later = add_lead(campaign, rescheduled_at=T0 + dt.timedelta(hours=5))
    assert waiting.status == later.status == QueueStatus.WAITING
    assert wake_due_leads(now=T0 + dt.timedelta(seconds=30)) == 0
    assert wake_due_leads(now=T0 + dt.timedelta(minutes=5)) == 2
    assert set(Lead.objects.filter(status=QueueStatus.READY).values_list("pk", flat=True)) == {
        held.pk,
        waiting.pk,
    }
    assert LeadEvent.objects.filter(lead=held, kind=EventKind.LEASE_EXPIRED, contractor=holder).count() == 1
    assert wake_due_leads(now=T0 + dt.timedelta(minutes=6)) == 0


@pytest.mark.django_db
def test_a_rescheduled_lead_becomes_claimable_at_its_rescheduled_time_without_a_promoter(
    make_contractor,
) -> None:
    campaign = campaign_calling_all_day(CustomerFactory())
    contractor = make_contractor(campaign)
    due = T0 + dt.timedelta(minutes=45)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(campaign, rescheduled_at=due, created_at=T0 - dt.timedelta(hours=2))
        assert lead.status == QueueStatus.WAITING
        assert lead.due_at == due
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk]) is None
    with time_machine.travel(due - dt.timedelta(microseconds=1), tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk]) is None
    with time_machine.travel(due, tick=False):
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk
    # Scored as live from its due time: a fresh lead, not one that waited two hours.
    assert claim.decision.band == "live"
    assert claim.decision.score == pytest.approx(1.0)


@pytest.mark.django_db
def test_a_contractor_that_may_not_claim_is_refused_with_a_status(make_contractor) -> None:
    customer = CustomerFactory()
    campaign, other = campaign_calling_all_day(customer), campaign_calling_all_day(customer)
    add_lead(campaign)
    with pytest.raises(ClaimRefused, match="Unknown contractor 999999") as unknown:
        claim_next_lead(contractor_id=999999, campaign_ids=[campaign.pk])
    assert unknown.value.status == 404
    inactive = make_contractor(campaign, active=False)
    with pytest.raises(ClaimRefused, match="inactive") as refused:
        claim_next_lead(contractor_id=inactive.pk, campaign_ids=[campaign.pk])
    assert refused.value.status == 403
    partial = make_contractor(campaign)
    with pytest.raises(ClaimRefused, match=f"not qualified for campaign\\(s\\) {other.pk}") as unqualified:
        claim_next_lead(contractor_id=partial.pk, campaign_ids=[campaign.pk, other.pk])
    assert unqualified.value.status == 403
    assert not Decision.objects.exists()
    assert Lead.objects.get().status == QueueStatus.READY


@pytest.mark.django_db
def test_a_contractor_over_its_hourly_cap_is_told_when_to_come_back(make_contractor) -> None:
    customer = CustomerFactory()
    set_policy(customer, claims_per_hour_cap=2)
    campaign = campaign_calling_all_day(customer)
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        add_leads(campaign, *({} for _ in range(4)))
    for minutes in (0, 10):
        with time_machine.travel(T0 + MINUTE * minutes, tick=False):
            claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
            assert claim is not None
            record_outcome(lead_id=claim.lead.pk, contractor_id=contractor.pk, disposition="converted")
    with (
        time_machine.travel(T0 + MINUTE * 20, tick=False),
        pytest.raises(ClaimRefused, match="cap of 2 claims per hour") as capped,
    ):
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert capped.value.status == 429
    assert capped.value.retry_after == T0 + dt.timedelta(hours=1)
    just_before = T0 + dt.timedelta(hours=1) - dt.timedelta(microseconds=1)
    with time_machine.travel(just_before, tick=False), pytest.raises(ClaimRefused):
        claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk]) is not None


@pytest.mark.django_db
def test_nothing_eligible_is_none(make_contractor) -> None:
    campaign = campaign_calling_all_day(CustomerFactory())
    contractor = make_contractor(campaign)
    assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk]) is None
    with time_machine.travel(T0, tick=False):
        add_lead(campaign, rescheduled_at=T0 + dt.timedelta(hours=1))
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk]) is None
    assert not Decision.objects.exists()


@pytest.mark.django_db
def test_the_leads_of_an_inactive_campaign_wait_until_it_is_active_again(make_contractor) -> None:
    customer = CustomerFactory()
    paused, running = campaign_calling_all_day(customer), campaign_calling_all_day(customer)
    contractor = make_contractor(paused, running)
    with time_machine.travel(T0, tick=False):
        # The paused campaign's lead would come first (older), and so would its woken one.
        waiting = add_lead(paused, created_at=T0 - dt.timedelta(minutes=5))
        woken = add_lead(paused, rescheduled_at=T0 + dt.timedelta(minutes=1))
        other = add_lead(running)
    Campaign.objects.filter(pk=paused.pk).update(active=False)
    both = [paused.pk, running.pk]

    with time_machine.travel(T0 + dt.timedelta(minutes=2), tick=False):
        first = claim_next_lead(contractor_id=contractor.pk, campaign_ids=both)
        assert first is not None
        assert first.lead.pk == other.pk
        record_outcome(lead_id=other.pk, contractor_id=contractor.pk, disposition="converted")
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[paused.pk]) is None

        Campaign.objects.filter(pk=paused.pk).update(active=True)
        served = []
        for _ in range(2):
            again = claim_next_lead(contractor_id=contractor.pk, campaign_ids=both)
            assert again is not None
            served.append(again.lead.pk)
            record_outcome(lead_id=again.lead.pk, contractor_id=contractor.pk, disposition="converted")
    assert sorted(served) == sorted([waiting.pk, woken.pk])


def test_the_claim_read_fits_psycopgs_cache_of_converted_statements() -> None:
    # Longer, psycopg would convert its placeholders again on every claim.
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

    assert len(services._CLAIM_READ_SQL.encode()) <= MAX_CACHED_STATEMENT_LENGTH


@pytest.mark.django_db
def test_a_claim_answers_with_reasons_and_logs_the_decision_with_version_band_and_score_parts(
    make_contractor,
) -> None:
    customer = CustomerFactory()
    version = set_policy(customer, city_weights={"Mumbai": 2.0}, live_decay_minutes=20, lease_seconds=600)
    campaign, second = campaign_calling_all_day(customer), campaign_calling_all_day(customer)
    contractor = make_contractor(campaign, second)
    with time_machine.travel(T0, tick=False):
        lead = add_lead(campaign, city="Mumbai", created_at=T0 - 10 * MINUTE)
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[second.pk, campaign.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk
    assert claim.lead.status == QueueStatus.HELD
    assert claim.lead.holder_id == contractor.pk
    assert claim.lead.lease_expires_at == T0 + dt.timedelta(seconds=600)
    decision = Decision.objects.get()
    assert decision == claim.decision
    assert decision.lead_id == lead.pk
    assert decision.contractor_id == contractor.pk
    assert decision.campaign_ids == sorted([campaign.pk, second.pk])
    assert decision.decided_at == T0
    assert decision.lease_expires_at == T0 + dt.timedelta(seconds=600)
    assert decision.policy_version_id == version.pk
    assert decision.band == "live"
    assert decision.log_score == pytest.approx(0.6931471805599453 - 10 / 20)
    assert decision.score == pytest.approx(2.0 * 2.718281828459045 ** (-0.5))
    lead.refresh_from_db()
    assert decision.priority_key == pytest.approx(lead.priority_key)
    assert decision.reasons == ["city = Mumbai: ×2", "waited 10 min: ×0.61"]
    assert LeadEvent.objects.filter(lead=lead, kind=EventKind.CLAIMED, contractor=contractor).count() == 1


@pytest.mark.django_db
def test_an_at_risk_decision_says_so(make_contractor) -> None:
    customer = CustomerFactory()
    set_policy(customer, sla_window_minutes=30, sla_protect_minutes=10, city_weights={"Mumbai": 50.0})
    campaign = campaign_calling_all_day(customer)
    contractor = make_contractor(campaign)
    with time_machine.travel(T0, tick=False):
        add_lead(campaign, city="Mumbai", created_at=T0)
        urgent = add_lead(campaign, created_at=T0 - 25 * MINUTE)
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == urgent.pk
    assert claim.decision.band == "at_risk"
    assert claim.decision.reasons[0] == "SLA deadline in 5 min: served first"


@pytest.mark.django_db(transaction=True)
def test_a_lead_another_transaction_is_taking_is_skipped_and_the_next_best_is_handed_out() -> None:
    customer = CustomerFactory()
    campaign = campaign_calling_all_day(customer)
    now = timezone.now()
    best, second, _ = add_leads(campaign, *({"created_at": now - MINUTE * i} for i in range(3)))
    contractor = ContractorFactory(campaigns=[campaign])
    other = psycopg.connect(**connection.get_connection_params())
    try:
        # Another claim (or a rescoring batch) holds the best lead's row right now.
        other.execute("SELECT id FROM leads_lead WHERE id = %s FOR UPDATE", [best.pk])
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    finally:
        other.rollback()
        other.close()

    assert claim is not None
    assert claim.lead.pk == second.pk
    assert Lead.objects.get(pk=best.pk).status == QueueStatus.READY
    assert list(Decision.objects.values_list("lead_id", flat=True)) == [second.pk]


@pytest.mark.django_db
def test_without_any_policy_the_default_one_is_made_and_claims_and_outcomes_work(make_contractor) -> None:
    campaign = campaign_calling_all_day(CustomerFactory())
    lead = add_lead(campaign)
    # A database where no policy was ever made (migrations make the default one) and the
    # lead was never scored.
    Lead.objects.update(scored_version=None, priority_key=None)
    PriorityPolicy.objects.update(current_version=None)
    PolicyVersion.objects.all().delete()
    PriorityPolicy.objects.all().delete()
    contractor = make_contractor(campaign)

    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert claim is not None
    assert claim.lead.pk == lead.pk
    result = record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer")

    assert result.lead.status == QueueStatus.WAITING
    default = PriorityPolicy.objects.get(customer__isnull=True)
    assert claim.decision.policy_version_id == default.current_version_id


@pytest.mark.django_db
def test_a_contractor_whose_lease_ran_out_elsewhere_gets_a_new_lead_and_the_old_one_returns(
    make_contractor,
) -> None:
    customer = CustomerFactory()
    set_policy(customer, lease_seconds=120)
    first_campaign, second_campaign = campaign_calling_all_day(customer), campaign_calling_all_day(customer)
    contractor = make_contractor(first_campaign, second_campaign)
    with time_machine.travel(T0, tick=False):
        old = add_lead(first_campaign)
        new = add_lead(second_campaign)
        assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[first_campaign.pk])
    with time_machine.travel(T0 + dt.timedelta(seconds=121), tick=False):
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[second_campaign.pk])
    assert claim is not None
    assert claim.lead.pk == new.pk
    assert not claim.repeated
    old.refresh_from_db()
    assert old.status == QueueStatus.READY
    assert old.holder_id is None
    assert LeadEvent.objects.get(lead=old, kind=EventKind.LEASE_EXPIRED).contractor_id == contractor.pk


@pytest.mark.django_db
def test_the_database_refuses_a_second_held_lead_for_one_contractor(make_contractor) -> None:
    campaign = campaign_calling_all_day(CustomerFactory())
    contractor = make_contractor(campaign)
    first, second = add_leads(campaign, {}, {})
    lease = timezone.now() + MINUTE
    held = {"status": QueueStatus.HELD, "holder": contractor, "lease_expires_at": lease}
    Lead.objects.filter(pk=first.pk).update(**held)
    with pytest.raises(IntegrityError, match="lead_one_held_per_holder"), transaction.atomic():
        Lead.objects.filter(pk=second.pk).update(**held)


# The partial indexes of held leads, by their first column: a scan of one that does not
# constrain that column reads every held lead.
_HELD_INDEX_LEADING_COLUMN = {"lead_held_lease": "campaign_id", "lead_one_held_per_holder": "holder_id"}


def test_held_leads_are_looked_up_by_campaign_or_holder_even_when_statistics_saw_none_held(
    make_contractor, monkeypatch
) -> None:
    # The statistics are taken while no lead is held (a quiet night, or the benchmark's
    # setup): to the planner both partial indexes of held leads are empty, and a full scan
    # of one costs less than any lookup. Then contractors hold leads. A generic plan that
    # read the contractor's held lead, the campaigns' expired leases or the lead an outcome
    # writes by scanning one of them whole would filter every held lead, on every claim.
    campaigns = [campaign_calling_all_day(CustomerFactory()) for _ in range(4)]
    leads = add_leads(campaigns[0], *({} for _ in range(60)))
    add_leads(campaigns[1], *({} for _ in range(60)))
    contractors = [make_contractor(*campaigns) for _ in range(61)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_lead")
    lease = timezone.now() + MINUTE
    for lead, contractor in zip(leads, contractors[:-1], strict=True):
        Lead.objects.filter(pk=lead.pk).update(
            status=QueueStatus.HELD, holder=contractor, lease_expires_at=lease
        )
    statements: list[tuple[str, dict[str, Any]]] = []
    execute = services._execute

    def recording(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        statements.append((query, params))
        return execute(query, params)

    monkeypatch.setattr(services, "_execute", recording)
    claim = claim_next_lead(contractor_id=contractors[-1].pk, campaign_ids=[c.pk for c in campaigns])
    assert claim is not None
    record_outcome(lead_id=claim.lead.pk, contractor_id=contractors[-1].pk, disposition="converted")
    # The claim's read and take, the outcome's read and write.
    assert len(statements) == 4

    held_scans = []
    for query, params in statements:
        nodes = generic_plan_nodes(query, params)
        held_scans += [n for n in nodes if n.get("Index Name") in _HELD_INDEX_LEADING_COLUMN]
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "leads_lead"]
    # The claim's read looks up the contractor's held lead and own expired lease by holder
    # and the campaigns' expired leases by campaign; the outcome's write by id or holder.
    assert {n["Index Name"] for n in held_scans} == set(_HELD_INDEX_LEADING_COLUMN)
    for node in held_scans:
        leading = _HELD_INDEX_LEADING_COLUMN[node["Index Name"]]
        assert re.match(rf"\(+{leading} =", node.get("Index Cond", "")), node


def test_the_claim_read_looks_each_campaign_up_once_by_its_key(make_contractor, monkeypatch) -> None:
    # Its owner (for the policy in force) and whether it is active, in one lookup; a join,
    # or an EXISTS turned into a semi-join, read the whole campaign table on every claim.
    campaigns = [campaign_calling_all_day(CustomerFactory()) for _ in range(4)]
    for campaign in campaigns:
        add_leads(campaign, *({} for _ in range(5)))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_campaign")
    statements: list[tuple[str, dict[str, Any]]] = []
    execute = services._execute

    def recording(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        statements.append((query, params))
        return execute(query, params)

    monkeypatch.setattr(services, "_execute", recording)
    assert claim_next_lead(
        contractor_id=make_contractor(*campaigns).pk, campaign_ids=[c.pk for c in campaigns]
    )

    query, params = statements[0]
    lookups = [n for n in generic_plan_nodes(query, params) if n.get("Relation Name") == "leads_campaign"]
    # An index scan, or a bitmap heap scan (its index scan below it), keyed by the campaign.
    assert [n.get("Index Cond") or n.get("Recheck Cond") for n in lookups] == ["(id = k.campaign_id)"]


# Weekdays 08:00 to 20:00 in New York (UTC-5 in November).
NEW_YORK_WEEKDAYS: dict[str, Any] = {
    "time_zone": "America/New_York",
    "calling_hours_start": dt.time(8),
    "calling_hours_end": dt.time(20),
    "calling_days": [0, 1, 2, 3, 4],
}
SUNDAY_NIGHT = dt.datetime(2026, 11, 29, 8, 0, tzinfo=dt.UTC)  # 03:00 in New York
MONDAY_OPENING = dt.datetime(2026, 11, 30, 13, 0, tzinfo=dt.UTC)  # 08:00 in New York


@pytest.mark.django_db
def test_a_campaign_outside_its_calling_hours_hands_out_nothing_until_it_opens(make_contractor) -> None:
    campaign = CampaignFactory(**NEW_YORK_WEEKDAYS)
    contractor = make_contractor(campaign)
    lead = add_lead(campaign, now=SUNDAY_NIGHT - 5 * MINUTE)

    assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=SUNDAY_NIGHT) is None
    just_before = MONDAY_OPENING - dt.timedelta(microseconds=1)
    assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=just_before) is None
    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=MONDAY_OPENING)

    assert claim is not None
    assert claim.lead.pk == lead.pk


@pytest.mark.django_db
def test_a_tuple_serves_its_open_campaign_while_a_better_lead_waits_in_a_closed_one(make_contractor) -> None:
    closed = CampaignFactory(**NEW_YORK_WEEKDAYS)
    around_the_clock = campaign_calling_all_day()
    contractor = make_contractor(closed, around_the_clock)
    night = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)  # Tuesday, 02:00 in New York
    fresher = add_lead(closed, now=night - 2 * MINUTE)  # would rank first: it waited less
    older = add_lead(around_the_clock, now=night - 10 * MINUTE)
    both = [closed.pk, around_the_clock.pk]
    assert [r.candidate.lead_id for r in ranked_leads_at(campaign_ids=both, now=night)] == [older.pk]

    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=both, now=night)

    assert claim is not None
    assert claim.lead.pk == older.pk
    # At New York's opening the fresher lead is served, as a claim ranks it then.
    record_outcome(lead_id=older.pk, contractor_id=contractor.pk, disposition="converted", now=night)
    opening = dt.datetime(2026, 11, 24, 13, 0, tzinfo=dt.UTC)
    later = claim_next_lead(contractor_id=contractor.pk, campaign_ids=both, now=opening)
    assert later is not None
    assert later.lead.pk == fresher.pk


@pytest.mark.django_db
def test_a_lead_made_stale_after_its_last_reschedule_waits_for_the_next_opening(make_contractor) -> None:
    # Stale at once after the call past its last reschedule, in the evening: not handed out
    # in the night that follows.
    campaign = CampaignFactory(**NEW_YORK_WEEKDAYS)
    contractor = make_contractor(campaign)
    evening = dt.datetime(2026, 11, 24, 19, 55, tzinfo=dt.UTC)  # Tuesday, 14:55 in New York
    lead = add_lead(campaign, now=evening - MINUTE)
    Lead.objects.filter(pk=lead.pk).update(reschedule_count=3)
    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=evening)
    assert claim is not None
    record_outcome(
        lead_id=lead.pk, contractor_id=contractor.pk, disposition="no_answer", now=evening + MINUTE
    )
    lead.refresh_from_db()
    assert (lead.lead_type, lead.status) == ("stale", QueueStatus.READY)

    night = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)  # 03:00 in New York
    assert claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=night) is None
    morning = dt.datetime(2026, 11, 25, 13, 0, tzinfo=dt.UTC)
    again = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=morning)
    assert again is not None
    assert again.lead.pk == lead.pk
