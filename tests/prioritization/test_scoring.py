"""Pure scoring, table-driven, no database."""

import datetime as dt
import math
import re

import pytest

from prioritization.scoring import (
    EPOCH,
    Band,
    Candidate,
    LeadFacts,
    PolicyParams,
    attribute_factors,
    band_at,
    choose,
    explain,
    log_score_at,
    minutes_since_epoch,
    priority_key,
    rank,
    score_from_log,
    sla_deadline,
    wants_stale,
)

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
POLICY = PolicyParams(
    version_id=1,
    live_decay_minutes=20.0,
    stale_activity_decay_days=14.0,
    city_weights={"Mumbai": 2.0, "Pune": 0.5},
    source_weights={"ads": 3.0},
    stage_weights={"demo": 1.5},
    plan_weights={"enterprise": 4.0},
)


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


def live(
    *, waited: float = 0.0, city: str = "", source: str = "", stage: str = "", plan: str = "starter", **kw
) -> LeadFacts:
    created = kw.pop("created_at", ago(waited))
    return LeadFacts(
        lead_type="live",
        city=city,
        source=source,
        stage=stage,
        pricing_plan=plan,
        created_at=created,
        due_at=kw.pop("due_at", created),
        last_activity=kw.pop("last_activity", None),
        first_attempt_at=kw.pop("first_attempt_at", None),
    )


def stale(*, last_activity: dt.datetime | None, created_at: dt.datetime, city: str = "") -> LeadFacts:
    return LeadFacts("stale", city, "", "", "starter", created_at, created_at, last_activity)


def score(facts: LeadFacts, policy: PolicyParams = POLICY, now: dt.datetime = NOW) -> float:
    return log_score_at(priority_key(facts, policy), facts.lead_type, policy, now)


@pytest.mark.parametrize(
    ("faster", "slower"),
    [
        (live(waited=1), live(waited=2)),
        (live(waited=0), live(waited=30)),
        (live(waited=5, city="Pune"), live(waited=60, city="Pune")),
        (live(waited=100), live(waited=1000)),
    ],
)
def test_a_live_lead_that_waited_less_ranks_higher(faster: LeadFacts, slower: LeadFacts) -> None:
    assert score(faster) > score(slower)


@pytest.mark.parametrize(
    ("facts", "expected_factor"),
    [
        (live(city="Mumbai"), 2.0),
        (live(city="Pune"), 0.5),
        (live(source="ads"), 3.0),
        (live(stage="demo"), 1.5),
        (live(plan="enterprise"), 4.0),
        (live(city="Mumbai", source="ads", stage="demo", plan="enterprise"), 2.0 * 3.0 * 1.5 * 4.0),
        (live(city="Atlantis"), 1.0),
        (live(source="unknown-source"), 1.0),
        (live(stage="unheard-of"), 1.0),
        (live(plan="pro"), 1.0),
        (live(city=""), 1.0),
    ],
)
def test_weights_per_city_source_stage_and_plan_multiply_the_score_and_unknown_values_are_neutral(
    facts: LeadFacts, expected_factor: float
) -> None:
    plain = live()
    assert score(facts) - score(plain) == pytest.approx(math.log(expected_factor), abs=1e-9)


def test_weights_of_one_policy_do_not_apply_under_another() -> None:
    other = PolicyParams(version_id=2, city_weights={"Pune": 5.0})
    assert score(live(city="Mumbai"), other) == pytest.approx(score(live(), other))
    assert score(live(city="Pune"), other) - score(live(), other) == pytest.approx(math.log(5.0))


@pytest.mark.parametrize(
    ("recent", "older"),
    [
        (
            stale(last_activity=ago(60), created_at=ago(10_000)),
            stale(last_activity=ago(120), created_at=ago(10_000)),
        ),
        (
            stale(last_activity=ago(1440), created_at=ago(50)),
            stale(last_activity=ago(14_400), created_at=ago(50)),
        ),
        # Unknown last_activity counts from created_at.
        (stale(last_activity=None, created_at=ago(60)), stale(last_activity=ago(120), created_at=ago(10))),
        (stale(last_activity=ago(60), created_at=ago(5)), stale(last_activity=None, created_at=ago(120))),
    ],
)
def test_a_stale_lead_active_more_recently_ranks_higher(recent: LeadFacts, older: LeadFacts) -> None:
    assert score(recent) > score(older)


def test_a_stale_lead_without_last_activity_scores_as_if_last_active_when_received() -> None:
    created = ago(3000)
    assert score(stale(last_activity=None, created_at=created)) == pytest.approx(
        score(stale(last_activity=created, created_at=ago(10)))
    )


PAIRS = [
    (live(waited=3, city="Pune"), live(waited=40, city="Mumbai")),
    (live(waited=0), live(waited=0.5, source="ads")),
    (live(waited=90, plan="enterprise"), live(waited=10)),
    (stale(last_activity=ago(5000), created_at=ago(10)), stale(last_activity=None, created_at=ago(4000))),
    (
        stale(last_activity=ago(100), created_at=ago(10), city="Pune"),
        stale(last_activity=ago(20_000), created_at=ago(10), city="Mumbai"),
    ),
]
INSTANTS = [NOW + dt.timedelta(minutes=m) for m in (-30, 0, 1, 7.5, 60, 1440, 7 * 1440, 90 * 1440)]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_time_never_reorders_two_leads_of_one_policy_and_the_key_gives_their_order(
    a: LeadFacts, b: LeadFacts
) -> None:
    key_a, key_b = priority_key(a, POLICY), priority_key(b, POLICY)
    assert key_a != key_b
    for instant in INSTANTS:
        by_score = log_score_at(key_a, a.lead_type, POLICY, instant) > log_score_at(
            key_b, b.lead_type, POLICY, instant
        )
        assert by_score == (key_a > key_b), instant
        # The gap between two scores is the gap between the keys, at every instant.
        assert log_score_at(key_a, a.lead_type, POLICY, instant) - log_score_at(
            key_b, b.lead_type, POLICY, instant
        ) == pytest.approx(key_a - key_b, abs=1e-6)


@pytest.mark.parametrize(
    ("facts", "base", "wait_minutes", "tau_minutes"),
    [
        (live(waited=12, city="Mumbai"), 2.0, 12, 20.0),
        (live(waited=0, source="ads", plan="enterprise"), 12.0, 0, 20.0),
        (
            live(created_at=ago(500), due_at=ago(30), stage="demo"),
            1.5,
            30,
            20.0,
        ),  # rescheduled: waits since due
        (stale(last_activity=ago(3 * 1440), created_at=ago(60), city="Pune"), 0.5, 3 * 1440, 14 * 1440.0),
        (stale(last_activity=None, created_at=ago(720)), 1.0, 720, 14 * 1440.0),
    ],
)
def test_the_score_at_an_instant_is_log_base_minus_wait_over_tau(
    facts: LeadFacts, base: float, wait_minutes: float, tau_minutes: float
) -> None:
    key = priority_key(facts, POLICY)
    assert log_score_at(key, facts.lead_type, POLICY, NOW) == pytest.approx(
        math.log(base) - wait_minutes / tau_minutes, abs=1e-6
    )
    later = NOW + dt.timedelta(minutes=45)
    assert log_score_at(key, facts.lead_type, POLICY, later) == pytest.approx(
        math.log(base) - (wait_minutes + 45) / tau_minutes, abs=1e-6
    )


def test_the_key_counts_minutes_from_the_epoch() -> None:
    facts = live(created_at=EPOCH + dt.timedelta(minutes=400), city="Mumbai")
    assert minutes_since_epoch(facts.created_at) == pytest.approx(400)
    assert priority_key(facts, POLICY) == pytest.approx(math.log(2.0) + 400 / 20.0)


def test_live_freshness_factor_counts_only_when_configured() -> None:
    fresh = live(waited=0, last_activity=ago(1))
    old = live(waited=0, last_activity=ago(48 * 60))
    assert score(fresh) == pytest.approx(score(old))
    policy = PolicyParams(version_id=3, live_activity_decay_hours=24.0)
    assert score(old, policy) - score(fresh, policy) == pytest.approx(-(48 - 1 / 60) / 24.0, abs=1e-6)


PROTECTED = PolicyParams(
    version_id=4, sla_window_minutes=30.0, sla_protect_minutes=10.0, live_decay_minutes=20.0
)


def candidate(
    lead_id: int,
    facts: LeadFacts,
    policy: PolicyParams = PROTECTED,
) -> Candidate:
    return Candidate(
        lead_id=lead_id,
        lead_type=facts.lead_type,
        key=priority_key(facts, policy),
        deadline=sla_deadline(facts, policy),
        first_attempt_at=facts.first_attempt_at,
        policy=policy,
    )


@pytest.mark.parametrize(
    ("facts", "band"),
    [
        (live(waited=25), Band.AT_RISK),  # deadline in 5 min
        (live(waited=20), Band.AT_RISK),  # deadline in 10 min: exactly at the window's edge
        (live(waited=19), Band.LIVE),  # deadline in 11 min
        (live(waited=30), Band.LIVE),  # deadline now: missed, nothing left to protect
        (live(waited=45), Band.LIVE),  # missed
        (live(waited=25, first_attempt_at=ago(1)), Band.LIVE),  # already called
        (stale(last_activity=ago(25), created_at=ago(25)), Band.STALE),
    ],
)
def test_the_band_of_a_lead(facts: LeadFacts, band: Band) -> None:
    assert (
        band_at(
            lead_type=facts.lead_type,
            first_attempt_at=facts.first_attempt_at,
            deadline=sla_deadline(facts, PROTECTED),
            policy=PROTECTED,
            now=NOW,
        )
        == band
    )


def test_an_at_risk_lead_beats_any_live_score_and_any_stale_lead() -> None:
    weights = PolicyParams(version_id=5, city_weights={"Mumbai": 100.0})
    at_risk = candidate(9, live(waited=28, city="Pune"), PROTECTED)
    best_live = candidate(1, live(waited=0, city="Mumbai"), weights)
    best_stale = candidate(2, stale(last_activity=NOW, created_at=NOW), weights)
    assert rank(best_live, NOW).log_score > rank(at_risk, NOW).log_score
    chosen = choose([best_live, best_stale, at_risk], now=NOW, claims_so_far=0, stale_every=0)
    assert chosen is not None
    assert chosen.candidate.lead_id == 9
    assert chosen.band == Band.AT_RISK


def test_inside_the_at_risk_band_the_earliest_deadline_goes_first_whatever_the_weights() -> None:
    sooner = candidate(5, live(waited=27))
    later_but_heavier = candidate(
        3,
        live(waited=22, city="Mumbai"),
        PolicyParams(version_id=6, sla_protect_minutes=10.0, city_weights={"Mumbai": 50.0}),
    )
    chosen = choose([later_but_heavier, sooner], now=NOW, claims_so_far=0, stale_every=0)
    assert chosen is not None
    assert chosen.candidate.lead_id == 5


def test_ties_go_to_the_lower_lead_id_in_every_band() -> None:
    for facts in (live(waited=25), live(waited=2), stale(last_activity=ago(100), created_at=ago(100))):
        chosen = choose([candidate(8, facts), candidate(4, facts)], now=NOW, claims_so_far=0, stale_every=0)
        assert chosen is not None
        assert chosen.candidate.lead_id == 4


def test_live_leads_come_before_stale_leads_however_low_their_score() -> None:
    old_live = candidate(1, live(waited=7 * 1440))
    fresh_stale = candidate(2, stale(last_activity=NOW, created_at=NOW))
    assert rank(fresh_stale, NOW).log_score > rank(old_live, NOW).log_score
    chosen = choose([fresh_stale, old_live], now=NOW, claims_so_far=0, stale_every=0)
    assert chosen is not None
    assert chosen.candidate.lead_id == 1


@pytest.mark.parametrize(
    ("claims_so_far", "stale_every", "expected"),
    [
        (0, 0, False),
        (5, 0, False),
        (0, 3, False),
        (1, 3, False),
        (2, 3, True),  # the 3rd claim
        (3, 3, False),
        (5, 3, True),  # the 6th claim
        (0, 1, True),  # every claim
        (1, 2, True),
        (2, 2, False),
    ],
)
def test_every_nth_claim_is_reserved_for_a_stale_lead(
    claims_so_far: int, stale_every: int, expected: bool
) -> None:
    assert wants_stale(claims_so_far=claims_so_far, stale_every=stale_every) is expected


def test_a_reserved_claim_takes_the_best_stale_lead_even_over_an_at_risk_one_and_falls_back_when_none() -> (
    None
):
    at_risk = candidate(1, live(waited=25))
    good_live = candidate(2, live(waited=0))
    older_stale = candidate(3, stale(last_activity=ago(5000), created_at=ago(10)))
    newer_stale = candidate(4, stale(last_activity=ago(50), created_at=ago(10)))
    leads = [at_risk, good_live, older_stale, newer_stale]
    picks = [choose(leads, now=NOW, claims_so_far=n, stale_every=3) for n in range(6)]
    assert [p.candidate.lead_id for p in picks if p] == [1, 1, 4, 1, 1, 4]
    without_stale = choose([good_live], now=NOW, claims_so_far=2, stale_every=3)
    assert without_stale is not None
    assert without_stale.candidate.lead_id == 2


def test_nothing_to_choose_from_is_none() -> None:
    assert choose([], now=NOW, claims_so_far=0, stale_every=0) is None


_MULTIPLIER = re.compile(r"×([0-9.e+-]+)$")


@pytest.mark.parametrize(
    "facts",
    [
        live(waited=7, city="Mumbai", source="ads", stage="demo", plan="enterprise"),
        live(waited=0),
        live(waited=300, city="Pune", last_activity=ago(3000)),
        stale(last_activity=ago(4 * 1440), created_at=ago(10), city="Mumbai"),
        stale(last_activity=None, created_at=ago(2 * 1440)),
    ],
)
@pytest.mark.parametrize("policy", [POLICY, PolicyParams(version_id=7, live_activity_decay_hours=12.0)])
def test_the_explained_factors_multiply_back_to_the_score(facts: LeadFacts, policy: PolicyParams) -> None:
    log_score = score(facts, policy)
    product = math.prod(f.multiplier for f in attribute_factors(facts, policy))
    if facts.lead_type == "live":
        product *= math.exp(-(NOW - facts.due_at).total_seconds() / 60 / policy.live_decay_minutes)
    else:
        anchor = facts.last_activity or facts.created_at
        product *= math.exp(-(NOW - anchor).total_seconds() / 60 * policy.stale_rate)
    assert product == pytest.approx(math.exp(log_score), rel=1e-9)
    # The words carry the same numbers (to the two significant digits shown).
    reasons = explain(facts, policy, now=NOW, band=Band.LIVE if facts.lead_type == "live" else Band.STALE)
    shown = [float(m.group(1)) for r in reasons if (m := _MULTIPLIER.search(r))]
    assert len(shown) == len(reasons)
    assert math.prod(shown) == pytest.approx(math.exp(log_score), rel=0.2)


def test_an_at_risk_lead_is_explained_by_its_deadline() -> None:
    facts = live(waited=24)
    reasons = explain(facts, PROTECTED, now=NOW, band=Band.AT_RISK)
    assert reasons[0] == "SLA deadline in 6 min: served first"


FIFO_POLICY = PolicyParams(
    version_id=9, ordering="fifo", city_weights={"Mumbai": 100.0}, sla_protect_minutes=30.0
)


def test_fifo_serves_the_earliest_due_lead_first_whatever_type_weights_or_deadline() -> None:
    oldest_stale = candidate(7, stale(last_activity=ago(90), created_at=ago(90)), FIFO_POLICY)
    at_risk_heavy = candidate(2, live(waited=28, city="Mumbai"), FIFO_POLICY)
    newest = candidate(1, live(waited=1, city="Mumbai"), FIFO_POLICY)
    for now in (NOW, NOW + dt.timedelta(hours=5)):
        order = []
        pool = [newest, at_risk_heavy, oldest_stale]
        while pool:
            chosen = choose(pool, now=now, claims_so_far=0, stale_every=0)
            assert chosen is not None
            assert chosen.band == Band.LIVE
            order.append(chosen.candidate.lead_id)
            pool = [c for c in pool if c.lead_id != chosen.candidate.lead_id]
        assert order == [7, 2, 1]


def test_fifo_orders_a_rescheduled_lead_by_when_it_became_due() -> None:
    rescheduled = live(created_at=ago(2000), due_at=ago(5))
    fresh = live(waited=10)
    # Created long ago but due only 5 minutes ago: it queues behind the lead due 10 minutes ago.
    assert priority_key(fresh, FIFO_POLICY) > priority_key(rescheduled, FIFO_POLICY)
    assert explain(fresh, FIFO_POLICY, now=NOW, band=Band.LIVE) == ["first in, first out: due 10 min ago"]


@pytest.mark.parametrize(
    ("log_score", "expected"), [(0.0, 1.0), (-1e9, math.exp(-700.0)), (1e9, math.exp(700.0))]
)
def test_a_score_stays_a_finite_number_whatever_the_log_score(log_score: float, expected: float) -> None:
    assert score_from_log(log_score) == expected
