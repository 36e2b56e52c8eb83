"""Management commands and settings met with bad input: one readable line and a non-zero
exit, nothing lost."""

import io
import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection

from config.env import env_bool, env_str
from leads.management.commands import bench as bench_command
from leads.management.commands import run as run_command
from leads.management.termination import sigterm_as_ctrl_c
from leads.models import Lead
from prioritization.management.commands import evaluate_model as evaluate_command
from prioritization.management.commands import simulate as simulate_command
from tests.conftest import manage_py
from tests.factories import CampaignFactory
from tests.prioritization.simulation_builders import write_data_dir

BASE_DIR = Path(settings.BASE_DIR)


def _import(*args: object) -> str:
    out = io.StringIO()
    call_command("import_leads", *[str(a) for a in args], "--no-progress", stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_an_error_report_path_that_is_a_directory_stops_the_import_before_any_row(tmp_path: Path) -> None:
    campaign = CampaignFactory()
    path = tmp_path / "leads.csv"
    path.write_text(
        "external_id,customer_id,campaign_id,lead_type\n"
        f"A,{campaign.customer_id},{campaign.pk},live\nB,{campaign.customer_id},{campaign.pk},warm\n"
    )
    folder = tmp_path / "reports"
    folder.mkdir()

    with pytest.raises(CommandError, match="is a directory"):
        _import(path, "--errors", folder)

    assert not Lead.objects.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv", "reports"]


@pytest.mark.django_db
def test_an_error_report_that_cannot_be_moved_in_place_is_kept_and_the_exit_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = CampaignFactory()
    path = tmp_path / "leads.csv"
    path.write_text(
        "external_id,customer_id,campaign_id,lead_type\n"
        f"A,{campaign.customer_id},{campaign.pk},live\nB,{campaign.customer_id},{campaign.pk},warm\n"
    )

    def refuse(source: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("leads.management.commands.import_leads.shutil.move", refuse)
    out = io.StringIO()
    with pytest.raises(CommandError, match="Cannot move the error report") as failure:
        call_command("import_leads", str(path), "--no-progress", stdout=out, stderr=io.StringIO())

    assert "1 created, 0 updated, 1 rejected" in out.getvalue()
    kept = Path(str(failure.value).rsplit(" it is in ", 1)[1].rstrip("."))
    assert kept.read_text().startswith("row,column,reason")
    assert Lead.objects.filter(external_id="A").exists()


def test_a_directory_given_as_the_file_to_import_is_named_so(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="is a directory"):
        _import(tmp_path)


def _start(**variables: str) -> subprocess.CompletedProcess[str]:
    """``manage.py check`` in a process of its own, with these variables over a good set."""
    return manage_py("check", **variables)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be a boolean (true/false/1/0), got 'maybe'"),
        ({"DATABASE_CONN_MAX_AGE": "1 minute"}, "DATABASE_CONN_MAX_AGE must be an integer"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL must be postgres://"),
        ({"DATABASE_URL": "postgres://u:hunter2@h:99999/db"}, "DATABASE_URL is not a valid URL"),
        ({"DATABASE_URL": "localhost:5432/leadrank"}, "DATABASE_URL is not a valid URL"),
        ({"DATABASE_URL": "postgres://u@h:5432"}, "DATABASE_URL names no database"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        # Names logging knows but the message does not offer (NOTSET logs everything).
        ({"LOG_LEVEL": "notset"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"LOG_LEVEL": "WARN"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"LEADRANK_METRICS_ALLOWED_IPS": "intranet"}, "LEADRANK_METRICS_ALLOWED_IPS: 'intranet'"),
        ({"SECRET_KEY": ""}, "SECRET_KEY must be set"),
    ],
)
def test_a_bad_variable_stops_the_start_with_one_line_naming_it(
    variables: dict[str, str], message: str
) -> None:
    result = _start(**variables)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Configuration error: ")
    assert message in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("variable", ["LEADRANK_VAR_DIR", "PROMETHEUS_MULTIPROC_DIR"])
def test_a_folder_variable_naming_a_file_stops_the_start_with_one_line(tmp_path: Path, variable: str) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")

    # The broker unset: its folders are made under LEADRANK_VAR_DIR.
    result = _start(**{variable: str(in_the_way), "CELERY_BROKER_URL": ""})

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Configuration error: {variable}: cannot make the folder {in_the_way}"
        + ("/broker/out (Not a directory)" if variable == "LEADRANK_VAR_DIR" else " (File exists)")
    ]


def test_a_lower_case_log_level_is_read() -> None:
    result = _start(LOG_LEVEL="warning")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Stored as seconds in django-celery-beat's 32-bit interval column.
        ("LEADRANK_TRAINING_EVERY_HOURS", "604800"),
        # The sweep's cutoff, now minus this, must be a representable date.
        ("LEADRANK_IMPORT_STALL_MINUTES", "2000000000"),
        # A socket's timeout has a ceiling.
        ("LEADRANK_ALERT_WEBHOOK_TIMEOUT_SECONDS", "10000000000"),
    ],
)
def test_a_number_too_large_to_work_with_is_refused_at_the_start(name: str, value: str) -> None:
    result = _start(**{name: value})

    assert result.returncode == 1
    assert f"{name} must be at most" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["MEDIA_ROOT", "LEADRANK_VAR_DIR", "LEADRANK_DATA_DIR", "LOG_LEVEL"])
def test_a_variable_set_empty_means_its_default(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "")
    assert env_str(name, "default") == "default"
    monkeypatch.setenv(name, "  ")
    assert env_str(name, "default") == "default"


@pytest.mark.parametrize(("raw", "expected"), [("", True), ("yes", True), ("0", False), ("False", False)])
def test_a_boolean_variable_reads_the_usual_spellings_and_empty_as_its_default(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("LEADRANK_TEST_FLAG", raw)
    assert env_bool("LEADRANK_TEST_FLAG", default=True) is expected


def test_a_bad_variable_is_an_improperly_configured_error_for_code_that_catches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADRANK_TEST_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="LEADRANK_TEST_FLAG must be a boolean"):
        env_bool("LEADRANK_TEST_FLAG")


@pytest.fixture
def run_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run`` set up nothing: it would migrate, load demo data and start the Procfile."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("run went on past its arguments")

    monkeypatch.setattr(run_command, "call_command", refuse)


@pytest.mark.parametrize(
    ("variable", "args"), [("abc", []), ("", ["--port", "0"]), ("8000", ["--port", "70000"])]
)
@pytest.mark.usefixtures("run_does_nothing")
def test_run_refuses_a_bad_port_with_one_line_before_setting_anything_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, args: list[str]
) -> None:
    monkeypatch.setenv("PORT", variable)
    with pytest.raises(CommandError, match=r"PORT must be an integer|port must be between 1 and 65535"):
        call_command("run", *args)


@pytest.mark.django_db
@pytest.mark.parametrize("variable", ["DJANGO_SUPERUSER_USERNAME", "DJANGO_SUPERUSER_PASSWORD"])
def test_run_takes_an_admin_variable_set_empty_as_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    monkeypatch.setenv(variable, "")

    username, password = run_command.Command()._ensure_admin()

    assert username == "admin"
    assert password
    assert password == (tmp_path / "admin_password").read_text()
    assert get_user_model().objects.get(username="admin").check_password(password)


@pytest.mark.django_db
def test_run_makes_an_existing_user_of_the_admin_name_the_admin_it_prints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Its password was reset, and the credentials printed could not sign in to the admin.
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "bob")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-pass")
    get_user_model().objects.create_user(username="bob", password="other", is_active=False)

    run_command.Command()._ensure_admin()

    bob = get_user_model().objects.get(username="bob")
    assert (bob.is_active, bob.is_staff, bob.is_superuser) == (True, True, True)
    assert bob.check_password("s3cret-pass")


@pytest.mark.django_db
def test_create_api_key_refuses_a_name_that_is_no_utf8_with_one_line() -> None:
    latin1_cafe = b"caf\xe9".decode("utf-8", "surrogateescape")  # as Python reads such an argv

    with pytest.raises(CommandError, match="NAME is not UTF-8 text"):
        call_command("create_api_key", latin1_cafe, "--scope", "admin")


@pytest.fixture
def benchmarks_do_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmarks themselves take minutes: a test that reaches one fails instead."""

    def refuse(**kwargs: object) -> None:
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(bench_command, "run_ingest_benchmark", refuse)
    monkeypatch.setattr(bench_command, "run_claim_benchmark", refuse)


@pytest.mark.usefixtures("benchmarks_do_nothing")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--rows", "0"], "argument --rows: must be at least 1, got 0"),
        (
            ["ingest", "--batch", "0"],
            "argument --batch: must be between 1 and 10,000 (LEADRANK_API_BATCH_MAX), got 0",
        ),
        (["ingest", "--batch", "10001"], "argument --batch: must be between 1 and 10,000"),
        (["ingest", "--clients", "-2"], "argument --clients: must be at least 1, got -2"),
        (["ingest", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
        (["claim", "--leads", "-1"], "argument --leads: must be at least 1, got -1"),
        (["claim", "--seconds", "0"], "argument --seconds: must be at least 1, got 0"),
        (["claim", "--decay-claims", "0"], "argument --decay-claims: must be at least 1, got 0"),
        (["claim", "--small-leads", "0"], "argument --small-leads: must be at least 1, got 0"),
        (["claim", "--leads", "many"], "argument --leads: invalid int value: 'many'"),
    ],
)
def test_bench_refuses_counts_it_cannot_run_with_before_building_anything(
    args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)) as refusal:
        call_command("bench", *args, stdout=io.StringIO())
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["bench", "ingest", "--batch", "0"],
            "manage.py bench ingest: error: argument --batch: must be between 1",
        ),
        (
            ["bench_sla", "--days", "367"],
            "manage.py bench_sla: error: argument --days: must be between 1 and 366, got 367",
        ),
        (
            ["bench_metrics", "--scrapes", "0"],
            "manage.py bench_metrics: error: argument --scrapes: must be at least 1, got 0",
        ),
        (
            ["simulate", "--jobs", "0"],
            "manage.py simulate: error: argument --jobs: must be between 1 and 16, got 0",
        ),
        (
            ["simulate", "--contractors", "501"],
            "manage.py simulate: error: argument --contractors: must be between 1 and 500",
        ),
        (
            ["evaluate_model", "--bench-training", "999"],
            "argument --bench-training: must be at least 1,000, got 999",
        ),
    ],
)
def test_a_size_out_of_bounds_on_the_command_line_is_one_line_and_exit_status_2(
    args: list[str], line: str
) -> None:
    result = manage_py(*args)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert line in result.stderr
    assert result.stdout == ""


def test_bench_claim_without_wrk_is_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_wrk(**kwargs: object) -> None:
        raise RuntimeError("wrk is not installed: the claim benchmark drives the API with it.")

    monkeypatch.setattr(bench_command, "run_claim_benchmark", no_wrk)
    with pytest.raises(CommandError, match="wrk is not installed"):
        call_command("bench", "claim", stdout=io.StringIO())


# A small simulation: 2 h 24 min of the test call log, three contractors.
SMALL_SIMULATION = ["--start", "2026-02-09T08:00", "--days", "0.1", "--contractors", "3"]


@pytest.mark.django_db
def test_simulate_refuses_a_chart_path_it_cannot_write_before_simulating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_data_dir(tmp_path / "data")

    def refuse(**kwargs: object) -> None:
        raise AssertionError("the simulation started")

    monkeypatch.setattr(simulate_command, "compare_policies", refuse)
    with pytest.raises(CommandError, match="is a directory"):
        call_command("simulate", "--data-dir", str(data), "--chart", str(tmp_path), stdout=io.StringIO())
    with pytest.raises(CommandError, match="does not exist"):
        call_command(
            "simulate",
            "--data-dir",
            str(data),
            "--chart",
            str(tmp_path / "no" / "c.png"),
            stdout=io.StringIO(),
        )


@pytest.mark.django_db
def test_simulate_prints_its_figures_when_the_chart_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_data_dir(tmp_path / "data")

    def disk_full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"Cannot write the chart .*No space left on device"):
        call_command(
            "simulate",
            *SMALL_SIMULATION,
            "--data-dir",
            str(data),
            "--json",
            "--chart",
            str(tmp_path / "chart.png"),
            stdout=out,
            stderr=io.StringIO(),
        )

    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert [policy["name"] for policy in result["policies"]] == ["FIFO", "default"]


@pytest.mark.django_db(transaction=True)
def test_simulate_says_in_one_line_that_its_throwaway_database_could_not_be_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The migrate subprocess failed (the server went away, the database dropped meanwhile):
    # a CalledProcessError traceback, after the child's own.
    data = write_data_dir(tmp_path / "data")

    def migrate_fails(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            args[0], 1, "", "Traceback (most recent call last):\n  …\nOperationalError: gone"
        )

    monkeypatch.setattr("config.throwaway_database.subprocess.run", migrate_fails)
    with pytest.raises(CommandError) as failed:
        call_command(
            "simulate", *SMALL_SIMULATION, "--data-dir", str(data), stdout=io.StringIO(), stderr=io.StringIO()
        )

    assert re.fullmatch(
        r"PostgreSQL: migrating the throwaway database leadrank_sim_\d+_[0-9a-f]{6} failed: "
        r"OperationalError: gone",
        str(failed.value),
    )
    with connection.cursor() as cursor:  # and it was dropped
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", ["leadrank_sim_%"])
        assert cursor.fetchone() == (0,)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "source",
    [["--file", "leads.csv", "--target", "Converted", "--features", "City"], ["--bench-training", "1000"]],
)
def test_evaluate_model_refuses_a_window_it_would_ignore(
    source: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the evaluation started")

    monkeypatch.setattr(evaluate_command, "evaluate_file", refuse)
    monkeypatch.setattr(evaluate_command.Command, "_bench", refuse)
    with pytest.raises(CommandError, match="--window-days applies to --customer-id only"):
        call_command("evaluate_model", *source, "--window-days", "30", stdout=io.StringIO())


def test_sigterm_during_a_long_command_is_a_ctrl_c_and_the_handler_is_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt), sigterm_as_ctrl_c():
        signal.raise_signal(signal.SIGTERM)

    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.django_db
def test_an_import_stopped_by_sigterm_leaves_no_half_written_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("external_id,lead_type\nA,live\n")

    def stopped_midway(*args: Any, errors_out: Any, **kwargs: Any) -> None:
        errors_out.write("row,column,reason\n")
        signal.raise_signal(signal.SIGTERM)  # kill, or a container stopping

    monkeypatch.setattr("leads.management.commands.import_leads.import_leads", stopped_midway)

    with pytest.raises(KeyboardInterrupt):
        call_command("import_leads", str(path), "--no-progress")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv"]
