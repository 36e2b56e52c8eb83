"""Offline evaluation of a file of past leads, and the report ``evaluate_model`` prints.

No database: a CSV (any delimiter :mod:`leads.importers` can sniff) or XLSX/XLS/ODS is
read with the import's own reader, its rows ordered by ``--order-by`` (else kept in file
order), the newest 20% held out, and the learned, gradient-boosting, pooled and manual
models compared on the same features and split (:func:`learning.run_holdout`).
"""

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leads.importers import (
    ImportFileError,
    MappingError,
    check_file_encoding,
    normalize_header,
    open_table,
    parse_outcome,
    parse_timestamp,
)
from prioritization.learning import (
    BOOSTED,
    DEFAULT_SETTINGS,
    LEARNED,
    MANUAL,
    POOLED,
    Dataset,
    Floats,
    LearningSettings,
    Metrics,
    fit_numeric_bins,
    run_holdout,
    time_ordered_holdout,
)
from prioritization.scoring import UNKNOWN_VALUE

MODEL_LABELS = {
    LEARNED: "learned (per customer + pooled prior)",
    BOOSTED: "gradient boosting",
    POOLED: "pooled only",
    MANUAL: "manual weights",
}
# The bench's goal: the learned model's AUC within this of gradient boosting's.
AUC_GAP_GOAL = 0.01


class EvaluationInputError(Exception):
    """Bad arguments or a file that cannot be evaluated; the message is one readable line."""


@dataclass(frozen=True)
class Comparison:
    """Every model's metrics on the same holdout, and what they were computed from."""

    rows: int
    train_rows: int
    holdout_rows: int
    metrics: dict[str, Metrics]
    fit_seconds: dict[str, float]
    details: dict[str, Any]  # source, features, order, customers: for the report and JSON


def _cell(value: object) -> str:
    """A cell as text: spreadsheets store 660737 as 660737.0 and dates as datetimes."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value).strip()


def _find_columns(header: Sequence[str], wanted: Mapping[str, str]) -> dict[str, int]:
    """Positions of the wanted columns (label → column name): exact name first, then
    ignoring case, spacing and punctuation as the import does."""
    exact = {name.strip(): position for position, name in enumerate(header) if name}
    loose = {normalize_header(name): position for position, name in enumerate(header) if name}
    positions: dict[str, int] = {}
    missing = []
    for label, name in wanted.items():
        position = exact.get(name.strip(), loose.get(normalize_header(name)))
        if position is None:
            missing.append(f"{name!r} ({label})")
        else:
            positions[name] = position
    if missing:
        found = ", ".join(repr(name) for name in header if name) or "none"
        raise EvaluationInputError(f"The file has no column {', '.join(missing)}. Columns found: {found}.")
    return positions


def _order_keys(values: list[str], rows: list[int], column: str) -> list[Any]:
    """Order-by values as numbers, else timestamps, else text (compared as text)."""
    for value, row in zip(values, rows, strict=True):
        if not value:
            raise EvaluationInputError(f"Row {row}: the --order-by column {column!r} is empty.")
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        pass
    else:
        for number, value, row in zip(numbers, values, rows, strict=True):
            # NaN compares false with everything: sorting by it would put newer rows among
            # the training rows, so the models would learn from the future they are tested on.
            if math.isnan(number):
                raise EvaluationInputError(
                    f"Row {row}: the --order-by column {column!r} is {value!r}, which orders nothing."
                )
        return numbers
    try:
        return [parse_timestamp(value) for value in values]
    except (TypeError, ValueError, OverflowError):
        return values


def _read_weights(
    weights: Mapping[str, object] | None, features: Sequence[str]
) -> dict[str, dict[str, float]]:
    if weights is None:
        return {}
    if not isinstance(weights, Mapping):
        raise EvaluationInputError(
            '--weights must hold a JSON object such as {"Lead Source": {"Referral": 2}}.'
        )
    result: dict[str, dict[str, float]] = {}
    for column, table in weights.items():
        if column not in features:
            raise EvaluationInputError(f"--weights names {column!r}, which is not one of --features.")
        if not isinstance(table, Mapping) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0
            for w in table.values()
        ):
            raise EvaluationInputError(f"--weights of {column!r} must map values to positive numbers.")
        result[column] = {str(value).strip() or UNKNOWN_VALUE: float(w) for value, w in table.items()}
    return result


def evaluate_file(
    path: Path,
    *,
    target: str,
    features: Sequence[str],
    order_by: str | None = None,
    customer_column: str | None = None,
    empty_values: Sequence[str] = (),
    weights: Mapping[str, object] | None = None,
    encoding: str = "utf-8",
    settings: LearningSettings = DEFAULT_SETTINGS,
) -> Comparison:
    """Compare the models on a file; raises :class:`EvaluationInputError` (readable)."""
    features = [f.strip() for f in features if f.strip()]
    if not features:
        raise EvaluationInputError(
            "--features needs at least one column, e.g. --features 'Lead Source,City'."
        )
    if len(set(features)) != len(features):
        raise EvaluationInputError("--features names a column twice.")
    if target in features:
        raise EvaluationInputError(
            f"The target {target!r} cannot also be a feature: it is the outcome itself."
        )
    manual = _read_weights(weights, features)
    try:
        check_file_encoding(encoding)
    except MappingError:
        raise EvaluationInputError(
            f"--encoding {encoding!r} is not a known character set of text files; "
            "name one such as utf-8, cp1252 or utf-16."
        ) from None
    try:
        table = open_table(path, encoding=encoding)
    except ImportFileError as exc:
        raise EvaluationInputError(f"{path.name}: {exc}") from None
    except OSError as exc:
        raise EvaluationInputError(f"{path}: {exc.strerror or exc}.") from None
    wanted = {"--target": target, **{f"--features #{i + 1}": f for i, f in enumerate(features)}}
    if order_by:
        wanted["--order-by"] = order_by
    if customer_column:
        wanted["--customer-column"] = customer_column
    positions = _find_columns(table.header, wanted)
    empty = {v.strip().lower() for v in empty_values}

    def text(cells: list[object], column: str) -> str:
        position = positions[column]
        value = _cell(cells[position]) if position < len(cells) else ""
        return "" if value.lower() in empty else value

    numbers: list[int] = []
    labels: list[float] = []
    values: list[list[str]] = []
    orders: list[str] = []
    groups: list[str] = []
    try:
        for row, cells in table.rows:
            raw_target = cells[positions[target]] if positions[target] < len(cells) else None
            try:
                labels.append(1.0 if parse_outcome(raw_target) else 0.0)
            except ValueError:
                raise EvaluationInputError(
                    f"Row {row}: the target {target!r} is {_cell(raw_target)!r}; "
                    "use 1/0, true/false or yes/no."
                ) from None
            numbers.append(row)
            values.append([text(cells, f) for f in features])
            if order_by:
                orders.append(text(cells, order_by))
            if customer_column:
                groups.append(text(cells, customer_column) or UNKNOWN_VALUE)
    except ImportFileError as exc:
        raise EvaluationInputError(f"{path.name}: {exc}") from None
    if len(numbers) < 10:
        raise EvaluationInputError(f"{path.name} has {len(numbers)} data rows; at least 10 are needed.")

    keys: list[Any] = _order_keys(orders, numbers, order_by) if order_by else list(range(len(numbers)))
    holdout = time_ordered_holdout(keys, share=settings.holdout_share)
    # Numeric columns become quantile bins, fitted on the training rows only.
    binned = []
    for index, feature in enumerate(features):
        bins = fit_numeric_bins([v[index] for v, h in zip(values, holdout, strict=True) if not h])
        if bins is not None:
            binned.append(feature)
            for row_values in values:
                row_values[index] = bins.label(row_values[index])
    data = Dataset.build(features, values, labels, groups=groups or None)
    manual_scores = _manual_scores(data, manual)
    run = run_holdout(data, holdout, settings=settings, manual_log_scores=manual_scores)
    return Comparison(
        rows=data.size,
        train_rows=run.train.size,
        holdout_rows=run.holdout.size,
        metrics=run.metrics(),
        fit_seconds=run.fit_seconds,
        details={
            "source": path.name,
            "target": target,
            "features": list(features),
            "binned": binned,
            "order_by": order_by,
            "customer_column": customer_column,
            "customers": len(set(groups)) if groups else None,
            "manual": "given weights" if manual else "no weights (every lead the same)",
        },
    )


def _manual_scores(data: Dataset, weights: Mapping[str, Mapping[str, float]]) -> Floats:
    """Log of the product of the hand-set weights of each row (none: every row 0)."""
    scores = np.zeros(data.size)
    for name, column in zip(data.feature_names, data.columns, strict=True):
        table = weights.get(name)
        if table:
            scores += np.array([math.log(table.get(v, 1.0)) for v in column.tolist()])
    return scores


# --- The report -------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def comparison_lines(comparison: Comparison) -> list[str]:
    """The table of every model, the goals, and the learned model's reliability table."""
    metrics = comparison.metrics
    lines = [
        f"{'model':<40} {'AUC':>7} {'log loss':>9} {'lift@10%':>9} {'lift@20%':>9} "
        f"{'conv@10%':>9} {'fit s':>7}",
    ]
    for name, m in metrics.items():
        label = MODEL_LABELS.get(name, name)
        if name == MANUAL:
            label = f"manual: {comparison.details.get('manual', 'weights in force')}"
        fit = comparison.fit_seconds.get(name)
        lines.append(
            f"{label[:40]:<40} {_number(m.auc):>7} {_number(m.log_loss):>9} {_number(m.lift_top10, 2):>9} "
            f"{_number(m.lift_top20, 2):>9} {_number(m.rate_top10, 3):>9} {_number(fit, 2):>7}"
        )
    overall = next(iter(metrics.values()))
    lines.append(f"holdout conversion rate: {_number(overall.rate, 3)} ({comparison.holdout_rows} rows)")
    lines.extend(goal_lines(metrics))
    learned = metrics.get(LEARNED)
    if learned is not None and learned.reliability:
        lines.append("reliability of the learned model on the holdout (predicted vs observed conversion):")
        lines.append(f"  {'predicted':<11} {'rows':>7} {'mean predicted':>15} {'observed':>9}")
        for b in learned.reliability:
            lines.append(
                f"  {b.low:.1f}-{b.high:.1f}     {b.rows:>7.0f} {b.predicted:>15.3f} {b.observed:>9.3f}"
            )
    return lines


def goal_lines(metrics: Mapping[str, Metrics]) -> list[str]:
    learned = metrics.get(LEARNED)
    if learned is None or learned.auc is None:
        return ["goals: no AUC (the holdout holds one outcome only)"]
    lines = []
    boosted = metrics.get(BOOSTED)
    if boosted is not None and boosted.auc is not None:
        gap = boosted.auc - learned.auc
        verdict = "met" if gap <= AUC_GAP_GOAL else "MISSED"
        lines.append(
            f"goal: learned AUC within {AUC_GAP_GOAL} of gradient boosting: {gap:+.4f} behind, {verdict}"
        )
    for name in (POOLED, MANUAL):
        other = metrics.get(name)
        if other is not None and other.auc is not None:
            verdict = "met" if learned.auc > other.auc else "MISSED"
            lines.append(
                f"goal: learned AUC above {MODEL_LABELS[name]}: "
                f"{learned.auc:.4f} vs {other.auc:.4f}, {verdict}"
            )
    return lines


def _rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 4)


def comparison_json(comparison: Comparison) -> str:
    """One line: {"rows", "holdout_rows", "models": [{"name", "auc", "log_loss", "lift_top10", ...}]}."""
    models = [
        {
            "name": name,
            "auc": _rounded(m.auc),
            "log_loss": _rounded(m.log_loss),
            "lift_top10": _rounded(m.lift_top10),
            "lift_top20": _rounded(m.lift_top20),
            "conversion_top10": _rounded(m.rate_top10),
            "conversion_top20": _rounded(m.rate_top20),
            "fit_seconds": _rounded(comparison.fit_seconds.get(name)),
        }
        for name, m in comparison.metrics.items()
    ]
    overall = next(iter(comparison.metrics.values()))
    document = {
        "rows": comparison.rows,
        "holdout_rows": comparison.holdout_rows,
        "train_rows": comparison.train_rows,
        "holdout_conversion": _rounded(overall.rate),
        "models": models,
        **{k: v for k, v in comparison.details.items() if k != "manual"},
    }
    return json.dumps(document, ensure_ascii=False)
