"""Learned conversion scores, pure: feature encoding, fitting, explanations' multipliers,
evaluation. No ORM, no clock: :mod:`prioritization.training` feeds it rows from the
database, ``manage.py evaluate_model --file`` rows from a spreadsheet.

**The model.** A lead is a few categorical facts (city, source, stage, how long before
arriving it was last active; any columns for an offline file). A logistic regression
gives its log odds of converting, ``intercept + Σ_f β_f[value]``, so ``exp(β)`` is a
multiplier on the odds: the same kind of number as a policy's hand-set weights, which is
how the learned model reaches the claim path (:meth:`PolicyVersion.params`) without any
fitting on the request path.

**Per customer, with a pooled prior.** One L2-regularized logistic regression over every
customer's outcomes (scikit-learn, lbfgs), where each fact appears twice: once shared and
once per customer ("frustratingly easy" feature augmentation, Daumé 2007; the MAP
estimate of a two-level model with Gaussian priors). The penalty pulls a customer's own
coefficients towards 0, i.e. its multipliers towards the shared (pooled) ones, the more
so the fewer outcomes back them. A customer with no outcomes gets exactly the pooled
multipliers; one with many gets its own. There is no hard switch and no tuning per
customer.

**Rare and unseen values.** A value seen fewer than ``min_count`` times in the training
rows shares one ``(other)`` coefficient with the other rare values; a customer gets a
coefficient of its own for a value only when it has ``min_count`` rows with it. A value
never seen in training has no coefficient: ×1. Coefficients are centred per customer
(the row-weighted mean of each feature's coefficients over the customer's training rows
is moved into the intercept), so ×1 means "as the customer's average lead" and a
multiplier reads as "2.1 times the odds of an average lead".

**Weights.** Every row carries a weight: the database path aggregates identical rows in
SQL (a million outcomes are a few thousand distinct fact combinations), which leaves the
weighted likelihood, and so the fit and every metric, exactly as with one row per lead.
"""

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from prioritization.scoring import UNKNOWN_VALUE

Floats = npt.NDArray[np.float64]
Objects = npt.NDArray[np.object_]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]

# The coefficient shared by the values too rare to get one of their own.
OTHER = "(other)"
# The token of a value never seen in training (no coefficient: ×1). Not a possible value:
# values are text read from files and the database, which cannot hold NUL.
UNSEEN = "\x00unseen"
# The names of the models of a comparison, in the order they are reported.
LEARNED = "learned"
BOOSTED = "gradient_boosting"
POOLED = "pooled"
MANUAL = "manual"
# A customer as a feature of the pooled and gradient-boosting models.
GROUP_FEATURE = "(customer)"
# Learned multipliers are kept in the range the admin allows for hand-set weights, so a
# blend of both is always a valid weight.
MIN_MULTIPLIER = 0.01
MAX_MULTIPLIER = 100.0
# Histogram gradient boosting takes at most this many categories per feature (255 bins,
# one kept for missing values); the rest share the last code.
_BOOSTED_MAX_CATEGORIES = 254


@dataclass(frozen=True)
class LearningSettings:
    """How models are fitted; the defaults are what the daily training uses.

    ``regularization`` is scikit-learn's ``C`` (inverse L2 strength, per unit of row
    weight); ``customer_prior`` scales the customer-specific columns, so the prior on a
    customer's deviation from the pooled coefficients is ``customer_prior`` times as wide
    as the prior on the pooled ones. Below 1, a pattern that several customers share
    costs less in the pooled coefficients than in each customer's, so it lands there and
    the pooled model is a good prior for a new customer (above 1, every customer's
    columns would soak it up and leave the pooled coefficients near 0).
    """

    min_count: float = 10.0
    # Chosen on a time-ordered validation split of X Education's *training* rows (the
    # newest 20% of the oldest 80%), never on the holdout: 0.3 beat 0.1 and 1.0 there.
    regularization: float = 0.3
    customer_prior: float = 0.5
    max_iter: int = 2000
    holdout_share: float = 0.2
    reliability_bins: int = 10


DEFAULT_SETTINGS = LearningSettings()


class LearningError(ValueError):
    """The rows cannot be learned from (too few, one class only); the message says why."""


# --- Data -------------------------------------------------------------------------------------


def _object_array(values: Sequence[object]) -> Objects:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


@dataclass(frozen=True)
class Dataset:
    """Rows of categorical facts with a 0/1 label, a weight and a group (the customer).

    Values are text; an empty value is :data:`UNKNOWN_VALUE`. The weight counts identical
    rows (1 for one lead). Rows of one group ``""`` mean "no customers".
    """

    feature_names: tuple[str, ...]
    columns: tuple[Objects, ...]
    labels: Floats
    weights: Floats
    groups: Objects

    def __post_init__(self) -> None:
        size = len(self.labels)
        if len(self.columns) != len(self.feature_names):
            raise ValueError("One column per feature name is needed.")
        if any(len(c) != size for c in self.columns) or len(self.weights) != size or len(self.groups) != size:
            raise ValueError("Every column, the weights and the groups must have one value per row.")

    @classmethod
    def build(
        cls,
        feature_names: Sequence[str],
        rows: Sequence[Sequence[str]],
        labels: Sequence[float],
        *,
        weights: Sequence[float] | None = None,
        groups: Sequence[str] | None = None,
    ) -> "Dataset":
        columns = tuple(
            _object_array([(row[index] or "").strip() or UNKNOWN_VALUE for row in rows])
            for index in range(len(feature_names))
        )
        size = len(rows)
        return cls(
            feature_names=tuple(feature_names),
            columns=columns,
            labels=np.asarray(labels, dtype=np.float64),
            weights=np.ones(size) if weights is None else np.asarray(weights, dtype=np.float64),
            groups=_object_array(["" for _ in range(size)] if groups is None else [str(g) for g in groups]),
        )

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def total_weight(self) -> float:
        return float(self.weights.sum())

    @property
    def positive_weight(self) -> float:
        return float((self.weights * self.labels).sum())

    def subset(self, mask: Bools) -> "Dataset":
        return Dataset(
            feature_names=self.feature_names,
            columns=tuple(column[mask] for column in self.columns),
            labels=self.labels[mask],
            weights=self.weights[mask],
            groups=self.groups[mask],
        )

    def with_group_feature(self) -> "Dataset":
        """The customer as one more feature, every row in one group: the pooled view."""
        return Dataset(
            feature_names=(*self.feature_names, GROUP_FEATURE),
            columns=(*self.columns, self.groups),
            labels=self.labels,
            weights=self.weights,
            groups=_object_array(["" for _ in range(self.size)]),
        )

    def group_keys(self) -> list[str]:
        return sorted(set(self.groups.tolist()))


def time_ordered_holdout(order_keys: Sequence[Any], *, share: float) -> Bools:
    """The holdout mask: the last ``share`` of rows in ``order_keys`` order (ties keep
    their input order), at least one row. Every training row comes before (or at the same
    key as) every holdout row, so nothing from the future is learned."""
    size = len(order_keys)
    if not 0 < share < 1:
        raise ValueError("The holdout share must be between 0 and 1.")
    holdout_rows = min(size, max(1, math.ceil(size * share)))
    order = sorted(range(size), key=order_keys.__getitem__)
    mask = np.zeros(size, dtype=bool)
    mask[order[size - holdout_rows :]] = True
    return mask


@dataclass(frozen=True)
class NumericBins:
    """Quantile bins of a numeric column of a file (the model weighs categories)."""

    edges: tuple[float, ...]

    def label(self, value: str) -> str:
        text = value.strip()
        if not text:
            return UNKNOWN_VALUE
        try:
            number = float(text)
        except ValueError:
            return text
        if math.isnan(number):
            return UNKNOWN_VALUE
        for index, edge in enumerate(self.edges):
            if number <= edge:
                return f"≤ {edge:g}" if index == 0 else f"{self.edges[index - 1]:g} to {edge:g}"
        return f"> {self.edges[-1]:g}"


def fit_numeric_bins(values: Sequence[str], *, bins: int = 10, min_distinct: int = 12) -> NumericBins | None:
    """Bins for a column whose non-empty values are all numbers with many distinct values;
    ``None`` for a categorical column. Fit on training rows only."""
    numbers = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            number = float(text)
        except ValueError:
            return None
        if not math.isnan(number):
            numbers.append(number)
    if len(set(numbers)) < min_distinct:
        return None
    quantiles = np.quantile(np.asarray(numbers), np.linspace(0, 1, bins + 1)[1:-1])
    return NumericBins(edges=tuple(sorted({float(q) for q in quantiles})))


# --- Vocabulary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """Which values of each feature get a coefficient of their own (``kept``), which share
    :data:`OTHER` (``rare``: seen in training, fewer than ``min_count`` times); any other
    value was never seen."""

    kept: Mapping[str, frozenset[str]]
    rare: Mapping[str, frozenset[str]]

    def tokens(self, feature: str, column: Objects) -> Objects:
        """Each value as the model knows it: itself, OTHER, or UNSEEN."""
        uniques, inverse = np.unique(column, return_inverse=True)
        kept, rare = self.kept[feature], self.rare[feature]
        mapped = _object_array([u if u in kept else OTHER if u in rare else UNSEEN for u in uniques.tolist()])
        result: Objects = mapped[inverse]
        return result


def _weighted_counts(column: Objects, weights: Floats) -> dict[str, float]:
    uniques, inverse = np.unique(column, return_inverse=True)
    counts = np.bincount(inverse, weights=weights, minlength=len(uniques))
    return dict(zip(uniques.tolist(), counts.tolist(), strict=True))


def fit_vocabulary(data: Dataset, *, min_count: float) -> Vocabulary:
    kept: dict[str, frozenset[str]] = {}
    rare: dict[str, frozenset[str]] = {}
    for name, column in zip(data.feature_names, data.columns, strict=True):
        counts = _weighted_counts(column, data.weights)
        kept[name] = frozenset(v for v, c in counts.items() if c >= min_count)
        rare[name] = frozenset(v for v, c in counts.items() if c < min_count)
    return Vocabulary(kept=kept, rare=rare)


# --- The learned model -------------------------------------------------------------------------


@dataclass(frozen=True)
class LogOdds:
    """One customer's model: ``logit = intercept + Σ_f coefficients[f][token]``."""

    intercept: float
    coefficients: Mapping[str, Mapping[str, float]]

    def logits(self, feature_names: Sequence[str], tokens: Sequence[Objects]) -> Floats:
        total = np.full(len(tokens[0]) if tokens else 0, self.intercept, dtype=np.float64)
        for name, column in zip(feature_names, tokens, strict=True):
            table = self.coefficients[name]
            uniques, inverse = np.unique(column, return_inverse=True)
            values = np.array([table.get(u, 0.0) for u in uniques.tolist()], dtype=np.float64)
            total += values[inverse]
        return total


def _sigmoid(logits: Floats) -> Floats:
    result: Floats = 1.0 / (1.0 + np.exp(-np.clip(logits, -700, 700)))
    return result


@dataclass(frozen=True)
class LearnedModel:
    """Pooled coefficients plus each customer's own (already shrunk towards them)."""

    feature_names: tuple[str, ...]
    vocabulary: Vocabulary
    pooled: LogOdds
    groups: Mapping[str, LogOdds]
    group_rows: Mapping[str, float]  # training weight per customer
    group_rates: Mapping[str, float]  # observed conversion rate per customer
    pooled_rows: float
    pooled_rate: float

    def for_group(self, group: str | None) -> LogOdds:
        """A customer's coefficients; the pooled ones for a customer without outcomes."""
        return self.groups.get(group, self.pooled) if group is not None else self.pooled

    def base_rate(self, group: str | None) -> float:
        return self.group_rates.get(group, self.pooled_rate) if group is not None else self.pooled_rate

    def rows(self, group: str | None) -> float:
        return self.group_rows.get(group, 0.0) if group is not None else self.pooled_rows

    def tokens(self, data: Dataset) -> list[Objects]:
        return [
            self.vocabulary.tokens(name, column)
            for name, column in zip(self.feature_names, data.columns, strict=True)
        ]

    def predict(self, data: Dataset) -> Floats:
        """Conversion probabilities, each row by its own customer's coefficients."""
        tokens = self.tokens(data)
        logits = np.zeros(data.size)
        for group in data.group_keys():
            rows = data.groups == group
            logits[rows] = self.for_group(group).logits(self.feature_names, [t[rows] for t in tokens])
        return _sigmoid(logits)

    def multipliers(self, group: str | None) -> dict[str, dict[str, float]]:
        """Feature → value → odds multiplier, for the scoring path: every value seen in
        training (rare ones carry the OTHER multiplier); a value not listed weighs 1."""
        model = self.for_group(group)
        result: dict[str, dict[str, float]] = {}
        for name in self.feature_names:
            table = model.coefficients[name]
            values = {value: table[value] for value in sorted(self.vocabulary.kept[name]) if value in table}
            if OTHER in table:
                values.update(dict.fromkeys(sorted(self.vocabulary.rare[name]), table[OTHER]))
            result[name] = {
                value: min(MAX_MULTIPLIER, max(MIN_MULTIPLIER, math.exp(coefficient)))
                for value, coefficient in values.items()
            }
        return result


@dataclass(frozen=True)
class _Design:
    matrix: "sparse.csr_matrix"
    # Column numbers by (customer, feature, token); customer None = the shared column.
    columns: dict[tuple[str | None, str, str], int]
    # Weighted row counts per (customer, feature, token), for centring.
    counts: dict[tuple[str, str, str], float]


_INTERCEPT = "(intercept)"


def _design(
    data: Dataset, tokens: Sequence[Objects], *, per_group: bool, settings: LearningSettings
) -> _Design:
    """The sparse one-hot design: shared columns for every (feature, token) and, with
    ``per_group``, customer columns (scaled by ``customer_prior``) for each customer's
    intercept and its (feature, token) pairs with at least ``min_count`` rows."""
    size = data.size
    all_rows = np.arange(size)
    columns: dict[tuple[str | None, str, str], int] = {}
    counts: dict[tuple[str, str, str], float] = {}
    row_parts: list[Ints] = []
    col_parts: list[Ints] = []
    value_parts: list[Floats] = []
    group_uniques, group_inverse = np.unique(data.groups, return_inverse=True)
    group_names: list[str] = group_uniques.tolist()
    scale = settings.customer_prior
    if per_group:
        intercepts = np.array([columns.setdefault((g, _INTERCEPT, ""), len(columns)) for g in group_names])
        row_parts.append(all_rows)
        col_parts.append(intercepts[group_inverse])
        value_parts.append(np.full(size, scale))
    for name, column in zip(data.feature_names, tokens, strict=True):
        token_uniques, token_inverse = np.unique(column, return_inverse=True)
        token_names: list[str] = token_uniques.tolist()
        shared = np.array([columns.setdefault((None, name, t), len(columns)) for t in token_names])
        row_parts.append(all_rows)
        col_parts.append(shared[token_inverse])
        value_parts.append(np.ones(size))
        # Per (customer, token): weighted counts (for centring and for eligibility).
        pair = group_inverse.astype(np.int64) * len(token_names) + token_inverse
        pair_uniques, pair_inverse = np.unique(pair, return_inverse=True)
        pair_counts = np.bincount(pair_inverse, weights=data.weights, minlength=len(pair_uniques))
        pair_keys = [
            (group_names[p // len(token_names)], name, token_names[p % len(token_names)])
            for p in pair_uniques.tolist()
        ]
        counts.update(zip(pair_keys, pair_counts.tolist(), strict=True))
        if per_group:
            eligible = pair_counts >= settings.min_count
            pair_columns = np.array(
                [
                    columns.setdefault(key, len(columns)) if ok else -1
                    for key, ok in zip(pair_keys, eligible, strict=True)
                ],
                dtype=np.int64,
            )
            row_columns = pair_columns[pair_inverse]
            has = row_columns >= 0
            row_parts.append(all_rows[has])
            col_parts.append(row_columns[has])
            value_parts.append(np.full(int(has.sum()), scale))
    matrix = sparse.csr_matrix(
        (np.concatenate(value_parts), (np.concatenate(row_parts), np.concatenate(col_parts))),
        shape=(size, len(columns)),
    )
    return _Design(matrix=matrix, columns=columns, counts=counts)


def _centred(
    intercept: float,
    coefficients: dict[str, dict[str, float]],
    counts: Mapping[str, Mapping[str, float]],
) -> LogOdds:
    """Move each feature's row-weighted mean coefficient into the intercept (same logits)."""
    for name, table in coefficients.items():
        weights = counts.get(name, {})
        total = sum(weights.values())
        if total <= 0:
            continue
        mean = sum(table.get(token, 0.0) * weight for token, weight in weights.items()) / total
        coefficients[name] = {token: value - mean for token, value in table.items()}
        intercept += mean
    return LogOdds(intercept=intercept, coefficients=coefficients)


def _check_learnable(data: Dataset) -> None:
    if data.size == 0 or data.total_weight <= 0:
        raise LearningError("There are no rows to learn from.")
    positives = data.positive_weight
    if positives <= 0 or positives >= data.total_weight:
        raise LearningError("The rows hold only one outcome (all converted or none): nothing to learn.")


def fit_learned(train: Dataset, settings: LearningSettings = DEFAULT_SETTINGS) -> LearnedModel:
    """Fit the pooled + per-customer model (see the module's docstring)."""
    _check_learnable(train)
    vocabulary = fit_vocabulary(train, min_count=settings.min_count)
    tokens = [
        vocabulary.tokens(name, column)
        for name, column in zip(train.feature_names, train.columns, strict=True)
    ]
    groups = train.group_keys()
    per_group = len(groups) > 1
    design = _design(train, tokens, per_group=per_group, settings=settings)
    regression = LogisticRegression(C=settings.regularization, max_iter=settings.max_iter)
    regression.fit(design.matrix, train.labels, sample_weight=train.weights)
    coefficient = regression.coef_[0]
    intercept = float(regression.intercept_[0])

    def coefficient_of(key: tuple[str | None, str, str]) -> float:
        column = design.columns.get(key)
        if column is None:
            return 0.0
        scale = settings.customer_prior if key[0] is not None else 1.0
        return float(coefficient[column]) * scale

    shared: dict[str, dict[str, float]] = {name: {} for name in train.feature_names}
    for group_name, name, token in design.columns:
        if group_name is None:
            shared[name][token] = coefficient_of((None, name, token))
    all_counts: dict[str, dict[str, float]] = {name: {} for name in train.feature_names}
    group_counts: dict[str, dict[str, dict[str, float]]] = {
        g: {n: {} for n in train.feature_names} for g in groups
    }
    for (group_name, name, token), weight in design.counts.items():
        all_counts[name][token] = all_counts[name].get(token, 0.0) + weight
        group_counts[group_name][name][token] = weight
    pooled = _centred(intercept, {n: dict(t) for n, t in shared.items()}, all_counts)

    by_group: dict[str, LogOdds] = {}
    rows: dict[str, float] = {}
    rates: dict[str, float] = {}
    for group_name in groups:
        in_group = train.groups == group_name
        rows[group_name] = float(train.weights[in_group].sum())
        rates[group_name] = float((train.weights * train.labels)[in_group].sum()) / rows[group_name]
        own = {
            name: {token: value + coefficient_of((group_name, name, token)) for token, value in table.items()}
            for name, table in shared.items()
        }
        by_group[group_name] = _centred(
            intercept + coefficient_of((group_name, _INTERCEPT, "")), own, group_counts[group_name]
        )
    return LearnedModel(
        feature_names=train.feature_names,
        vocabulary=vocabulary,
        pooled=pooled,
        groups=by_group,
        group_rows=rows,
        group_rates=rates,
        pooled_rows=train.total_weight,
        pooled_rate=train.positive_weight / train.total_weight,
    )


@dataclass(frozen=True)
class PooledModel:
    """The comparison's pooled-only model: one logistic regression, the customer (when
    there are several) as one more feature, no per-customer coefficients."""

    model: LearnedModel
    group_as_feature: bool

    def predict(self, data: Dataset) -> Floats:
        return self.model.predict(data.with_group_feature() if self.group_as_feature else data)


def fit_pooled(train: Dataset, settings: LearningSettings = DEFAULT_SETTINGS) -> PooledModel:
    group_as_feature = len(train.group_keys()) > 1
    view = train.with_group_feature() if group_as_feature else train
    return PooledModel(model=fit_learned(view, settings), group_as_feature=group_as_feature)


@dataclass(frozen=True)
class BoostedModel:
    """scikit-learn's histogram gradient boosting on the same facts, as categories."""

    classifier: HistGradientBoostingClassifier
    codes: Mapping[str, Mapping[str, int]]
    feature_names: tuple[str, ...]
    group_as_feature: bool

    def _matrix(self, data: Dataset) -> Floats:
        view = data.with_group_feature() if self.group_as_feature else data
        matrix = np.empty((view.size, len(self.feature_names)))
        for index, (name, column) in enumerate(zip(view.feature_names, view.columns, strict=True)):
            table = self.codes[name]
            uniques, inverse = np.unique(column, return_inverse=True)
            # A value never seen in training is a missing value to the trees.
            mapped = np.array([table.get(u, np.nan) for u in uniques.tolist()], dtype=np.float64)
            matrix[:, index] = mapped[inverse]
        return matrix

    def predict(self, data: Dataset) -> Floats:
        result: Floats = self.classifier.predict_proba(self._matrix(data))[:, 1]
        return result


def fit_gradient_boosting(train: Dataset, *, random_state: int = 0) -> BoostedModel:
    _check_learnable(train)
    group_as_feature = len(train.group_keys()) > 1
    view = train.with_group_feature() if group_as_feature else train
    codes: dict[str, dict[str, int]] = {}
    for name, column in zip(view.feature_names, view.columns, strict=True):
        counts = _weighted_counts(column, view.weights)
        ranked = sorted(counts, key=lambda value: (-counts[value], value))
        codes[name] = {value: min(i, _BOOSTED_MAX_CATEGORIES) for i, value in enumerate(ranked)}
    classifier = HistGradientBoostingClassifier(
        categorical_features=[True] * len(view.feature_names), random_state=random_state
    )
    model = BoostedModel(
        classifier=classifier,
        codes=codes,
        feature_names=view.feature_names,
        group_as_feature=group_as_feature,
    )
    classifier.fit(model._matrix(train), train.labels, sample_weight=train.weights)
    return model


# --- Evaluation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBin:
    """Rows whose predicted probability falls in [low, high): predicted vs observed rate."""

    low: float
    high: float
    rows: float
    predicted: float
    observed: float


@dataclass(frozen=True)
class Metrics:
    rows: float
    positives: float
    auc: float | None
    log_loss: float | None  # None for scores that are not probabilities (manual weights)
    lift_top10: float | None
    lift_top20: float | None
    rate_top10: float | None
    rate_top20: float | None
    rate: float | None
    reliability: tuple[ReliabilityBin, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _top_rate(scores: Floats, labels: Floats, weights: Floats, share: float) -> float:
    """Conversion rate among the top ``share`` of rows (by weight) by score. Rows tied at
    the cut count in proportion, as a random tie-break would on average: a model that
    scores every lead the same has a lift of exactly 1."""
    uniques, inverse = np.unique(-scores, return_inverse=True)  # best score first
    group_weight = np.bincount(inverse, weights=weights, minlength=len(uniques))
    group_positive = np.bincount(inverse, weights=weights * labels, minlength=len(uniques))
    target = share * float(weights.sum())
    taken_weight = taken_positive = 0.0
    for weight, positive in zip(group_weight.tolist(), group_positive.tolist(), strict=True):
        if taken_weight + weight >= target:
            fraction = (target - taken_weight) / weight if weight > 0 else 0.0
            taken_positive += positive * fraction
            taken_weight = target
            break
        taken_weight += weight
        taken_positive += positive
    return taken_positive / taken_weight if taken_weight > 0 else 0.0


def _reliability(
    probabilities: Floats, labels: Floats, weights: Floats, bins: int
) -> tuple[ReliabilityBin, ...]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    result = []
    for b in range(bins):
        rows = index == b
        weight = float(weights[rows].sum())
        if weight <= 0:
            continue
        result.append(
            ReliabilityBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                rows=weight,
                predicted=float((probabilities[rows] * weights[rows]).sum()) / weight,
                observed=float((labels[rows] * weights[rows]).sum()) / weight,
            )
        )
    return tuple(result)


def evaluate_scores(
    scores: Floats, labels: Floats, weights: Floats, *, probabilities: bool, reliability_bins: int = 10
) -> Metrics:
    """AUC, log loss (probabilities only), lift at the top 10% / 20% and the reliability
    table (probabilities only) of one model's scores on holdout rows."""
    total = float(weights.sum())
    positives = float((weights * labels).sum())
    if total <= 0:
        return Metrics(0.0, 0.0, None, None, None, None, None, None, None)
    rate = positives / total
    both = 0 < positives < total
    auc = float(roc_auc_score(labels, scores, sample_weight=weights)) if both else None
    log_loss = None
    bins: tuple[ReliabilityBin, ...] = ()
    if probabilities:
        clipped = np.clip(scores, 1e-15, 1 - 1e-15)
        losses = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
        log_loss = float((losses * weights).sum() / total)
        bins = _reliability(scores, labels, weights, reliability_bins)
    top10 = _top_rate(scores, labels, weights, 0.1)
    top20 = _top_rate(scores, labels, weights, 0.2)
    return Metrics(
        rows=total,
        positives=positives,
        auc=auc,
        log_loss=log_loss,
        lift_top10=top10 / rate if rate > 0 else None,
        lift_top20=top20 / rate if rate > 0 else None,
        rate_top10=top10,
        rate_top20=top20,
        rate=rate,
        reliability=bins,
    )


@dataclass
class HoldoutRun:
    """Every model fitted on the training rows and scored on the holdout rows."""

    train: Dataset
    holdout: Dataset
    scores: dict[str, Floats]
    probabilistic: dict[str, bool]
    fit_seconds: dict[str, float]
    learned: LearnedModel
    settings: LearningSettings = field(default=DEFAULT_SETTINGS)

    def metrics(self, group: str | None = None) -> dict[str, Metrics]:
        """Each model's metrics on the holdout rows (of one customer, when given)."""
        rows = np.ones(self.holdout.size, dtype=bool) if group is None else self.holdout.groups == group
        return {
            name: evaluate_scores(
                scores[rows],
                self.holdout.labels[rows],
                self.holdout.weights[rows],
                probabilities=self.probabilistic[name],
                reliability_bins=self.settings.reliability_bins,
            )
            for name, scores in self.scores.items()
        }


def _timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fit()
    return result, time.perf_counter() - started


def run_holdout(
    data: Dataset,
    holdout: Bools,
    *,
    settings: LearningSettings = DEFAULT_SETTINGS,
    manual_log_scores: Floats | None = None,
) -> HoldoutRun:
    """Fit the learned, gradient-boosting and pooled models on the rows outside
    ``holdout`` and score the holdout rows with them (and with the manual weights' log
    scores, when given). Everything a model learns (vocabularies, coefficients, trees)
    comes from the training rows only."""
    train = data.subset(~holdout)
    test = data.subset(holdout)
    if test.size == 0:
        raise LearningError("The holdout is empty: there are too few rows to evaluate.")
    _check_learnable(train)
    learned, learned_seconds = _timed(lambda: fit_learned(train, settings))
    boosted, boosted_seconds = _timed(lambda: fit_gradient_boosting(train))
    pooled, pooled_seconds = _timed(lambda: fit_pooled(train, settings))
    scores = {LEARNED: learned.predict(test), BOOSTED: boosted.predict(test), POOLED: pooled.predict(test)}
    probabilistic = {LEARNED: True, BOOSTED: True, POOLED: True}
    if manual_log_scores is not None:
        scores[MANUAL] = manual_log_scores[holdout]
        probabilistic[MANUAL] = False
    return HoldoutRun(
        train=train,
        holdout=test,
        scores=scores,
        probabilistic=probabilistic,
        fit_seconds={LEARNED: learned_seconds, BOOSTED: boosted_seconds, POOLED: pooled_seconds},
        learned=learned,
        settings=settings,
    )
