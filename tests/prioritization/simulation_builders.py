"""Small worlds for the simulator's tests: data files in the real formats, and scenarios
built by hand so that every figure can be worked out on paper."""

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from prioritization.simulation.arrivals import HandlingTimes
from prioritization.simulation.outcomes import LIVE, OutcomeModel
from prioritization.simulation.scenario import ContractorSpec, LeadSpec, Scenario

# A Monday, 08:00 UTC (the log's 8 February 1999 is replayed as 9 February 2026).
T0 = dt.datetime(2026, 2, 9, 8, 0, tzinfo=dt.UTC)

LOG_HEADER = (
    "vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\tq_start\t"
    "q_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver"
)
TYPES = ("PS", "PS", "NW", "PS", "NE", "TT", "PS", "IN", "PE", "NW")


def write_data_dir(root: Path, *, calls: int = 60) -> Path:
    """A data directory like LEADRANK_DATA_DIR: the call log (``calls`` calls on Monday
    8 Feb 1999 from 08:00, one every 2 minutes), the shift template and a lead file."""
    log_dir = root / "call_center_anonymous_bank_1999"
    log_dir.mkdir(parents=True)
    lines = [LOG_HEADER]
    for i in range(calls):
        minutes = 8 * 60 + 2 * i
        clock = f"{minutes // 60}:{minutes % 60:02d}:00"
        outcome = "HANG" if i % 7 == 3 else "AGENT"
        service = 60 + (i * 37) % 300 if outcome == "AGENT" else 0
        lines.append(
            f"AA0101\t{1000 + i}\t0\t0\t{TYPES[i % len(TYPES)]}\t990208\t{clock}\t{clock}\t5\t0:00:00\t"
            f"0:00:00\t0\t{outcome}\t{clock}\t{clock}\t{service}\tDORIT"
        )
    lines.append(
        "AA0101\t9999\t0\t0\tPS\t990208\t9:00:00\t9:00:00\t5\t0:00:00\t0:00:00\t0\tPHANTOM\t0:00:00\t0:00:00\t0\tX"
    )
    (log_dir / "data_anonymous_bank_february.txt").write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    hours = ["Midnight", *[f"{h}am" for h in range(1, 12)], "Noon", *[f"{h}pm" for h in range(1, 12)]]
    shifts = ["Hour,StartTime,Shift1,Shift2"]
    for hour in range(24):
        cover = ("1", "0") if hour < 12 else ("0", "1")
        shifts.append(f"{hour + 1},{hours[hour]},{cover[0]},{cover[1]}")
    (log_dir / "data_anonymous_bank_shifts.csv").write_text("\r".join(shifts), encoding="ascii")

    leads_dir = root / "x_education_leads"
    leads_dir.mkdir()
    rows = ["Prospect ID,Lead Number,Lead Origin,Lead Source,City,Last Activity,Converted"]
    origins = ("Landing Page Submission", "API", "Lead Add Form")
    sources = ("Google", "Direct Traffic", "Reference")
    cities = ("Mumbai", "Select", "Thane & Outskirts")
    for i in range(90):
        rows.append(
            f"p-{i},{1000 - i},{origins[i % 3]},{sources[(i // 3) % 3]},{cities[(i // 9) % 3]},"
            f"Email Opened,{1 if i % 4 == 0 or sources[(i // 3) % 3] == 'Reference' else 0}"
        )
    (leads_dir / "Leads.csv").write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return root


def lead(
    index: int,
    at: dt.datetime,
    *,
    campaign: int = 0,
    customer: int = 0,
    base: float = 0.5,
    handling: float | None = 60.0,
    lead_type: str = LIVE,
) -> LeadSpec:
    return LeadSpec(
        external_id=f"sim-{index}",
        at=at,
        customer=customer,
        campaign=campaign,
        lead_type=lead_type,
        source="Google",
        city="Mumbai",
        stage="",
        last_activity=at - dt.timedelta(hours=1),
        base=base,
        call_type="PS",
        handling_seconds=handling,
    )


def scenario(
    leads: Sequence[LeadSpec],
    *,
    contractors: Sequence[tuple[tuple[int, ...], dt.datetime, dt.datetime]] = (
        (((0,), T0, T0 + dt.timedelta(hours=4))),
    ),
    model: OutcomeModel | None = None,
    start: dt.datetime = T0,
    hours: float = 4.0,
    seed: int = 1,
) -> Scenario:
    """One customer with one campaign (unless leads say otherwise) and the given contractors
    as (campaign indexes, on duty from, until)."""
    customers = max((spec.customer for spec in leads), default=0) + 1
    campaigns = max((spec.campaign for spec in leads), default=0) + 1
    return Scenario(
        start=start,
        end=start + dt.timedelta(hours=hours),
        seed=seed,
        model=model or OutcomeModel(),
        sla_minutes=30.0,
        sla_target=0.9,
        customers=tuple((f"Simulated customer {i}", "pro") for i in range(customers)),
        campaigns=tuple((min(i, customers - 1), f"Campaign {i}") for i in range(campaigns)),
        contractors=tuple(
            ContractorSpec(name=f"Simulated contractor {i}", campaigns=tuple(c), duty=((on, off),))
            for i, (c, on, off) in enumerate(contractors)
        ),
        leads=tuple(leads),
        handling=HandlingTimes({"*": [120.0]}),
    )
