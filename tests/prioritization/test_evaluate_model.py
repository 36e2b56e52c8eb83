"""`manage.py evaluate_model` and `train_models`: files, customers, JSON, readable errors."""

import datetime as dt
import io
import json
import random
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from openpyxl import Workbook

from leads.models import CloseReason
from prioritization.models import ModelVersion, TrainingTrigger
from prioritization.training import TRAINING_LOCK_KEY
from tests.conftest import manage_py
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import T0
from tests.prioritization.test_training import add_outcomes

HEADER = ["Lead Number", "Source", "City", "Visits", "Origin", "Converted"]


def history_rows(count: int = 400, seed: int = 2) -> list[list[object]]:
    """Past leads in file order newest first (like X Education's): Referral converts."""
    rng = random.Random(seed)
    rows = []
    for number in range(count, 0, -1):
        source = rng.choice(["Referral", "Google", "Olark Chat"])
        rate = {"Referral": 0.7, "Google": 0.2, "Olark Chat": 0.4}[source]
        outcome = rng.random() < rate
        rows.append(
            [
                number,
                source,
                rng.choice(["Pune", "Mumbai", "Select"]),
                rng.randint(0, 40),
                rng.choice(["API", "Landing Page"]),
                rng.choice(["Yes", "1", "TRUE"]) if outcome else rng.choice(["no", "0", "False"]),
            ]
        )
    return rows


def write_csv(
    path: Path, rows: list[list[object]], *, delimiter: str = ",", header: list[str] = HEADER
) -> Path:
    lines = [delimiter.join(header)] + [delimiter.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(*args: object) -> list[str]:
    out = io.StringIO()
    call_command("evaluate_model", *[str(a) for a in args], stdout=out)
    return out.getvalue().splitlines()


def test_a_file_is_evaluated_and_the_last_line_is_the_json_comparison(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "leads.csv", history_rows())

    lines = run(
        "--file", path, "--target", "Converted", "--features", "Source,City,Visits",
        "--order-by", "Lead Number", "--customer-column", "Origin", "--json",
    )  # fmt: skip

    document = json.loads(lines[-1])
    assert (document["rows"], document["holdout_rows"], document["train_rows"]) == (400, 80, 320)
    assert [m["name"] for m in document["models"]] == ["learned", "gradient_boosting", "pooled", "manual"]
    for model in document["models"]:
        assert {"name", "auc", "log_loss", "lift_top10"} <= set(model)
    learned = document["models"][0]
    assert 0.6 < learned["auc"] <= 1
    assert learned["log_loss"] > 0
    assert document["models"][3]["auc"] == 0.5
    assert document["models"][3]["log_loss"] is None
    assert document["binned"] == ["Visits"]
    assert document["customers"] == 2
    text = "\n".join(lines[:-1])
    assert "tested on the newest 80 ('Lead Number' order)" in text
    assert "reliability of the learned model" in text
    assert "goal: learned AUC within 0.01 of gradient boosting" in text


def test_the_holdout_is_the_end_of_the_order_by_order_not_of_the_file(tmp_path: Path) -> None:
    # The newest 20% by Lead Number are the file's first rows; all of them convert.
    rows = history_rows(100)
    for row in rows[:20]:
        row[1], row[5] = "Unheard of", "1"
    path = write_csv(tmp_path / "leads.csv", rows)

    ordered = json.loads(
        run(
            "--file",
            path,
            "--target",
            "Converted",
            "--features",
            "Source",
            "--order-by",
            "Lead Number",
            "--json",
        )[-1]
    )
    in_file_order = json.loads(
        run("--file", path, "--target", "Converted", "--features", "Source", "--json")[-1]
    )

    assert ordered["holdout_conversion"] == 1.0
    assert in_file_order["holdout_conversion"] < 1.0


def test_semicolon_separated_csv_and_xlsx_files_are_read(tmp_path: Path) -> None:
    rows = history_rows(200)
    csv_path = write_csv(tmp_path / "leads.txt", rows, delimiter=";")
    book = Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for row in rows:
        sheet.append(
            [*row[:5], {"Yes": True, "TRUE": True, "1": 1, "no": False, "0": 0, "False": False}[row[5]]]
        )
    xlsx_path = tmp_path / "leads.xlsx"
    book.save(xlsx_path)

    results = [
        json.loads(run("--file", p, "--target", "Converted", "--features", "Source,City", "--json")[-1])
        for p in (csv_path, xlsx_path)
    ]

    for read_from_csv, read_from_xlsx in zip(results[0]["models"], results[1]["models"], strict=True):
        assert {**read_from_csv, "fit_seconds": 0} == {**read_from_xlsx, "fit_seconds": 0}


def test_a_weights_file_nested_too_deeply_is_one_readable_line(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("Converted,Source\n1,Google\n0,Referral\n")
    weights = tmp_path / "weights.json"
    weights.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CommandError, match="not a readable JSON file"):
        run("--file", path, "--target", "Converted", "--features", "Source", "--weights", weights)


def test_manual_weights_from_a_file_are_compared_too(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "leads.csv", history_rows())
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"Source": {"Referral": 3, "Google": 0.5}}))

    document = json.loads(
        run("--file", path, "--target", "Converted", "--features", "Source", "--weights", weights, "--json")[
            -1
        ]
    )

    manual = document["models"][3]
    assert manual["auc"] > 0.6
    assert manual["auc"] == pytest.approx(document["models"][0]["auc"], abs=0.05)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--target", "Converted", "--features", "Nope"], "The file has no column 'Nope' (--features #1)"),
        (["--target", "Outcome", "--features", "Source"], "The file has no column 'Outcome' (--target)"),
        (["--target", "Converted", "--features", "Converted"], "cannot also be a feature"),
        (["--target", "Converted", "--features", "Source", "--order-by", "When"], "no column 'When'"),
        (["--target", "Source", "--features", "City"], "Row 2: the target 'Source' is"),
        (["--features", "Source"], "--file needs --target COLUMN and --features A,B,C."),
        (["--target", "Converted", "--features", "Source", "--holdout-share", "1.5"], "--holdout-share"),
    ],
)
def test_bad_arguments_and_missing_columns_are_one_readable_error(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    path = write_csv(tmp_path / "leads.csv", history_rows(50))
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run("--file", path, *arguments)


def test_files_that_cannot_be_evaluated_say_why(tmp_path: Path) -> None:
    binary = tmp_path / "leads.csv"
    binary.write_bytes(b"\x00\x01 not a spreadsheet")
    with pytest.raises(CommandError, match=r"leads\.csv: The file is not a spreadsheet"):
        run("--file", binary, "--target", "Converted", "--features", "Source")
    with pytest.raises(CommandError, match="No such file"):
        run("--file", tmp_path / "missing.csv", "--target", "Converted", "--features", "Source")
    few = write_csv(tmp_path / "few.csv", history_rows(5))
    with pytest.raises(CommandError, match="has 5 data rows; at least 10"):
        run("--file", few, "--target", "Converted", "--features", "Source")
    rows = history_rows(30)
    for row in rows:
        row[5] = "0"
    one_class = write_csv(tmp_path / "none.csv", rows)
    with pytest.raises(CommandError, match="only one outcome"):
        run("--file", one_class, "--target", "Converted", "--features", "Source")
    gaps = history_rows(30)
    gaps[3][0] = ""
    with pytest.raises(CommandError, match="Row 5: the --order-by column 'Lead Number' is empty"):
        run("--file", write_csv(tmp_path / "gaps.csv", gaps), "--target", "Converted", "--features", "Source",
            "--order-by", "Lead Number")  # fmt: skip


def test_file_options_do_not_apply_to_a_customer(db: None) -> None:
    with pytest.raises(CommandError, match="--target applies to --file only"):
        run("--customer-id", "1", "--target", "Converted")


def test_the_command_line_exit_is_non_zero_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    for arguments, expected in (
        (
            ["--file", str(tmp_path / "missing.csv"), "--target", "x", "--features", "a"],
            "CommandError: ",
        ),
        ([], "error: one of the arguments --customer-id --file --bench-training is required"),
        (["--customer-id", "x"], "error: argument --customer-id: invalid int value: 'x'"),
    ):
        result = manage_py("evaluate_model", *arguments)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert expected in result.stderr


# --- From the database ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_customer_is_evaluated_from_its_outcomes_in_the_database(time_machine) -> None:
    time_machine.move_to(T0, tick=False)
    customer = CustomerFactory(name="Acme")
    campaign = CampaignFactory(customer=customer)
    add_outcomes(
        campaign, source="Referral", converted=120, not_converted=80, start=T0 - 30 * dt.timedelta(days=1)
    )
    add_outcomes(
        campaign, source="Google", converted=20, not_converted=180, start=T0 - 29 * dt.timedelta(days=1)
    )
    add_outcomes(
        campaign, source="Referral", converted=30, not_converted=20, start=T0 - 5 * dt.timedelta(days=1)
    )
    add_outcomes(
        campaign, source="Google", converted=5, not_converted=45, start=T0 - 4 * dt.timedelta(days=1),
        no=CloseReason.PAST_NOT_CONVERTED,
    )  # fmt: skip

    lines = run("--customer-id", customer.pk, "--json")

    document = json.loads(lines[-1])
    assert (document["rows"], document["holdout_rows"]) == (500, 100)
    assert document["customer_id"] == customer.pk
    assert [m["name"] for m in document["models"]] == ["learned", "gradient_boosting", "pooled", "manual"]
    assert lines[0].startswith(f"customer {customer.pk} (Acme): 500 outcomes of 500 in the window")
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_a_customer_without_outcomes_is_a_readable_error(customer) -> None:
    with pytest.raises(CommandError, match="has no outcomes"):
        run("--customer-id", customer.pk)


@pytest.mark.django_db
def test_train_models_trains_now_from_the_command_line(time_machine) -> None:
    time_machine.move_to(T0, tick=False)
    campaign = CampaignFactory()
    add_outcomes(
        campaign, source="Referral", converted=60, not_converted=40, start=T0 - 3 * dt.timedelta(days=1)
    )
    add_outcomes(
        campaign, source="Google", converted=10, not_converted=90, start=T0 - 2 * dt.timedelta(days=1)
    )
    out = io.StringIO()

    call_command("train_models", "--json", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("2 model versions trained on 200 outcomes of 1 customers")
    assert json.loads(lines[-1])["outcomes"] == 200
    assert set(ModelVersion.objects.values_list("trigger", flat=True)) == {TrainingTrigger.COMMAND}


@pytest.mark.django_db
def test_train_models_while_a_run_is_in_progress_says_it_skipped_in_one_line() -> None:
    out = io.StringIO()
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [TRAINING_LOCK_KEY])  # beat's run, say

        call_command("train_models", "--json", stdout=out)

    first, last = out.getvalue().splitlines()
    assert first == "Skipped: a training run is already in progress."
    assert json.loads(last)["skipped"] is True
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_train_models_without_outcomes_exits_with_the_reason() -> None:
    with pytest.raises(CommandError, match="No model trained: There are no rows to learn from"):
        call_command("train_models", stdout=io.StringIO())


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("train_models", []),
        ("evaluate_model", ["--customer-id", "1"]),
    ],
)
@pytest.mark.parametrize("days", ["0", "-3", "100000000"])
def test_a_window_outside_a_century_is_one_readable_line(command: str, args: list[str], days: str) -> None:
    # 100,000,000 days back is before the year 1: Python's dates would overflow.
    with pytest.raises(CommandError, match=rf"--window-days must be between 1 and 36,500, got {days}\."):
        call_command(command, *args, "--window-days", days, stdout=io.StringIO())


def test_the_training_benchmark_prints_its_timings_and_a_last_json_line() -> None:
    from prioritization.model_bench import run_training_benchmark

    lines: list[str] = []
    result = run_training_benchmark(outcomes=3000, write=lines.append)

    assert result["outcomes"] == 3000
    assert result["model_versions"] == 21  # the pooled model and 20 customers'
    assert set(result["steps"]) >= {"gather", "evaluate", "fit", "store", "total"}
    assert lines[0].startswith("3000 synthetic outcomes of 20 customers")
    assert lines[1].startswith("training run (process start included): ")


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("klingon", "--encoding 'klingon' is not a known character set of text files"),
        ("base64", "--encoding 'base64' is not a known character set of text files"),
        (
            "utf-16",
            r"leads\.csv: The file is not valid utf-16 text \(UTF-16 stream does not start with BOM\)",
        ),
    ],
)
def test_an_encoding_the_file_is_not_written_in_is_one_readable_error(
    tmp_path: Path, encoding: str, message: str
) -> None:
    path = write_csv(tmp_path / "leads.csv", history_rows(50))
    with pytest.raises(CommandError, match=message):
        run("--file", path, "--target", "Converted", "--features", "Source", "--encoding", encoding)
