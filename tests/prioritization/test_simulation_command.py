"""``manage.py simulate`` end to end: throwaway databases, one child process per policy,
the table, the JSON line, the chart, and one readable line for every bad input."""

import io
import json
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from prioritization.management.commands import simulate as simulate_command
from prioritization.simulation import comparison
from prioritization.simulation.runner import SimulationError
from prioritization.simulation.scenario import MAX_CONTRACTORS, MAX_DAYS, MIN_DAYS, Scenario
from tests.prioritization.simulation_builders import write_data_dir

pytestmark = pytest.mark.django_db

# A small run: 2 h 24 min of the test log (about 60 calls), three contractors.
SMALL = ["--start", "2026-02-09T08:00", "--days", "0.1", "--contractors", "3"]
FIGURES = {
    "name",
    "sla_attainment",
    "tat_p50_s",
    "tat_p90_s",
    "expected_conversions",
    "stale_calls",
    "never_called",
}


def leftover_databases() -> list[str]:
    """Databases the simulator made in this process and did not drop."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            [f"{comparison.DATABASE_PREFIX}_{os.getpid()}%"],
        )
        return [row[0] for row in cursor.fetchall()]


def simulate(*args: str) -> str:
    out = io.StringIO()
    call_command("simulate", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_simulate_compares_fifo_the_default_and_drafts_in_one_json_line(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path / "data")
    draft = tmp_path / "protective.json"
    draft.write_text(json.dumps({"sla_protect_minutes": 20, "source_weights": {"Reference": 2.0}}))
    chart = tmp_path / "chart.png"

    out = simulate(
        *SMALL, "--data-dir", str(data), "--policy", f"protective={draft}", "--json", "--chart", str(chart)
    )

    last = out.strip().splitlines()[-1]
    assert out.strip().splitlines() == [last]  # with --json, stdout is the JSON line only
    result = json.loads(last)
    names = [policy["name"] for policy in result["policies"]]
    assert names == ["FIFO", "default", "protective"]
    for policy in result["policies"]:
        assert policy.keys() >= FIGURES
        assert set(policy["customers"]) == {"Landing Pages Ltd", "API Partners", "Forms and Imports"}
        assert FIGURES - {"name"} <= policy["customers"]["API Partners"].keys()
        assert policy["leads"] == 60
        assert policy["calls"] > 0
        assert 0 <= policy["sla_attainment"] <= 1
    assert result["scenario"]["contractors"] == 3
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert leftover_databases() == []


def test_the_databases_are_dropped_when_a_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The children get a scenario they cannot read: each exits with an error.
    monkeypatch.setattr(Scenario, "to_json", lambda self: "{}")
    data = write_data_dir(tmp_path / "data")
    with pytest.raises(CommandError) as failure:
        simulate(*SMALL, "--data-dir", str(data))
    message = str(failure.value)
    assert message.startswith("The run of policy ")
    assert "failed" in message
    assert "\n" not in message
    assert leftover_databases() == []


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"colour": "red"}', "unknown field(s) colour"),
        ('{"sla_target": 2}', "sla_target"),
        ('{"source_weights": {"Google": 1000}}', "between 0.01 and 100"),
        ('{"reschedule_min_hours": 5, "reschedule_max_hours": 1}', "reschedule"),
        ('{"ordering": "random"}', "ordering"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_policy_file_is_one_readable_error(tmp_path: Path, content: str | None, error: str) -> None:
    path = tmp_path / "draft.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError) as failure:
        simulate("--policy", f"draft={path}")
    assert error in str(failure.value)
    assert "\n" not in str(failure.value)
    assert leftover_databases() == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--policy", "no-equals-sign"], "NAME=PATH"),
        (["--policy", "FIFO=x.json"], "taken"),
        (["--days", "0"], "days"),
        (["--contractors", "0"], "contractor"),
        (["--sample", "1.5"], "sample"),
        (["--jobs", "0"], "--jobs"),
        (["--pickup", "2"], "pick-up"),
        (["--start", "2026-06-01"], "no calls between"),
        (["--start", "9999-12-31"], "years 1900 to 2099"),
    ],
)
def test_bad_options_are_one_readable_error(tmp_path: Path, args: list[str], error: str) -> None:
    data = write_data_dir(tmp_path / "data")
    with pytest.raises(CommandError) as failure:
        simulate("--data-dir", str(data), *args)
    assert error in str(failure.value)
    assert "\n" not in str(failure.value)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--contractors", "0"], f"argument --contractors: must be between 1 and {MAX_CONTRACTORS}, got 0"),
        (
            ["--contractors", "501"],
            f"argument --contractors: must be between 1 and {MAX_CONTRACTORS}, got 501",
        ),
        (["--days", "0.01"], f"argument --days: must be between {MIN_DAYS} and {MAX_DAYS:g}, got 0.01"),
        (["--days", "28.5"], f"argument --days: must be between {MIN_DAYS} and {MAX_DAYS:g}, got 28.5"),
        (["--days", "nan"], f"argument --days: must be between {MIN_DAYS} and {MAX_DAYS:g}, got nan"),
        (["--rate", "0"], "argument --rate: must be greater than 0 and at most 1,000, got 0"),
        (["--rate", "1001"], "argument --rate: must be greater than 0 and at most 1,000, got 1001"),
        (["--stale-backlog", "-1"], "argument --stale-backlog: must be between 0 and 100,000, got -1"),
        (
            ["--stale-backlog", "100001"],
            "argument --stale-backlog: must be between 0 and 100,000, got 100001",
        ),
        (["--jobs", "0"], "argument --jobs: must be between 1 and 16, got 0"),
        (["--jobs", "17"], "argument --jobs: must be between 1 and 16, got 17"),
    ],
)
def test_sizes_out_of_bounds_are_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], error: str
) -> None:
    def refuse(**kwargs: object) -> None:
        raise AssertionError("the simulation started")

    monkeypatch.setattr(simulate_command, "compare_policies", refuse)
    with pytest.raises(CommandError) as failure:
        simulate("--data-dir", str(tmp_path / "nowhere"), *args)
    assert str(failure.value) == f"Error: {error}"


def test_the_command_takes_the_admin_simulator_s_largest_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: dict[str, object] = {}

    def record(**kwargs: object) -> None:
        taken.update(kwargs)
        raise SimulationError("recorded")

    monkeypatch.setattr(simulate_command, "compare_policies", record)
    with pytest.raises(CommandError, match="recorded"):
        simulate(
            "--data-dir",
            str(tmp_path),
            "--start",
            "2026-02-02",
            "--contractors",
            str(MAX_CONTRACTORS),
            "--days",
            str(MAX_DAYS),
            "--jobs",
            str(simulate_command.MAX_JOBS),
        )
    options = taken["options"]
    assert options.contractors == MAX_CONTRACTORS  # type: ignore[attr-defined]
    assert options.days == MAX_DAYS  # type: ignore[attr-defined]
    assert taken["jobs"] == simulate_command.MAX_JOBS


def test_a_missing_data_directory_is_one_readable_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Cannot read the call log"):
        simulate("--data-dir", str(tmp_path / "nowhere"))


def test_the_run_of_one_policy_refuses_a_database_that_is_not_a_throwaway_one(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Refusing to simulate in database"):
        simulate(
            "--child-scenario",
            str(tmp_path / "s.json"),
            "--child-policy",
            str(tmp_path / "p.json"),
            "--child-output",
            str(tmp_path / "o.json"),
        )
