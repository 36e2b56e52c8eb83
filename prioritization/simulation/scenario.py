"""The simulated world: customers, campaigns, contractors on shifts, and the leads to come.

Built once in the parent process from the data files and the options, then handed as
JSON to each policy's run, so every policy faces exactly the same arrivals, attributes,
handling times and random draws.

Three customers, each with its own lead mix: their leads are drawn from the X Education
rows of one ``Lead Origin`` group, and each one's conversion table is computed from
those rows only. Arrivals come from the call log; a call's type decides its customer and
campaign (the log's mix of types becomes the customers' shares of the stream).
Contractors are spread evenly over the shift template's shifts and over three skill
groups (every campaign; the first customer's; the other two customers'), and each asks
for its group's campaign tuple.
"""

import datetime as dt
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leads.importers import timestamp_in_range
from prioritization.simulation import arrivals as arrivals_module
from prioritization.simulation.arrivals import (
    CALL_LOG_DIR,
    CALL_LOG_FILE,
    FALLBACK_SHIFTS,
    FALLBACK_TYPE_MIX,
    SHIFTS_FILE,
    Arrival,
    DataError,
    HandlingTimes,
    read_call_log,
    read_shift_template,
    shift_spans,
    synthetic_arrivals,
    type_mix,
)
from prioritization.simulation.outcomes import (
    LEAD_FILE,
    LEAD_FILE_DIR,
    LIVE,
    STALE,
    ConversionTable,
    LeadRow,
    OutcomeModel,
    read_lead_file,
    table_for_rows,
)


@dataclass(frozen=True)
class CustomerSpec:
    name: str
    pricing_plan: str
    origins: tuple[str, ...]  # X Education "Lead Origin" values its leads are drawn from
    campaigns: tuple[tuple[str, tuple[str, ...]], ...]  # (campaign name, call types of the log)


CUSTOMERS: tuple[CustomerSpec, ...] = (
    CustomerSpec(
        "Landing Pages Ltd",
        "pro",
        ("Landing Page Submission",),
        (("Regular", ("PS",)), ("English", ("PE",))),
    ),
    CustomerSpec(
        "API Partners",
        "starter",
        ("API",),
        (("Prospects", ("NW",)), ("Internet", ("IN",))),
    ),
    CustomerSpec(
        "Forms and Imports",
        "enterprise",
        ("Lead Add Form", "Lead Import", "Quick Add Form"),
        (("Stock exchange", ("NE",)), ("Callbacks", ("TT",))),
    ),
)
# Which customers' campaigns each skill group of contractors is qualified for.
SKILL_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (0,), (1, 2))

# The headline window: the log's week of Sunday 7 to Saturday 13 February 1999, replayed
# as 8 to 14 February 2026 (the centre's week runs Sunday to Thursday, with short
# Fridays and quiet Saturdays).
DEFAULT_START = dt.datetime(2026, 2, 8, tzinfo=dt.UTC)
DEFAULT_DAYS = 7.0
# Live leads' last activity: this many hours before arrival on average (exponential);
# the lead file has no timestamps. Stale leads' recency counts from it.
LAST_ACTIVITY_MEAN_HOURS = 24.0
# A stale backlog's last activity: up to this many days before the start.
STALE_BACKLOG_MAX_DAYS = 90.0
# Bounds of a scenario asked for in the admin or by `manage.py simulate`.
MAX_CONTRACTORS = 500
MIN_DAYS = 0.05  # 72 minutes
# The call log covers 28 days (February 1999, replayed as 2 February to 1 March 2026).
MAX_DAYS = 28.0


SIMULATED_PERIOD_ERROR = "The simulated period (the start plus the days) must end in the years 1900 to 2099."


def simulated_period_in_range(start: dt.datetime, days: float) -> bool:
    """Whether ``days`` from ``start`` end within the years leads may be stamped with."""
    try:
        end = start + dt.timedelta(days=days)
    except OverflowError:
        return False
    return timestamp_in_range(end)


@dataclass(frozen=True)
class ScenarioOptions:
    data_dir: Path
    contractors: int
    start: dt.datetime = DEFAULT_START
    days: float = DEFAULT_DAYS
    seed: int = 1
    rate_per_hour: float | None = None  # None: the call log's arrivals
    sample: float = 1.0  # share of the log's arrivals kept (a thinned stream, same shape)
    synthetic_leads: bool = False  # attributes and rates made up instead of the lead file
    stale_backlog: int = 0  # stale leads waiting at the start
    model: OutcomeModel = field(default_factory=OutcomeModel)
    # How policies are judged: the contract's SLA (first call within 30 minutes of
    # arrival for 90% of live leads), whatever SLA window a policy itself protects.
    sla_minutes: float = 30.0
    sla_target: float = 0.9

    def __post_init__(self) -> None:
        if self.contractors < 1:
            raise ValueError("There must be at least one contractor.")
        if not math.isfinite(self.days) or self.days <= 0:
            raise ValueError("The number of days must be greater than 0.")
        if not 0 < self.sample <= 1:
            raise ValueError("The sample must be a share in (0, 1].")
        if self.stale_backlog < 0:
            raise ValueError("The stale backlog must not be negative.")
        if self.start.tzinfo is None:
            raise ValueError("The start must be an aware datetime.")
        if not simulated_period_in_range(self.start, self.days):
            # Leads are created up to the end: it must be a timestamp the store accepts
            # (and one Python can represent: a huge --days overflowed in build_scenario).
            raise ValueError(SIMULATED_PERIOD_ERROR)
        if not math.isfinite(self.sla_minutes) or self.sla_minutes <= 0:
            raise ValueError("The SLA window must be greater than 0 minutes.")
        if not 0 < self.sla_target <= 1:
            raise ValueError("The SLA target must be a share in (0, 1].")

    def describe(self) -> dict[str, Any]:
        """The options as plain values (shown with results, stored with admin runs)."""
        return {
            "start": self.start.isoformat(),
            "days": self.days,
            "contractors": self.contractors,
            "seed": self.seed,
            "arrivals": f"Poisson {self.rate_per_hour:g}/h" if self.rate_per_hour else "call log",
            "sample": self.sample,
            "lead_attributes": "synthetic" if self.synthetic_leads else "X Education",
            "stale_backlog": self.stale_backlog,
            "sla_minutes": self.sla_minutes,
            "sla_target": self.sla_target,
            "model": self.model.as_dict(),
        }


@dataclass(frozen=True)
class LeadSpec:
    external_id: str
    at: dt.datetime  # arrival: created_at and the moment it is pushed
    customer: int  # index into Scenario.customers
    campaign: int  # index into Scenario.campaigns
    lead_type: str
    source: str
    city: str
    stage: str
    last_activity: dt.datetime
    base: float  # base(lead) of the outcome model
    call_type: str
    handling_seconds: float | None  # the log's service time of the first picked-up call


@dataclass(frozen=True)
class ContractorSpec:
    name: str
    campaigns: tuple[int, ...]  # indexes into Scenario.campaigns
    duty: tuple[tuple[dt.datetime, dt.datetime], ...]  # [on, off) periods


@dataclass(frozen=True)
class Scenario:
    start: dt.datetime
    end: dt.datetime
    seed: int
    model: OutcomeModel
    sla_minutes: float
    sla_target: float
    customers: tuple[tuple[str, str], ...]  # (name, pricing plan)
    campaigns: tuple[tuple[int, str], ...]  # (customer index, name)
    contractors: tuple[ContractorSpec, ...]
    leads: tuple[LeadSpec, ...]  # in arrival order
    handling: HandlingTimes
    options: dict[str, Any] = field(default_factory=dict)

    # --- JSON, for the child process of each policy ---------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "start": self.start.isoformat(),
                "end": self.end.isoformat(),
                "seed": self.seed,
                "model": self.model.as_dict(),
                "sla_minutes": self.sla_minutes,
                "sla_target": self.sla_target,
                "customers": self.customers,
                "campaigns": self.campaigns,
                "contractors": [
                    {
                        "name": c.name,
                        "campaigns": c.campaigns,
                        "duty": [[on.isoformat(), off.isoformat()] for on, off in c.duty],
                    }
                    for c in self.contractors
                ],
                "leads": [
                    {
                        **asdict(lead),
                        "at": lead.at.isoformat(),
                        "last_activity": lead.last_activity.isoformat(),
                    }
                    for lead in self.leads
                ],
                "handling": self.handling.by_type,
                "options": self.options,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "Scenario":
        data = json.loads(text)
        moment = dt.datetime.fromisoformat
        return cls(
            start=moment(data["start"]),
            end=moment(data["end"]),
            seed=data["seed"],
            model=OutcomeModel(**data["model"]),
            sla_minutes=float(data["sla_minutes"]),
            sla_target=float(data["sla_target"]),
            customers=tuple((name, plan) for name, plan in data["customers"]),
            campaigns=tuple((customer, name) for customer, name in data["campaigns"]),
            contractors=tuple(
                ContractorSpec(
                    name=c["name"],
                    campaigns=tuple(c["campaigns"]),
                    duty=tuple((moment(on), moment(off)) for on, off in c["duty"]),
                )
                for c in data["contractors"]
            ),
            leads=tuple(
                LeadSpec(**{**lead, "at": moment(lead["at"]), "last_activity": moment(lead["last_activity"])})
                for lead in data["leads"]
            ),
            handling=HandlingTimes({k: list(v) for k, v in data["handling"].items()}),
            options=data.get("options", {}),
        )


# --- Building ---------------------------------------------------------------------------------


def _customer_of_type() -> dict[str, tuple[int, int]]:
    """Call type of the log → (customer index, campaign index)."""
    mapping = {}
    campaign = 0
    for customer, spec in enumerate(CUSTOMERS):
        for _, call_types in spec.campaigns:
            for call_type in call_types:
                mapping[call_type] = (customer, campaign)
            campaign += 1
    return mapping


def duty_periods(
    hours: frozenset[int], *, start: dt.datetime, end: dt.datetime
) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    """A shift's [on, off) periods on every day between ``start`` and ``end`` (clipped)."""
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    periods: list[tuple[dt.datetime, dt.datetime]] = []
    day = midnight
    while day < end:
        for first, last in shift_spans(hours):
            on = max(start, day + dt.timedelta(hours=first))
            off = min(end, day + dt.timedelta(hours=last))
            if on < off:
                if periods and periods[-1][1] == on:  # a night shift running past midnight
                    periods[-1] = (periods[-1][0], off)
                else:
                    periods.append((on, off))
        day += dt.timedelta(days=1)
    return tuple(periods)


def _contractors(
    count: int,
    shifts: Sequence[frozenset[int]],
    campaigns_of_customer: list[list[int]],
    *,
    start: dt.datetime,
    end: dt.datetime,
) -> tuple[ContractorSpec, ...]:
    made = []
    for index in range(count):
        shift = index % len(shifts)
        group = SKILL_GROUPS[index % len(SKILL_GROUPS)]
        campaigns = tuple(c for customer in group for c in campaigns_of_customer[customer])
        made.append(
            ContractorSpec(
                name=f"Contractor {index + 1} (shift {shift + 1}, group {index % len(SKILL_GROUPS) + 1})",
                campaigns=campaigns,
                duty=duty_periods(shifts[shift], start=start, end=end),
            )
        )
    return tuple(made)


def _synthetic_rows(customer: int, rng: random.Random) -> tuple[list[LeadRow], ConversionTable]:
    """Made-up attributes and rates for one customer (when the lead file is not used)."""
    sources = {f"Source {chr(65 + i)}": rng.uniform(0.05, 0.6) for i in range(5)}
    cities = {f"City {i + 1}": rng.uniform(0.1, 0.6) for i in range(4)}
    rows = [
        LeadRow(f"synthetic {customer}", source, city, "", False) for source in sources for city in cities
    ]
    prior = sum(sources.values()) / len(sources)
    return rows, ConversionTable(prior=prior, rates={"source": sources, "city": cities})


def build_scenario(options: ScenarioOptions) -> Scenario:
    """The world of one comparison, from the data files and the options (deterministic)."""
    data_dir = options.data_dir
    # Shifts are hours of the UTC day, as the log's clock is (see arrivals): a start given
    # with another offset must not move them by that offset.
    start = options.start.astimezone(dt.UTC)
    end = start + dt.timedelta(days=options.days)
    rng = random.Random(f"{options.seed}:scenario")

    log_path = data_dir / CALL_LOG_DIR / CALL_LOG_FILE
    log = read_call_log(log_path) if options.rate_per_hour is None or log_path.exists() else None
    handling = log.handling if log is not None else HandlingTimes({})
    if options.rate_per_hour is None:
        assert log is not None
        stream = arrivals_module.window(log.arrivals, start=start, end=end)
        if options.sample < 1:
            stream = [arrival for arrival in stream if rng.random() < options.sample]
        if not stream:
            raise DataError(
                f"The call log has no calls between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} "
                "(it covers February 1999, replayed as 2 February to 1 March 2026)."
            )
    else:
        mix = type_mix(log.arrivals) if log is not None else FALLBACK_TYPE_MIX
        stream = synthetic_arrivals(
            rate_per_hour=options.rate_per_hour, start=start, end=end, mix=mix, rng=rng
        )

    shifts_path = data_dir / CALL_LOG_DIR / SHIFTS_FILE
    shifts = read_shift_template(shifts_path) if shifts_path.exists() else FALLBACK_SHIFTS

    if options.synthetic_leads:
        made = [
            _synthetic_rows(i, random.Random(f"{options.seed}:customer:{i}")) for i in range(len(CUSTOMERS))
        ]
        rows_of = [rows for rows, _ in made]
        tables = [table for _, table in made]
    else:
        lead_rows = read_lead_file(data_dir / LEAD_FILE_DIR / LEAD_FILE)
        rows_of = [[row for row in lead_rows if row.origin in spec.origins] for spec in CUSTOMERS]
        for spec, rows in zip(CUSTOMERS, rows_of, strict=True):
            if not rows:
                raise DataError(f"The lead file has no rows of origin {', '.join(spec.origins)}.")
        tables = [table_for_rows(rows, smoothing=options.model.smoothing) for rows in rows_of]

    campaigns: list[tuple[int, str]] = []
    campaigns_of_customer: list[list[int]] = []
    for customer, spec in enumerate(CUSTOMERS):
        campaigns_of_customer.append([])
        for name, _ in spec.campaigns:
            campaigns_of_customer[customer].append(len(campaigns))
            campaigns.append((customer, name))
    placement = _customer_of_type()

    def lead(
        index: int, arrival: Arrival, customer: int, campaign: int, lead_type: str, activity: dt.datetime
    ) -> LeadSpec:
        lead_rng = random.Random(f"{options.seed}:attributes:{index}")
        rows = rows_of[customer]
        row = rows[int(lead_rng.random() * len(rows))]
        return LeadSpec(
            external_id=f"sim-{index}",
            at=arrival.at,
            customer=customer,
            campaign=campaign,
            lead_type=lead_type,
            source=row.source,
            city=row.city,
            stage=row.stage,
            last_activity=activity,
            base=tables[customer].base({"source": row.source, "city": row.city}),
            call_type=arrival.call_type,
            handling_seconds=arrival.handling_seconds,
        )

    leads: list[LeadSpec] = []
    for index in range(options.stale_backlog):
        backlog_rng = random.Random(f"{options.seed}:backlog:{index}")
        customer = index % len(CUSTOMERS)
        campaign = campaigns_of_customer[customer][0]
        activity = start - dt.timedelta(days=backlog_rng.uniform(1.0, STALE_BACKLOG_MAX_DAYS))
        call_type = CUSTOMERS[customer].campaigns[0][1][0]
        leads.append(lead(len(leads), Arrival(start, call_type, None), customer, campaign, STALE, activity))
    for arrival in stream:
        customer, campaign = placement.get(arrival.call_type, (0, 0))
        activity_rng = random.Random(f"{options.seed}:activity:{len(leads)}")
        hours = activity_rng.expovariate(1.0 / LAST_ACTIVITY_MEAN_HOURS)
        leads.append(
            lead(len(leads), arrival, customer, campaign, LIVE, arrival.at - dt.timedelta(hours=hours))
        )

    return Scenario(
        start=start,
        end=end,
        seed=options.seed,
        model=options.model,
        sla_minutes=options.sla_minutes,
        sla_target=options.sla_target,
        customers=tuple((spec.name, spec.pricing_plan) for spec in CUSTOMERS),
        campaigns=tuple(campaigns),
        contractors=_contractors(options.contractors, shifts, campaigns_of_customer, start=start, end=end),
        leads=tuple(leads),
        handling=handling,
        options=options.describe(),
    )
