"""The simulator's pure parts: the outcome model's arithmetic, conversion tables, data
files, staffing and the scenario (no database)."""

import datetime as dt
import json
import math
import random
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from prioritization.simulation.arrivals import (
    DataError,
    read_call_log,
    read_shift_template,
    shift_spans,
    synthetic_arrivals,
)
from prioritization.simulation.outcomes import (
    LIVE,
    STALE,
    ConversionTable,
    OutcomeModel,
    conversion_probability,
    conversion_table,
    read_lead_file,
)
from prioritization.simulation.report import format_table, render_chart
from prioritization.simulation.runner import percentile
from prioritization.simulation.scenario import (
    CUSTOMERS,
    Scenario,
    ScenarioOptions,
    build_scenario,
    duty_periods,
)
from tests.prioritization.simulation_builders import T0, write_data_dir

MODEL = OutcomeModel()


@pytest.mark.parametrize(
    ("lead_type", "waited_s", "age_s", "expected"),
    [
        (LIVE, 0, 0, 0.4),
        (LIVE, 20 * 60, 0, 0.4 * math.exp(-1)),  # one decay time: base / e
        (LIVE, 60 * 60, 10**9, 0.4 * math.exp(-3)),  # the activity age plays no part for live leads
        (LIVE, -30, 0, 0.4),  # called before it was due (cannot happen): no bonus
        (STALE, 10**6, 14 * 86_400, 0.4 * math.exp(-1)),  # stale: recency only, not the wait
        (STALE, 0, 0, 0.4),
    ],
)
def test_a_picked_up_call_converts_at_base_times_the_decay(
    lead_type: str, waited_s: float, age_s: float, expected: float
) -> None:
    probability = conversion_probability(
        base=0.4, lead_type=lead_type, waited_seconds=waited_s, activity_age_seconds=age_s, model=MODEL
    )
    assert probability == pytest.approx(expected)


def test_the_decay_and_recency_are_settings_of_the_model() -> None:
    model = OutcomeModel(decay_minutes=10.0, stale_recency_days=7.0)
    live = conversion_probability(
        base=1.0, lead_type=LIVE, waited_seconds=600, activity_age_seconds=0, model=model
    )
    stale = conversion_probability(
        base=1.0, lead_type=STALE, waited_seconds=0, activity_age_seconds=7 * 86_400, model=model
    )
    assert live == pytest.approx(math.exp(-1))
    assert stale == pytest.approx(math.exp(-1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pickup_probability": 1.5},
        {"pickup_probability": -0.1},
        {"decay_minutes": 0},
        {"stale_recency_days": -1},
        {"no_answer_seconds": float("nan")},
        {"smoothing": -1},
    ],
)
def test_the_outcome_model_refuses_values_that_make_no_sense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"."):
        OutcomeModel(**kwargs)


def test_rates_are_smoothed_towards_the_customers_own_rate() -> None:
    rows = [({"source": "A"}, True), ({"source": "A"}, True)] + [({"source": "B"}, i < 1) for i in range(8)]
    table = conversion_table(rows, attributes=["source"], smoothing=2.0)
    assert table.prior == pytest.approx(0.3)  # 3 of 10
    assert table.rates["source"]["A"] == pytest.approx((2 + 2 * 0.3) / (2 + 2))
    assert table.rates["source"]["B"] == pytest.approx((1 + 2 * 0.3) / (8 + 2))


def test_no_smoothing_gives_the_raw_rates() -> None:
    table = conversion_table(
        [({"city": "X"}, True), ({"city": "Y"}, False)], attributes=["city"], smoothing=0
    )
    assert table.rates["city"] == {"X": 1.0, "Y": 0.0}


def test_base_adds_each_attributes_effect_in_log_odds() -> None:
    table = ConversionTable(prior=0.5, rates={"source": {"A": 0.75}, "city": {"X": 0.75, "Y": 0.25}})
    # logit 0.5 = 0; each 0.75 adds ln 3: ln 9 → 0.9
    assert table.base({"source": "A", "city": "X"}) == pytest.approx(0.9)
    # Effects cancel: ln 3 − ln 3 → the prior.
    assert table.base({"source": "A", "city": "Y"}) == pytest.approx(0.5)
    # Unknown values are neutral.
    assert table.base({"source": "Z", "city": "nowhere"}) == pytest.approx(0.5)


def test_each_customer_gets_conversion_rates_from_its_own_rows(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    scenario = build_scenario(ScenarioOptions(data_dir=data, contractors=3, start=T0, days=0.1))
    base_of: dict[tuple[int, str, str], set[float]] = {}
    for spec in scenario.leads:
        base_of.setdefault((spec.customer, spec.source, spec.city), set()).add(spec.base)
    # The same attributes always give one customer the same base ...
    assert all(len(bases) == 1 for bases in base_of.values())
    # ... and the same attributes are worth different amounts to different customers.
    by_attributes: dict[tuple[str, str], set[float]] = {}
    for (_customer, source, city), bases in base_of.items():
        by_attributes.setdefault((source, city), set()).update(bases)
    assert any(len(bases) > 1 for bases in by_attributes.values())


def test_the_lead_file_reads_select_as_no_value(tmp_path: Path) -> None:
    rows = read_lead_file(write_data_dir(tmp_path) / "x_education_leads" / "Leads.csv")
    assert len(rows) == 90
    assert {row.city for row in rows} == {"Mumbai", "", "Thane & Outskirts"}
    assert {row.origin for row in rows} == {"Landing Page Submission", "API", "Lead Add Form"}


def test_a_lead_file_without_its_columns_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "Leads.csv"
    path.write_text("Prospect ID,City\nx,Mumbai\n", encoding="utf-8")
    with pytest.raises(DataError, match="Converted"):
        read_lead_file(path)
    path.write_text(
        "Lead Origin,Lead Source,City,Last Activity,Converted\nAPI,Google,,x,maybe\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match="line 2"):
        read_lead_file(path)


def test_the_call_log_is_replayed_in_2026_without_phantom_calls(tmp_path: Path) -> None:
    log = read_call_log(
        write_data_dir(tmp_path) / "call_center_anonymous_bank_1999" / "data_anonymous_bank_february.txt"
    )
    assert len(log.arrivals) == 60  # the PHANTOM record is left out
    first = log.arrivals[0]
    assert first.at == T0  # Monday 8 Feb 1999 08:00 → Monday 9 Feb 2026 08:00
    assert first.at.weekday() == 0
    assert (first.call_type, first.handling_seconds) == ("PS", 60.0)
    assert log.arrivals[3].handling_seconds is None  # HANG: nobody served it
    assert [a.at for a in log.arrivals] == sorted(a.at for a in log.arrivals)
    assert 60.0 in log.handling.by_type["PS"]


def test_a_missing_or_foreign_call_log_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Cannot read the call log"):
        read_call_log(tmp_path / "missing.txt")
    other = tmp_path / "other.txt"
    other.write_text("a\tb\n1\t2\n", encoding="ascii")
    with pytest.raises(DataError, match="not the call log"):
        read_call_log(other)


def test_the_shift_template_gives_the_hours_each_shift_covers(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    shifts = read_shift_template(data / "call_center_anonymous_bank_1999" / "data_anonymous_bank_shifts.csv")
    assert shifts == (frozenset(range(12)), frozenset(range(12, 24)))


def test_a_shift_running_past_midnight_is_one_period_per_night() -> None:
    night = frozenset({22, 23, 0, 1})
    assert shift_spans(night) == [(0, 2), (22, 24)]
    start = dt.datetime(2026, 2, 9, tzinfo=dt.UTC)
    periods = duty_periods(night, start=start, end=start + dt.timedelta(days=2))
    hours = [
        ((on - start).total_seconds() / 3600, (off - start).total_seconds() / 3600) for on, off in periods
    ]
    assert hours == [(0, 2), (22, 26), (46, 48)]


def test_synthetic_arrivals_follow_the_rate_and_the_seed() -> None:
    end = T0 + dt.timedelta(hours=10)
    mix = {"PS": 0.5, "NW": 0.5}
    first = synthetic_arrivals(rate_per_hour=60, start=T0, end=end, mix=mix, rng=random.Random(3))
    again = synthetic_arrivals(rate_per_hour=60, start=T0, end=end, mix=mix, rng=random.Random(3))
    assert first == again
    assert 480 < len(first) < 720  # 600 expected; a Poisson count's sd is ~25
    assert {a.call_type for a in first} == {"PS", "NW"}
    assert all(T0 <= a.at < end for a in first)
    with pytest.raises(ValueError, match="rate"):
        synthetic_arrivals(rate_per_hour=0, start=T0, end=end, mix=mix, rng=random.Random(3))


def test_the_same_seed_builds_the_same_scenario(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    options = ScenarioOptions(data_dir=data, contractors=5, start=T0, days=0.2, seed=7)
    assert build_scenario(options).to_json() == build_scenario(options).to_json()
    other = ScenarioOptions(data_dir=data, contractors=5, start=T0, days=0.2, seed=8)
    assert build_scenario(options).leads != build_scenario(other).leads


def test_a_scenario_survives_its_json_round_trip(tmp_path: Path) -> None:
    scenario = build_scenario(
        ScenarioOptions(data_dir=write_data_dir(tmp_path), contractors=4, start=T0, days=0.2, stale_backlog=3)
    )
    again = Scenario.from_json(scenario.to_json())
    assert again == scenario
    json.loads(scenario.to_json())  # plain JSON


def test_the_scenario_places_calls_by_type_and_spreads_contractors(tmp_path: Path) -> None:
    scenario = build_scenario(
        ScenarioOptions(data_dir=write_data_dir(tmp_path), contractors=6, start=T0, days=0.5, stale_backlog=2)
    )
    campaigns = {
        spec.call_type: scenario.campaigns[spec.campaign] for spec in scenario.leads if spec.lead_type == LIVE
    }
    assert campaigns["PS"] == (0, "Regular")
    assert campaigns["NW"] == (1, "Prospects")
    assert campaigns["NE"] == (2, "Stock exchange")
    assert len(scenario.customers) == len(CUSTOMERS)
    # Two shifts (the template above), three skill groups, round robin.
    assert [len(c.campaigns) for c in scenario.contractors] == [6, 2, 4, 6, 2, 4]
    morning, afternoon = scenario.contractors[0].duty, scenario.contractors[1].duty
    assert morning == ((T0, T0.replace(hour=12)),)
    assert afternoon == ((T0.replace(hour=12), T0.replace(hour=20)),)
    backlog = [spec for spec in scenario.leads if spec.lead_type == STALE]
    assert len(backlog) == 2
    assert all(spec.at == T0 and spec.last_activity < T0 for spec in backlog)


def test_synthetic_leads_need_no_lead_file(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    (data / "x_education_leads" / "Leads.csv").unlink()
    with pytest.raises(DataError, match="lead file"):
        build_scenario(ScenarioOptions(data_dir=data, contractors=2, start=T0, days=0.1))
    scenario = build_scenario(
        ScenarioOptions(data_dir=data, contractors=2, start=T0, days=0.1, synthetic_leads=True)
    )
    assert scenario.leads
    assert all(0 < spec.base < 1 for spec in scenario.leads)


def test_a_window_without_calls_is_a_data_error(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    with pytest.raises(DataError, match="no calls between"):
        build_scenario(ScenarioOptions(data_dir=data, contractors=2, start=T0 + dt.timedelta(days=3), days=1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"contractors": 0},
        {"days": 0},
        {"sample": 0},
        {"sample": 1.5},
        {"stale_backlog": -1},
        {"sla_target": 1.2},
    ],
)
def test_scenario_options_refuse_values_that_make_no_sense(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"."):
        ScenarioOptions(**{"data_dir": tmp_path, "contractors": 2, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [([], 0.5, None), ([5.0], 0.9, 5.0), ([1.0, 2.0, 3.0], 0.5, 2.0), ([0.0, 10.0], 0.9, 9.0)],
)
def test_percentiles_interpolate_between_ranks(
    values: list[float], share: float, expected: float | None
) -> None:
    assert percentile(values, share) == expected


def _figures(name: str, sla: float, conversions: float) -> dict[str, object]:
    figures = {
        "name": name,
        "sla_attainment": sla,
        "tat_p50_s": 45.0,
        "tat_p90_s": 5400.0,
        "expected_conversions": conversions,
        "conversions": 7,
        "calls": 1234,
        "stale_calls": 3,
        "never_called": 0,
        "tat_curve_s": [float(q * 60) for q in range(101)],
    }
    return {**figures, "customers": {"Acme": dict(figures)}}


def test_the_table_shows_each_policy_as_a_column_with_the_change_against_the_first() -> None:
    table = format_table([_figures("FIFO", 0.8312, 100.0), _figures("default", 0.95, 125.0)], sla_target=0.9)
    lines = table.splitlines()
    assert lines[0].split() == ["FIFO", "default"]
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[2:] if line.strip()}
    assert rows["SLA attainment"][-2:] == ["83.1%", "95.0%"]
    assert rows["TAT p50"][-4:] == ["45", "s", "45", "s"]
    assert rows["TAT p90"][-4:] == ["1.5", "h", "1.5", "h"]
    assert rows["expected conversions"][-2:] == ["100.0", "125.0"]
    assert rows["vs FIFO"][-1] == "+25.0%"
    assert rows["calls"][-2:] == ["1,234", "1,234"]
    assert "Acme:" in rows
    assert "calls to stale leads" in rows
    assert "leads never called" in rows
    assert lines[-1] == "SLA target: 90% of live leads first called within the window."


def test_the_chart_is_a_png() -> None:
    png = render_chart(
        [_figures("FIFO", 0.8, 100.0), _figures("draft", 0.9, 120.0)], sla_target=0.9, sla_minutes=30
    )
    assert png.startswith(b"\x89PNG")
    assert len(png) > 10_000


def test_the_chart_draws_policy_and_customer_names_as_they_read(monkeypatch) -> None:
    # Math text would take "$\frac$" for a broken formula (the run failed) and drop a legend
    # entry whose name starts with "_".
    drawn: list[list[str]] = []
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        for ax in figure.axes:
            legend = ax.get_legend()
            drawn.append([text.get_text() for text in legend.get_texts()] if legend else [])
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    policies = [_figures("Deals $100 or $200", 0.8, 100.0), _figures("_draft $\\frac$", 0.9, 120.0)]
    for policy in policies:  # customers' systems name customers too
        policy["customers"] = {"Promo $\\frac$ Q4": policy["customers"]["Acme"]}

    png = render_chart(policies, sla_target=0.9, sla_minutes=30)

    assert png.startswith(b"\x89PNG")
    names = ["Deals $100 or $200", "_draft $\\frac$"]
    sla, conversions, tat, counts = drawn
    assert conversions == []  # bars named on the axis, no legend
    assert sla == [*names, "target 90%"]
    assert tat == names
    assert counts == names
