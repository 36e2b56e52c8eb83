"""The fixed outcome model every policy is judged on. Pure functions, no database.

- A call picks up with probability ``pickup_probability`` (0.7); otherwise it is a no
  answer, and the engine's own ``record_outcome`` reschedules the lead by the policy's rules.
- A picked-up call to a live lead converts with probability
  ``base(lead) × exp(−t / decay)``, t = time from when the lead became due (arrival, or
  its reschedule) to the call, decay = 20 minutes.
- A picked-up call to a stale lead converts with ``base(lead) × exp(−age / recency)``,
  age = time since the lead's last activity, recency = 14 days.
- ``base(lead)`` comes from the real X Education lead file: its ``Converted`` rate by
  ``Lead Source`` and by ``City``, computed within each simulated customer's own rows
  (customers differ by ``Lead Origin``), smoothed towards the customer's overall rate
  and combined in log-odds (naive Bayes): an attribute's effect differs by customer
  because the data does.

The model is fixed: it never looks at the policy being judged.
"""

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prioritization.simulation.arrivals import DataError

LEAD_FILE_DIR = "x_education_leads"
LEAD_FILE = "Leads.csv"
# X Education writes "Select" for "not chosen": the lead has no value.
MISSING_VALUES = frozenset({"", "Select"})
# Attributes of the lead file that make up base(lead), as (lead field, file column).
BASE_ATTRIBUTES = (("source", "Lead Source"), ("city", "City"))
LIVE = "live"
STALE = "stale"


@dataclass(frozen=True)
class OutcomeModel:
    pickup_probability: float = 0.7
    decay_minutes: float = 20.0
    stale_recency_days: float = 14.0
    # Pseudo-count of the smoothing: a value seen n times gets (conversions + m × prior) / (n + m).
    smoothing: float = 20.0
    # Length of a call nobody answers (ringing until the contractor gives up).
    no_answer_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.pickup_probability <= 1:
            raise ValueError("The pick-up probability must be between 0 and 1.")
        for name in ("decay_minutes", "stale_recency_days", "no_answer_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be greater than 0.")
        if not math.isfinite(self.smoothing) or self.smoothing < 0:
            raise ValueError("The smoothing must not be negative.")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def conversion_probability(
    *,
    base: float,
    lead_type: str,
    waited_seconds: float,
    activity_age_seconds: float,
    model: OutcomeModel,
) -> float:
    """Probability that a picked-up call converts (see the module docstring)."""
    if lead_type == LIVE:
        return base * math.exp(-max(0.0, waited_seconds) / (model.decay_minutes * 60.0))
    return base * math.exp(-max(0.0, activity_age_seconds) / (model.stale_recency_days * 86_400.0))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ConversionTable:
    """One customer's smoothed conversion rates: overall and per value of each attribute."""

    prior: float
    rates: dict[str, dict[str, float]] = field(default_factory=dict)  # attribute → value → rate

    def base(self, attributes: Mapping[str, str]) -> float:
        """base(lead): the prior moved in log-odds by each attribute's own effect."""
        logit = _logit(self.prior)
        total = logit
        for attribute, values in self.rates.items():
            rate = values.get(attributes.get(attribute, ""))
            if rate is not None:
                total += _logit(rate) - logit
        return _sigmoid(total)

    def as_dict(self) -> dict[str, Any]:
        return {"prior": self.prior, "rates": self.rates}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConversionTable":
        return cls(prior=float(data["prior"]), rates={k: dict(v) for k, v in data["rates"].items()})


def conversion_table(
    rows: Iterable[tuple[Mapping[str, str], bool]], *, attributes: Sequence[str], smoothing: float
) -> ConversionTable:
    """Smoothed rates from (attributes, converted) pairs."""
    counts: dict[str, defaultdict[str, list[int]]] = {
        name: defaultdict(lambda: [0, 0]) for name in attributes
    }
    seen = converted_total = 0
    for values, converted in rows:
        seen += 1
        converted_total += converted
        for name in attributes:
            cell = counts[name][values.get(name, "")]
            cell[0] += 1
            cell[1] += converted
    if not seen:
        raise ValueError("No rows to compute conversion rates from.")
    prior = converted_total / seen
    rates = {
        name: {
            value: (conversions + smoothing * prior) / (n + smoothing)
            for value, (n, conversions) in sorted(by_value.items())
        }
        for name, by_value in counts.items()
    }
    return ConversionTable(prior=prior, rates=rates)


@dataclass(frozen=True)
class LeadRow:
    """One lead of the file, as the engine sees it, with its origin and outcome."""

    origin: str
    source: str
    city: str
    stage: str  # X Education's "Last Activity", the lead's stage (as in the demo data)
    converted: bool


def _clean(value: str | None) -> str:
    value = (value or "").strip()
    return "" if value in MISSING_VALUES else value


def read_lead_file(path: Path) -> list[LeadRow]:
    """The X Education leads; raises :class:`DataError` when the file is missing or malformed."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"Cannot read the lead file {path}: {exc.strerror or exc}.") from exc
    needed = {"Lead Origin", "Lead Source", "City", "Last Activity", "Converted"}
    rows = []
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise DataError(f"{path} is not the X Education lead file: it needs {', '.join(sorted(needed))}.")
        line = 1
        try:
            for raw in reader:
                line += 1
                converted = raw["Converted"].strip()
                if converted not in ("0", "1"):
                    raise ValueError(f"Converted is {converted!r}, not 0 or 1")
                rows.append(
                    LeadRow(
                        origin=_clean(raw["Lead Origin"]),
                        source=_clean(raw["Lead Source"]),
                        city=_clean(raw["City"]),
                        stage=_clean(raw["Last Activity"]),
                        converted=converted == "1",
                    )
                )
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}, line {line}: {exc}.") from exc
    return rows


def table_for_rows(rows: Sequence[LeadRow], *, smoothing: float) -> ConversionTable:
    return conversion_table(
        (({"source": row.source, "city": row.city}, row.converted) for row in rows),
        attributes=[name for name, _ in BASE_ATTRIBUTES],
        smoothing=smoothing,
    )
