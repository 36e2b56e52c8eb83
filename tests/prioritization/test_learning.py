"""The learned model, pure: shrinkage, rare and unseen values, the time-ordered split, metrics."""

import math
import random

import numpy as np
import pytest

from prioritization.learning import (
    BOOSTED,
    LEARNED,
    MANUAL,
    OTHER,
    POOLED,
    Dataset,
    LearningError,
    LearningSettings,
    evaluate_scores,
    fit_learned,
    fit_numeric_bins,
    run_holdout,
    time_ordered_holdout,
)
from prioritization.scoring import UNKNOWN_VALUE

FEATURES = ("source", "city")


def outcomes(
    rng: random.Random, *, group: str, rows: int, rates: dict[str, float], cities: tuple[str, ...] = ("Pune",)
) -> tuple[list[list[str]], list[float], list[str]]:
    """Rows of one customer whose conversion depends on the source as ``rates`` says."""
    values, labels = [], []
    for _ in range(rows):
        source = rng.choice(sorted(rates))
        values.append([source, rng.choice(cities)])
        labels.append(1.0 if rng.random() < rates[source] else 0.0)
    return values, labels, [group] * rows


def world(*, mine: int, others: int = 4000, seed: int = 1) -> Dataset:
    """Customer "mine" converts on Referral and not on Google; the others the other way round."""
    rng = random.Random(seed)
    values, labels, groups = [], [], []
    for name, rows, rates in (
        ("mine", mine, {"Referral": 0.6, "Google": 0.1}),
        ("b", others // 2, {"Referral": 0.1, "Google": 0.5}),
        ("c", others // 2, {"Referral": 0.15, "Google": 0.45}),
    ):
        v, y, g = outcomes(rng, group=name, rows=rows, rates=rates)
        values += v
        labels += y
        groups += g
    return Dataset.build(FEATURES, values, labels, groups=groups)


def ratio(multipliers: dict[str, dict[str, float]]) -> float:
    return multipliers["source"]["Referral"] / multipliers["source"]["Google"]


def test_a_customer_without_outcomes_gets_exactly_the_pooled_multipliers() -> None:
    model = fit_learned(world(mine=0))

    assert model.multipliers("newcomer") == model.multipliers(None)
    assert model.base_rate("newcomer") == model.pooled_rate
    assert ratio(model.multipliers(None)) < 0.5  # the others' pattern: Google converts


def test_a_customer_with_many_outcomes_gets_its_own_multipliers() -> None:
    data = world(mine=6000)
    model = fit_learned(data)
    alone = fit_learned(data.subset(data.groups == "mine"))

    own = ratio(model.multipliers("mine"))
    assert own > 5  # Referral converts 0.6 vs 0.1 for this customer: odds ratio 13.5
    assert ratio(model.multipliers(None)) < own
    assert math.log(own) == pytest.approx(math.log(ratio(alone.multipliers(None))), abs=0.15)


def test_a_customer_with_few_outcomes_sits_between_the_pool_and_its_own_data() -> None:
    few = fit_learned(world(mine=60))
    many = fit_learned(world(mine=6000))

    pooled = ratio(few.multipliers(None))
    assert pooled < ratio(few.multipliers("mine")) < ratio(many.multipliers("mine"))


def test_rare_values_share_the_other_multiplier_and_unseen_values_weigh_one() -> None:
    rng = random.Random(3)
    values = [[rng.choice(["Google", "Referral"]), "Pune"] for _ in range(400)]
    values += [["Google", "Goa"], ["Referral", "Agra"], ["Google", "Agra"]]
    labels = [float(rng.random() < 0.3) for _ in values]
    labels[-3:] = [1.0, 1.0, 1.0]
    data = Dataset.build(FEATURES, values, labels)

    model = fit_learned(data, LearningSettings(min_count=10))

    cities = model.multipliers(None)["city"]
    assert set(cities) == {"Pune", "Goa", "Agra"}
    assert cities["Goa"] == cities["Agra"] != cities["Pune"]
    assert model.vocabulary.rare["city"] == {"Goa", "Agra"}
    assert OTHER not in cities  # the scoring path sees real values only
    # A city never seen has no multiplier: the score path weighs it 1, the model adds 0.
    unseen = Dataset.build(FEATURES, [["Google", "Mumbai"], ["Google", "Pune"]], [0.0, 0.0])
    pooled = model.pooled
    logits = np.log(model.predict(unseen) / (1 - model.predict(unseen)))
    assert logits[0] == pytest.approx(pooled.intercept + pooled.coefficients["source"]["Google"])


def test_empty_values_are_learned_as_unknown() -> None:
    values = [["Google", ""], ["Google", "  "], ["Google", "Pune"]] * 20
    labels = [0.0, 1.0, 1.0] * 20
    model = fit_learned(Dataset.build(FEATURES, values, labels))
    assert UNKNOWN_VALUE in model.multipliers(None)["city"]


def test_multipliers_are_centred_so_the_average_lead_weighs_one() -> None:
    data = world(mine=0)
    model = fit_learned(data)
    sources = model.multipliers(None)["source"]
    share = {s: float(data.weights[data.columns[0] == s].sum()) / data.total_weight for s in sources}
    assert sum(share[s] * math.log(m) for s, m in sources.items()) == pytest.approx(0.0, abs=1e-9)


def test_the_model_predicts_what_scikit_learn_fitted() -> None:
    data = world(mine=500)
    model = fit_learned(data)
    predicted = model.predict(data)
    # The same probabilities from the per-customer multipliers and base intercepts.
    for group in ("mine", "b"):
        rows = data.groups == group
        odds = model.for_group(group)
        for source in ("Referral", "Google"):
            row = np.flatnonzero(rows & (data.columns[0] == source))[0]
            logit = odds.intercept + odds.coefficients["source"][source] + odds.coefficients["city"]["Pune"]
            assert predicted[row] == pytest.approx(1 / (1 + math.exp(-logit)))
    # Calibrated in the large: the mean prediction is the observed rate.
    assert float((predicted * data.weights).sum()) / data.total_weight == pytest.approx(
        data.positive_weight / data.total_weight, abs=0.01
    )


def test_weights_stand_for_repeated_rows() -> None:
    values = [["Google", "Pune"], ["Referral", "Pune"], ["Google", "Goa"], ["Referral", "Goa"]]
    labels = [1.0, 0.0, 0.0, 1.0]
    counts = [30, 12, 20, 25]
    weighted = fit_learned(Dataset.build(FEATURES, values, labels, weights=counts))
    expanded = fit_learned(
        Dataset.build(
            FEATURES,
            [v for v, n in zip(values, counts, strict=True) for _ in range(n)],
            [y for y, n in zip(labels, counts, strict=True) for _ in range(n)],
        )
    )
    for feature, multipliers in weighted.multipliers(None).items():
        assert multipliers == pytest.approx(expanded.multipliers(None)[feature], rel=1e-4)


def test_one_outcome_only_cannot_be_learned() -> None:
    data = Dataset.build(FEATURES, [["Google", "Pune"]] * 20, [1.0] * 20)
    with pytest.raises(LearningError, match="only one outcome"):
        fit_learned(data)


# --- The time-ordered split ---------------------------------------------------------------


@pytest.mark.parametrize("share", [0.2, 0.25, 0.5])
def test_the_holdout_is_the_newest_share_and_no_training_row_is_newer(share: float) -> None:
    rng = random.Random(7)
    keys = [rng.randint(0, 50) for _ in range(101)]  # ties included

    holdout = time_ordered_holdout(keys, share=share)

    assert holdout.sum() == math.ceil(101 * share)
    train_keys = [k for k, h in zip(keys, holdout, strict=True) if not h]
    test_keys = [k for k, h in zip(keys, holdout, strict=True) if h]
    assert max(train_keys) <= min(test_keys)


def test_ties_at_the_cut_keep_the_file_order() -> None:
    holdout = time_ordered_holdout([1, 2, 2, 2, 3], share=0.4)
    assert holdout.tolist() == [False, False, False, True, True]


def test_nothing_from_the_holdout_reaches_the_models() -> None:
    # "Agra" appears only among the newest rows, where it always converts: a model that saw
    # the holdout would give it a huge multiplier; one trained on the past has never seen it.
    rng = random.Random(5)
    values = [[rng.choice(["Google", "Referral"]), "Pune"] for _ in range(400)]
    labels = [float(rng.random() < 0.3) for _ in range(400)]
    values += [["Google", "Agra"]] * 100
    labels += [1.0] * 100
    data = Dataset.build(FEATURES, values, labels)

    run = run_holdout(data, time_ordered_holdout(list(range(500)), share=0.2))

    assert run.train.size == 400
    assert "Agra" not in run.learned.vocabulary.kept["city"] | run.learned.vocabulary.rare["city"]
    assert set(run.scores[LEARNED].round(9)) == {run.scores[LEARNED].round(9)[0]}  # all Google in Agra


def test_a_holdout_run_compares_learned_boosting_pooled_and_manual_on_the_same_rows() -> None:
    data = world(mine=1500, others=1500)
    holdout = time_ordered_holdout(list(range(data.size)), share=0.2)
    # Rows are in customer order, so the holdout is customer c's newest rows.
    manual = np.zeros(data.size)

    run = run_holdout(data, holdout, manual_log_scores=manual)
    metrics = run.metrics()

    assert list(metrics) == [LEARNED, BOOSTED, POOLED, MANUAL]
    assert {m.rows for m in metrics.values()} == {float(holdout.sum())}
    assert metrics[MANUAL].auc == 0.5
    assert metrics[MANUAL].log_loss is None
    assert metrics[MANUAL].lift_top10 == pytest.approx(1.0)
    assert metrics[LEARNED].auc is not None
    assert metrics[LEARNED].auc > 0.6
    assert run.metrics("mine")[LEARNED].rows == 0


# --- Metrics ---------------------------------------------------------------------------------


def test_a_perfect_ranking_has_auc_one_and_the_top_tenth_all_converted() -> None:
    labels = np.array([1.0] * 20 + [0.0] * 80)
    scores = np.linspace(1, 0, 100)

    metrics = evaluate_scores(scores, labels, np.ones(100), probabilities=False)

    assert metrics.auc == 1.0
    assert metrics.rate_top10 == 1.0
    assert metrics.lift_top10 == pytest.approx(5.0)
    assert metrics.lift_top20 == pytest.approx(5.0)
    assert metrics.rate == 0.2


def test_log_loss_and_the_reliability_table_of_probabilities() -> None:
    labels = np.array([1.0, 0.0, 1.0, 0.0])
    probabilities = np.array([0.8, 0.2, 0.35, 0.32])

    metrics = evaluate_scores(probabilities, labels, np.array([1.0, 1.0, 1.0, 2.0]), probabilities=True)

    expected = -(math.log(0.8) + math.log(0.8) + math.log(0.35) + 2 * math.log(0.68)) / 5
    assert metrics.log_loss == pytest.approx(expected)
    bins = {(round(b.low, 1), round(b.high, 1)): b for b in metrics.reliability}
    assert set(bins) == {(0.2, 0.3), (0.3, 0.4), (0.8, 0.9)}  # empty bins are left out
    assert bins[(0.3, 0.4)].rows == 3.0
    assert bins[(0.3, 0.4)].observed == pytest.approx(1 / 3)
    assert bins[(0.3, 0.4)].predicted == pytest.approx((0.35 + 0.64) / 3)
    assert sum(b.rows for b in metrics.reliability) == 5.0


def test_one_class_in_the_holdout_has_no_auc() -> None:
    metrics = evaluate_scores(np.array([0.1, 0.2]), np.zeros(2), np.ones(2), probabilities=True)
    assert metrics.auc is None
    assert metrics.lift_top10 is None


def test_numeric_columns_are_binned_on_training_values_and_text_columns_are_not() -> None:
    bins = fit_numeric_bins([str(v) for v in range(100)], bins=4)
    assert bins is not None
    assert [bins.label(v) for v in ("0", "30", "99", "", "n/a")] == [
        "≤ 24.75",
        "24.75 to 49.5",
        "> 74.25",
        UNKNOWN_VALUE,
        "n/a",
    ]
    assert fit_numeric_bins(["1", "2", "x"]) is None
    assert fit_numeric_bins(["1", "2", "1"]) is None  # few distinct values: categories already
