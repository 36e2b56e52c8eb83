"""The SLA benchmark runs end to end on a small world and reports its figures."""

import io
import json

import pytest
from django.core.management import CommandError, call_command


@pytest.mark.django_db
def test_the_sla_benchmark_prints_its_figures_as_a_last_json_line() -> None:
    out = io.StringIO()
    call_command("bench_sla", "--leads", "3000", "--days", "5", stdout=out)
    lines = out.getvalue().strip().splitlines()
    figures = json.loads(lines[-1])

    assert figures["leads"] == 3000
    assert sum(figures["states"].values()) == 3000
    for name in ("today_all_ms", "range_all_rolled_ms", "rollup_steady_run_ms", "dashboard_ms"):
        assert figures[name] > 0
    # Leads of the last 5 × 24 hours fall on 6 UTC days; today is never rolled up, nor
    # yesterday in the first half hour after midnight.
    assert 4 <= figures["rollup_first_run_days"] <= 5
    assert "lead_customer_created" in figures["plans"]["day_counts_today"]["indexes"]
    assert any(line.startswith("plan queue:") for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--leads", "0"], "Error: argument --leads: must be at least 1, got 0"),
        (["--days", "0"], "Error: argument --days: must be between 1 and 366, got 0"),
        (["--days", "367"], "Error: argument --days: must be between 1 and 366, got 367"),
    ],
)
def test_the_sla_benchmark_refuses_nonsense_sizes(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as refusal:
        call_command("bench_sla", *args)
    assert str(refusal.value) == message
