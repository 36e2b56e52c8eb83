"""Learned multipliers on the pure scoring path: explanations, recency bins, unknown values, blends."""

import datetime as dt
import math

import pytest

from prioritization.scoring import (
    RECENCY_BINS,
    UNKNOWN_VALUE,
    Band,
    LeadFacts,
    PolicyParams,
    attribute_factors,
    blend_weights,
    explain,
    log_score_at,
    priority_key,
    recency_bin,
    recency_label,
)

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
LEARNED = PolicyParams(
    version_id=9,
    city_weights={"Pune": 1.3, UNKNOWN_VALUE: 0.5},
    source_weights={"Referral": 2.1, "Google": 0.8},
    stage_weights={"Email Opened": 0.6},
    plan_weights={"enterprise": 1.5},
    recency_weights={"under 1 h": 1.8, "over 30 days": 0.4, UNKNOWN_VALUE: 0.9},
    model_note="learned model v3",
    base_rate=0.384,
)


def facts(
    *,
    lead_type: str = "live",
    city: str = "Pune",
    source: str = "Referral",
    stage: str = "Email Opened",
    plan: str = "starter",
    waited_minutes: float = 12.0,
    active_hours_before: float | None = 0.5,
) -> LeadFacts:
    created = NOW - dt.timedelta(minutes=waited_minutes)
    active = None if active_hours_before is None else created - dt.timedelta(hours=active_hours_before)
    return LeadFacts(lead_type, city, source, stage, plan, created, created, active)


def score(lead: LeadFacts, policy: PolicyParams = LEARNED) -> float:
    return math.exp(log_score_at(priority_key(lead, policy), lead.lead_type, policy, NOW))


@pytest.mark.parametrize(
    "lead",
    [
        facts(),
        facts(city="", source="Google", active_hours_before=None),
        facts(city="Goa", source="Unseen", stage="", plan="enterprise", active_hours_before=2000),
        facts(lead_type="stale", active_hours_before=24 * 40, waited_minutes=3 * 1440),
        facts(lead_type="stale", active_hours_before=None),
    ],
)
def test_the_explained_factors_of_a_learned_score_multiply_back_to_it(lead: LeadFacts) -> None:
    reasons = explain(lead, LEARNED, now=NOW, band=Band.LIVE if lead.lead_type == "live" else Band.STALE)

    assert reasons[0] == "learned model v3: base rate 38%"
    product = math.prod(float(reason.rsplit("×", 1)[1]) for reason in reasons[1:])
    assert product == pytest.approx(score(lead), rel=0.15)  # two significant digits per factor
    exact = math.prod(f.multiplier for f in attribute_factors(lead, LEARNED))
    if lead.lead_type == "live":
        exact *= math.exp(-(NOW - lead.due_at).total_seconds() / 60 / LEARNED.live_decay_minutes)
    else:
        anchor = lead.last_activity or lead.created_at
        exact *= math.exp(-(NOW - anchor).total_seconds() / 60 * LEARNED.stale_rate)
    assert exact == pytest.approx(score(lead), rel=1e-9)


def test_a_learned_explanation_reads_like_the_product_team_asked() -> None:
    reasons = explain(facts(), LEARNED, now=NOW, band=Band.LIVE)
    assert reasons == [
        "learned model v3: base rate 38%",
        "source = Referral: ×2.1",
        "last active under 1 h before arriving: ×1.8",
        "stage = Email Opened: ×0.6",
        "city = Pune: ×1.3",
        "waited 12 min: ×0.55",
    ]


def test_unknown_and_unseen_values_read_as_such() -> None:
    reasons = explain(
        facts(city="", source="Unseen", active_hours_before=None), LEARNED, now=NOW, band=Band.LIVE
    )
    assert "city unknown: ×0.5" in reasons
    assert "last activity unknown: ×0.9" in reasons
    assert not any("Unseen" in reason for reason in reasons)  # ×1 is not a reason


@pytest.mark.parametrize(
    ("hours", "label"),
    [(-2.0, "under 1 h"), (0.0, "under 1 h"), (1.0, "1-24 h"), (23.9, "1-24 h"), (24.0, "1-7 days"),
     (200.0, "7-30 days"), (720.0, "over 30 days"), (None, UNKNOWN_VALUE)],
)  # fmt: skip
def test_recency_bins_count_hours_between_last_activity_and_arrival(hours: float | None, label: str) -> None:
    assert recency_label(hours) == label
    assert recency_bin(facts(active_hours_before=hours)) == label
    assert label in {name for _, name in RECENCY_BINS} | {UNKNOWN_VALUE}


def test_hand_set_weights_keep_their_meaning_and_may_weigh_unknown_values() -> None:
    manual = PolicyParams(city_weights={"Pune": 2.0})
    assert score(facts(city="", active_hours_before=None), manual) == pytest.approx(
        score(facts(city="Goa", active_hours_before=None), manual)
    )
    unknown = PolicyParams(city_weights={UNKNOWN_VALUE: 0.5})
    assert score(facts(city=""), unknown) == pytest.approx(0.5 * score(facts(city="Goa"), unknown))


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (0.0, {"a": 4.0, "b": 1.0}),
        (1.0, {"b": 9.0, "c": 0.25}),
        (0.5, {"a": 2.0, "b": 3.0, "c": 0.5}),
    ],
)
def test_a_blend_mixes_manual_and_learned_weights_in_log_space(
    share: float, expected: dict[str, float]
) -> None:
    blended = blend_weights({"a": 4.0, "b": 1.0}, {"b": 9.0, "c": 0.25}, share)
    assert blended == pytest.approx(expected)
