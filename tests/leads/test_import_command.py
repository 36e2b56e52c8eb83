import csv
import datetime as dt
import errno
import io
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from leads import services
from leads.importers import ImportFileError, LeadMapping
from leads.models import Lead
from leads.services import import_leads
from tests.conftest import manage_py
from tests.factories import CampaignFactory, CustomerFactory

HEADER = "external_id,customer_id,campaign_id,lead_type,city,created_at\n"


def _csv(tmp_path: Path, body: str, header: str = HEADER, name: str = "leads.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def _run(*args: object) -> str:
    out = io.StringIO()
    call_command("import_leads", *[str(a) for a in args], "--no-progress", stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_cli_imports_good_rows_and_reports_bad_ones_with_row_and_column(tmp_path, customer, campaign):
    other = CampaignFactory()
    path = _csv(
        tmp_path,
        f"A,{customer.pk},{campaign.pk},live,Pune,2026-11-24T08:00:00Z\n"
        f"B,{customer.pk},{campaign.pk},warm,Pune,\n"
        f"C,{customer.pk},{other.pk},stale,,\n"
        f"D,{customer.pk},{campaign.pk},stale,,not-a-date\n",
    )
    errors = tmp_path / "errors.csv"
    output = _run(path, "--errors", errors)

    assert "1 created, 0 updated, 3 rejected" in output
    assert list(Lead.objects.values_list("external_id", flat=True)) == ["A"]
    rows = list(csv.reader(errors.open()))
    assert rows[0] == ["row", "column", "reason"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("3", "lead_type"), ("4", "campaign_id"), ("5", "created_at")]
    assert "belongs to customer" in rows[2][2]


@pytest.mark.django_db
def test_a_row_whose_last_activity_lies_ahead_of_the_import_is_rejected(tmp_path, customer, campaign):
    soon = (timezone.now() + dt.timedelta(minutes=5)).isoformat()
    path = _csv(
        tmp_path,
        f"A,{customer.pk},{campaign.pk},stale,{soon}\nB,{customer.pk},{campaign.pk},stale,2099-01-01T00:00:00Z\n",
        header="external_id,customer_id,campaign_id,lead_type,last_activity\n",
    )
    errors = tmp_path / "errors.csv"

    output = _run(path, "--errors", errors)

    assert "1 created, 0 updated, 1 rejected" in output
    rows = list(csv.reader(errors.open()))
    assert rows[1][:2] == ["3", "last_activity"]
    assert "is in the future: last_activity is a past moment" in rows[1][2]


@pytest.mark.django_db
def test_the_command_opens_and_checks_the_file_once(tmp_path, customer, campaign, monkeypatch):
    # Opening decodes every byte of a CSV (and loads a whole workbook): once is enough.
    path = _csv(tmp_path, f"A,{customer.pk},{campaign.pk},live,,\nB,{customer.pk},{campaign.pk},live,,\n")
    opened = []
    real_open = services.open_import

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(services, "open_import", counting_open)

    assert "2 created" in _run(path)
    assert opened == [path]


@pytest.mark.django_db
def test_importing_the_same_file_twice_updates_instead_of_duplicating(tmp_path, customer, campaign):
    path = _csv(
        tmp_path, f"A,{customer.pk},{campaign.pk},live,Pune,\nB,{customer.pk},{campaign.pk},stale,Goa,\n"
    )
    assert "2 created, 0 updated" in _run(path)
    assert "0 created, 2 updated" in _run(path)
    assert Lead.objects.count() == 2


@pytest.mark.django_db
def test_a_mapping_renames_columns_sets_constants_and_names_empty_values(tmp_path, customer, campaign):
    path = _csv(
        tmp_path,
        "p-1,Google,Select,Email Opened\np-2,Select,Mumbai,SMS Sent\n",
        header="Prospect ID,Lead Source,City,Last Activity\n",
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "columns": {
                    "external_id": "Prospect ID",
                    "source": "Lead Source",
                    "city": "City",
                    "stage": "Last Activity",
                },
                "constants": {"lead_type": "stale"},
                "empty_values": ["Select"],
            }
        )
    )
    _run(path, "--mapping", mapping, "--customer-id", customer.pk, "--campaign-id", campaign.pk)

    leads = {lead.external_id: lead for lead in Lead.objects.all()}
    assert (leads["p-1"].source, leads["p-1"].city, leads["p-1"].stage) == ("Google", "", "Email Opened")
    assert (leads["p-2"].source, leads["p-2"].city, leads["p-2"].lead_type) == ("", "Mumbai", "stale")
    assert leads["p-1"].last_activity is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file is empty"),
        (b"external_id,customer_id,campaign_id,lead_type\n", "no data rows"),
        (b"name,phone\nAnn,123\n", "Missing required columns"),
        (
            "external_id,customer_id,campaign_id,lead_type,city\nA,1,1,live,K\xf6ln\n".encode("latin-1"),
            "not valid utf-8",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not a spreadsheet"),
    ],
)
def test_a_file_that_cannot_be_processed_stops_with_one_readable_line_and_writes_nothing(
    tmp_path, customer, content, message
):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        _run(path, "--customer-id", customer.pk)
    assert Lead.objects.count() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]  # no error report left behind


@pytest.mark.django_db
def test_a_customer_or_campaign_given_for_every_row_is_checked_once_before_reading(
    tmp_path, customer, campaign
):
    other = CampaignFactory()
    path = _csv(tmp_path, "A,live\nB,live\n", header="external_id,lead_type\n")
    wrong_customer = (
        f"--campaign-id {other.pk} belongs to customer {other.customer_id}, not to customer {customer.pk}."
    )
    for args, message in [
        (["--customer-id", 999_999], "--customer-id 999999: there is no such customer."),
        (["--customer-id", 2**63], f"--customer-id {2**63}: there is no such customer."),
        (["--campaign-id", 0], "--campaign-id 0: there is no such campaign."),
        (["--customer-id", customer.pk, "--campaign-id", other.pk], wrong_customer),
    ]:
        with pytest.raises(CommandError) as refused:
            _run(path, *args)
        assert str(refused.value) == message
    assert Lead.objects.count() == 0
    assert _run(path, "--customer-id", customer.pk, "--campaign-id", campaign.pk).count("2 created") == 1


@pytest.mark.django_db
def test_a_customer_or_campaign_a_mapping_constant_gives_every_row_is_checked_once_too(
    tmp_path, customer, campaign
):
    other = CampaignFactory()
    path = _csv(tmp_path, "A,live\nB,live\n", header="external_id,lead_type\n")

    def run_with(constants: dict[str, object], *args: object) -> str:
        mapping = tmp_path / "mapping.json"
        mapping.write_text(json.dumps({"constants": constants}))
        return _run(path, "--mapping", mapping, *args)

    for constants, args, message in [
        (
            {"campaign_id": 999_999},
            ["--customer-id", customer.pk],
            "campaign_id 999999: there is no such campaign.",
        ),
        (
            {"customer_id": customer.pk, "campaign_id": other.pk},
            [],
            f"campaign_id {other.pk} belongs to customer {other.customer_id}, not to customer {customer.pk}.",
        ),
        # The constant wins over the option, as for every row.
        (
            {"customer_id": 999_999},
            ["--customer-id", customer.pk, "--campaign-id", campaign.pk],
            "customer_id 999999",
        ),
    ]:
        with pytest.raises(CommandError) as refused:
            run_with(constants, *args)
        assert str(refused.value).startswith("The mapping's constant ")
        assert message in str(refused.value)
    assert Lead.objects.count() == 0
    assert run_with({"campaign_id": campaign.pk}, "--customer-id", customer.pk).count("2 created") == 1


@pytest.mark.django_db
def test_a_file_that_fails_midway_says_what_was_already_stored(tmp_path, customer, campaign, monkeypatch):
    path = _csv(tmp_path, f"A,{customer.pk},{campaign.pk},live,,\n")

    def fails_after_a_chunk(*args, on_progress, errors_out, **kwargs):
        errors_out.write("row,column,reason\n")
        on_progress(5_000)
        raise ImportFileError("CSV error on line 5002: unexpected end of data.")

    monkeypatch.setattr("leads.management.commands.import_leads.import_leads", fails_after_a_chunk)

    with pytest.raises(CommandError) as failed:
        _run(path)

    assert str(failed.value) == (
        "leads.csv: CSV error on line 5002: unexpected end of data. The valid rows among the first 5,000 "
        "were already stored; importing the fixed file again is safe (rows are matched by external id)."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leads.csv"]


@pytest.mark.django_db
def test_the_error_report_may_not_overwrite_the_file_being_imported(tmp_path, customer, campaign):
    path = _csv(tmp_path, f"A,{customer.pk},{campaign.pk},live,,\n")
    with pytest.raises(CommandError, match="is the file being imported"):
        _run(path, "--errors", tmp_path / "." / "leads.csv")
    assert path.read_text().count("\n") == 2  # untouched


@pytest.mark.django_db
def test_a_bad_mapping_file_is_reported(tmp_path):
    path = _csv(tmp_path, "A,1,1,live,,\n")
    mapping = tmp_path / "mapping.json"
    mapping.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        _run(path, "--mapping", mapping)
    mapping.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CommandError, match="not valid JSON: it is nested too deeply"):
        _run(path, "--mapping", mapping)
    mapping.write_text('{"columns": {"colour": "x"}}')
    with pytest.raises(CommandError, match="unknown lead fields"):
        _run(path, "--mapping", mapping)
    with pytest.raises(CommandError, match="No such file"):
        _run(tmp_path / "missing.csv")


def test_the_command_line_exit_status_is_non_zero_without_a_traceback(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\x00\x01\x02 binary")
    result = manage_py("import_leads", str(path), "--no-progress")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("CommandError: bad.csv: The file is not a spreadsheet: expected CSV, XLSX, XLS or ODS. ")
    )


@pytest.mark.django_db(transaction=True)
def test_a_large_file_is_stored_in_chunks_by_the_writer_thread(tmp_path):
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    body = "".join(
        f"L{i},{customer.pk},{campaign.pk},{'live' if i % 2 else 'stale'},City {i % 7},\n" for i in range(50)
    )
    body += f"bad,{customer.pk},{campaign.pk},hot,,\n"
    path = _csv(tmp_path, body)
    progress: list[int] = []

    summary = import_leads(
        path, mapping=LeadMapping(), chunk_rows=7, on_progress=progress.append, errors_out=io.StringIO()
    )

    assert (summary.total, summary.created, summary.updated, summary.rejected) == (51, 50, 0, 1)
    assert sum(progress) == 51
    assert len(progress) == 8
    assert Lead.objects.count() == 50
    assert Lead.objects.filter(lead_type="stale").count() == 25


@pytest.mark.django_db(transaction=True)
def test_the_real_x_education_file_imports_with_the_shipped_mapping(tmp_path):
    source = Path(settings.LEADRANK_DATA_DIR) / "x_education_leads" / "Leads.csv"
    if not source.exists():
        pytest.skip("the shared data set is not beside the project")
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    mapping = Path(settings.BASE_DIR) / "examples" / "x_education_mapping.json"
    output = _run(
        source,
        "--mapping",
        mapping,
        "--customer-id",
        customer.pk,
        "--campaign-id",
        campaign.pk,
        "--errors",
        tmp_path / "errors.csv",
    )
    assert "9240 rows" in output
    assert "9240 created, 0 updated, 0 rejected" in output
    assert Lead.objects.filter(customer=customer, campaign=campaign, lead_type="stale").count() == 9240
    assert not Lead.objects.filter(city="Select").exists()
    assert Lead.objects.filter(city="Mumbai", stage="Email Opened").exists()


@pytest.mark.django_db
def test_a_row_with_an_oversized_cell_or_a_cell_too_many_is_rejected_and_the_others_stored(
    tmp_path, customer, campaign
):
    long = "x" * 200_000  # over the csv module's default field limit of 131,072 characters
    path = _csv(
        tmp_path,
        f"A,{customer.pk},{campaign.pk},live,Pune,\n"
        f"B,{customer.pk},{campaign.pk},live,{long},\n"
        f"C,{customer.pk},{campaign.pk},live,Thane, Outskirts,2026-01-05T10:00:00Z\n"  # unquoted comma
        f"D,{customer.pk},{campaign.pk},live,Goa,,,\n",  # empty cells past the header are padding
    )
    errors = tmp_path / "errors.csv"

    output = _run(path, "--errors", errors)

    assert "2 created, 0 updated, 2 rejected" in output
    assert dict(Lead.objects.values_list("external_id", "city")) == {"A": "Pune", "D": "Goa"}
    rows = list(csv.reader(errors.open()))
    assert rows[1:] == [
        ["3", "city", "Ensure this field has no more than 200 characters."],
        [
            "4",
            "non_field_errors",
            "The row has 7 cells, the header has 6: put a value that holds the delimiter in quotes.",
        ],
    ]


@pytest.mark.django_db
def test_repeated_columns_and_a_wrong_encoding_stop_with_one_readable_line(tmp_path, customer, campaign):
    repeated = _csv(tmp_path, "A,live,Pune,Mumbai\n", header="external_id,lead_type,City,city\n")
    with pytest.raises(CommandError, match=r"Columns 3 \('City'\) and 4 \('city'\) both match city;"):
        _run(repeated, "--customer-id", customer.pk, "--campaign-id", campaign.pk)

    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"encoding": "utf-16"}')
    utf_8 = _csv(tmp_path, "A,live\n", header="external_id,lead_type\n", name="utf8.csv")
    with pytest.raises(CommandError, match=r"utf8\.csv: The file is not valid utf-16 text \(UTF-16 stream"):
        _run(utf_8, "--mapping", mapping, "--customer-id", customer.pk, "--campaign-id", campaign.pk)
    assert Lead.objects.count() == 0


@pytest.mark.django_db
def test_the_error_report_shows_a_header_name_that_looks_like_a_formula_as_text(tmp_path):
    # A spreadsheet program opening the report would run "=HYPERLINK(…)" (CSV injection).
    campaign = CampaignFactory()
    column = '=HYPERLINK("http://example.invalid","Click")'
    path = tmp_path / "leads.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "customer_id", "campaign_id", "lead_type", column])
        writer.writerow(["A", campaign.customer_id, campaign.pk, "live", "not a moment"])
    report = io.StringIO()

    summary = import_leads(
        path, mapping=LeadMapping.from_json({"columns": {"last_activity": column}}), errors_out=report
    )

    assert summary.rejected == 1
    (row,) = list(csv.reader(io.StringIO(report.getvalue())))[1:]
    assert row[:2] == ["2", f"'{column}"]


@pytest.mark.django_db
def test_the_error_report_never_replaces_a_device_or_a_pipe_and_follows_a_link(tmp_path, customer, campaign):
    path = _csv(tmp_path, f"A,{customer.pk},{campaign.pk},hot,,\n")  # one rejected row
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    # As root, --errors /dev/null made /dev/null a regular file.
    with pytest.raises(CommandError, match="is not a regular file"):
        _run(path, "--errors", pipe)
    assert stat.S_ISFIFO(pipe.stat().st_mode)

    target, link = tmp_path / "reports" / "errors.csv", tmp_path / "link.csv"
    target.parent.mkdir()
    link.symlink_to(target)
    _run(path, "--errors", link)
    assert link.is_symlink()
    assert target.read_text().startswith("row,column,reason")


@pytest.mark.django_db
def test_a_file_in_a_folder_that_takes_no_report_still_imports(tmp_path, customer, campaign, monkeypatch):
    # A read-only folder (such as the shared data set): the report, needed only for rejected
    # rows, is written in the temporary folder first.
    path = _csv(tmp_path, f"A,{customer.pk},{campaign.pk},live,,\nB,{customer.pk},{campaign.pk},hot,,\n")
    make = tempfile.mkstemp

    def read_only_beside(*args, dir=None, **kwargs):
        if dir is not None:
            raise OSError(errno.EROFS, "Read-only file system")
        return make(*args, **kwargs)

    monkeypatch.setattr("leads.management.commands.import_leads.tempfile.mkstemp", read_only_beside)

    output = _run(path)

    assert "1 created, 0 updated, 1 rejected" in output
    assert (tmp_path / "leads.csv.errors.csv").read_text().count("\n") == 2
