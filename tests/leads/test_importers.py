"""Pure parsing: no database."""

import codecs
import datetime as dt
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pytest
import xlwt

from leads import importers
from leads.importers import (
    ROW_ERRORS,
    ImportFileError,
    LeadMapping,
    MappingError,
    check_file_encoding,
    detect_format,
    has_nul,
    latest_moment_for,
    open_table,
    parse_lead,
    plan_columns,
    row_to_raw,
)

VALID = {"external_id": "A-1", "customer_id": "3", "campaign_id": 4, "lead_type": "Live"}


def test_a_minimal_lead_parses_with_empty_optional_fields():
    lead, errors = parse_lead(VALID)
    assert errors == {}
    assert lead is not None
    assert (lead.external_id, lead.customer_id, lead.campaign_id, lead.lead_type) == ("A-1", 3, 4, "live")
    assert (lead.city, lead.source, lead.stage) == ("", "", "")
    assert lead.pricing_plan is None
    assert lead.created_at is None
    assert lead.last_activity is None


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("external_id", "", "required"),
        ("external_id", "x" * 201, "no more than 200"),
        ("customer_id", "abc", "positive integer"),
        ("customer_id", 0, "positive integer"),
        ("campaign_id", 4.5, "positive integer"),
        ("campaign_id", True, "positive integer"),
        # Digits that are not ASCII, and numbers no bigint id holds.
        ("customer_id", "²", "positive integer"),
        ("campaign_id", "\u0667", "positive integer"),  # an Arabic-Indic 7
        ("customer_id", "9" * 25, "positive integer"),
        ("customer_id", "9" * 5000, "positive integer"),
        ("customer_id", 2**63, "positive integer"),
        ("campaign_id", 1e30, "positive integer"),
        ("lead_type", "warm", "not one of: live, stale"),
        ("lead_type", None, "required"),
        ("pricing_plan", "gold", "not one of: starter, pro, enterprise"),
        ("created_at", "yesterday", "not a valid timestamp"),
        ("last_activity", "2026-13-01", "not a valid timestamp"),
        ("rescheduled_at", 12, "not a valid timestamp"),
        ("city", "c" * 201, "no more than 200"),
    ],
)
def test_each_bad_value_gets_an_error_on_its_own_field(field, value, message_part):
    lead, errors = parse_lead({**VALID, field: value})
    assert lead is None
    assert list(errors) == [field]
    assert message_part in errors[field][0]


def test_all_errors_of_a_row_are_reported_together():
    _, errors = parse_lead({"external_id": "", "customer_id": "x", "lead_type": "hot"})
    assert set(errors) == {"external_id", "customer_id", "campaign_id", "lead_type"}


def test_a_last_activity_later_than_its_arrival_allows_is_refused():
    received = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    latest = latest_moment_for(received)

    within, errors = parse_lead({**VALID, "last_activity": "2026-11-24T09:14:00Z"}, latest=latest)
    assert errors == {}
    assert within is not None
    # A local time sent without its offset (here +05:30) lands hours ahead.
    lead, errors = parse_lead({**VALID, "last_activity": "2026-11-24 14:25:00"}, latest=latest)
    assert lead is None
    assert errors == {
        "last_activity": [
            "'2026-11-24 14:25:00' is in the future: last_activity is a past moment; send it in "
            "UTC or with its offset."
        ]
    }
    # Without a bound (a caller with no arrival time), any year in range is taken.
    assert parse_lead({**VALID, "last_activity": "2099-01-01"})[1] == {}


def test_a_created_at_later_than_its_arrival_allows_is_refused_with_every_such_field():
    latest = latest_moment_for(dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC))

    within, errors = parse_lead({**VALID, "created_at": "2026-11-24T09:14:00Z"}, latest=latest)
    assert errors == {}
    assert within is not None
    # Stored, a local time sent without its offset would hide a live lead (and hold its
    # SLA clock) for hours.
    lead, errors = parse_lead(
        {**VALID, "created_at": "2026-11-24 14:25:00", "last_activity": "2026-11-24T10:00:00Z"},
        latest=latest,
    )
    assert lead is None
    assert errors == {
        "created_at": [
            "'2026-11-24 14:25:00' is in the future: created_at is a past moment; send it in "
            "UTC or with its offset."
        ],
        "last_activity": [
            "'2026-11-24T10:00:00Z' is in the future: last_activity is a past moment; send it in "
            "UTC or with its offset."
        ],
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-24T09:30:00Z", dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)),
        ("2026-11-24T11:30:00+02:00", dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)),
        ("2026-11-24 09:30:00", dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)),
        ("2026-11-24", dt.datetime(2026, 11, 24, tzinfo=dt.UTC)),
        (dt.datetime(2026, 11, 24, 9, 30), dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)),
        (dt.date(2026, 11, 24), dt.datetime(2026, 11, 24, tzinfo=dt.UTC)),
    ],
)
def test_timestamps_are_stored_as_aware_utc(raw, expected):
    lead, errors = parse_lead({**VALID, "created_at": raw})
    assert errors == {}
    assert lead is not None
    assert lead.created_at == expected
    assert lead.created_at.utcoffset() == dt.timedelta(0)


def test_spreadsheet_floats_become_integer_ids_and_text():
    lead, errors = parse_lead({**VALID, "external_id": 660737.0, "customer_id": 3.0})
    assert errors == {}
    assert lead is not None
    assert (lead.external_id, lead.customer_id) == ("660737", 3)


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_a_number_that_is_infinite_or_nan_is_no_text(number):
    # JSON's 1e400 is read as infinity; an external id of "inf" was stored.
    lead, errors = parse_lead({**VALID, "external_id": number, "city": number})

    assert lead is None
    assert errors == {
        name: ["Expected text or a number, not an infinite one or NaN."] for name in ("external_id", "city")
    }


def test_mapping_rejects_unknown_fields_and_keys():
    with pytest.raises(MappingError, match="unknown lead fields: colour"):
        LeadMapping.from_json({"columns": {"colour": "Colour"}})
    with pytest.raises(MappingError, match="Unknown mapping keys"):
        LeadMapping.from_json({"colums": {}})
    with pytest.raises(MappingError, match="Unknown encoding"):
        LeadMapping.from_json({"encoding": "klingon"})
    with pytest.raises(MappingError, match="JSON object"):
        LeadMapping.from_json([1, 2])
    # As json.loads decodes an unpaired "\\ud800" escape: text nothing can store or show.
    with pytest.raises(MappingError, match="lone UTF-16 surrogate"):
        LeadMapping.from_json({"columns": {"city": "Town\ud800"}})


def test_a_mapping_constant_no_lead_can_have_is_a_mapping_error():
    # It rejected every row of the file, one line of the error report each.
    with pytest.raises(MappingError) as refused:
        LeadMapping.from_json({"constants": {"lead_type": "hot", "campaign_id": "x7", "city": "Pune"}})

    assert str(refused.value).startswith('"constants" holds values no lead can have: ')
    assert "lead_type: " in str(refused.value)
    assert "campaign_id: A positive integer id is required" in str(refused.value)
    assert "city" not in str(refused.value)
    assert LeadMapping.from_json({"constants": {"lead_type": "Stale", "campaign_id": 7}}).constants == {
        "lead_type": "Stale",
        "campaign_id": "7",
    }


def test_headers_match_ignoring_case_spacing_and_punctuation():
    plan = plan_columns(
        [" External ID ", "CUSTOMER-ID", "campaign id", "Lead_Type", "City"], LeadMapping(), given={}
    )
    assert plan.positions == {
        "external_id": 0,
        "customer_id": 1,
        "campaign_id": 2,
        "lead_type": 3,
        "city": 4,
    }


def test_an_explicitly_mapped_column_does_not_also_feed_a_field_of_its_name():
    mapping = LeadMapping.from_json(
        {
            "columns": {"external_id": "Prospect ID", "stage": "Last Activity"},
            "constants": {"lead_type": "stale"},
        }
    )
    plan = plan_columns(["Prospect ID", "Last Activity"], mapping, given={"customer_id": 1, "campaign_id": 2})
    assert plan.positions == {"external_id": 0, "stage": 1}
    assert plan.constants == {"lead_type": "stale", "customer_id": "1", "campaign_id": "2"}


def test_missing_required_columns_are_named_with_the_columns_found():
    with pytest.raises(
        ImportFileError, match=r"Missing required columns: .*lead_type.*Columns found: Name, Phone"
    ):
        plan_columns(["Name", "Phone"], LeadMapping(), given={})


def test_a_mapping_naming_an_absent_column_is_an_error():
    mapping = LeadMapping.from_json({"columns": {"external_id": "Prospect ID"}})
    with pytest.raises(ImportFileError, match="'Prospect ID' \\(for external_id\\)"):
        plan_columns(["id"], mapping, given={})


def test_values_listed_as_empty_become_empty():
    mapping = LeadMapping.from_json({"empty_values": ["Select"]})
    plan = plan_columns(["external_id", "customer_id", "campaign_id", "lead_type", "city"], mapping, given={})
    raw = row_to_raw(["A", "1", "2", "live", " select "], plan, mapping.empty_values)
    assert raw["city"] is None


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_csv_delimiter_is_sniffed_and_rows_are_numbered_like_a_spreadsheet(tmp_path):
    path = _write(tmp_path, "leads.csv", "\ufeffexternal_id;city\r\nA;Köln\r\n\r\nB;Paris\r\n".encode())
    table = open_table(path)
    assert table.format == "csv"
    assert table.header == ["external_id", "city"]
    assert list(table.rows) == [(2, ["A", "Köln"]), (4, ["B", "Paris"])]


def test_a_file_in_the_wrong_encoding_is_refused_before_any_row(tmp_path):
    path = _write(tmp_path, "latin.csv", "external_id,city\nA,K\xf6ln\n".encode("latin-1"))
    with pytest.raises(ImportFileError, match=r"not valid utf-8 text \(line 2"):
        open_table(path)
    assert open_table(path, encoding="latin-1").header == ["external_id", "city"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a spreadsheet"),
        (b"PK\x03\x04 this is no workbook", "not a readable XLSX workbook"),
    ],
)
def test_files_that_are_not_spreadsheets_are_refused(tmp_path, content, message):
    path = _write(tmp_path, "leads.csv", content)
    with pytest.raises(ImportFileError, match=message):
        open_table(path)


@pytest.mark.parametrize("cut_bytes", [100, 1_000, 1_500])
def test_an_xls_cut_short_is_refused_as_damaged_not_with_a_reader_panic(tmp_path, cut_bytes):
    book = xlwt.Workbook()
    sheet = book.add_sheet("Leads")
    for column, value in enumerate(["external_id", "customer_id"]):
        sheet.write(0, column, value)
        sheet.write(1, column, "A" if column == 0 else 1)
    whole = tmp_path / "whole.xls"
    book.save(str(whole))
    data = whole.read_bytes()
    path = _write(tmp_path, "leads.xls", data[: len(data) - cut_bytes])

    # calamine panics on these (a pyo3 PanicException, which `except Exception` misses).
    with pytest.raises(ImportFileError, match="not a readable XLS workbook: it is damaged or cut short"):
        list(open_table(path).rows)


def test_a_value_in_the_last_cell_of_a_sheet_is_refused_without_aborting_the_process(tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["external_id", "customer_id", "campaign_id", "lead_type"])
    sheet.append(["A", 1, 1, "live"])
    sheet["XFD1048576"] = "stray"  # calamine sizes its grid up to here: 17 billion cells
    path = tmp_path / "leads.xlsx"
    workbook.save(path)
    # In a process of its own: the reader's failed allocation aborted the process that read
    # the file (a web or Celery worker); it must end in ImportFileError instead.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from leads.importers import ImportFileError, open_table\n"
        "try:\n"
        "    list(open_table(Path(sys.argv[1])).rows)\n"
        "except ImportFileError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=Path(importers.__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert "The file is not a readable XLSX workbook: it is damaged, or reading it needs more memory" in (
        done.stdout
    )
    assert "delete the rows and columns after the data" in done.stdout


def test_a_small_sheet_that_asks_for_gigabytes_is_refused_at_the_readers_memory_bound(tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["external_id", "customer_id", "campaign_id", "lead_type"])
    sheet.append(["A", 1, 1, "live"])
    sheet["XFD6000"] = 1  # a grid of 98 million cells: 3 GB, which the machine had to give
    path = tmp_path / "leads.xlsx"
    workbook.save(path)

    with pytest.raises(ImportFileError, match="more memory than there is or than a file of its size may use"):
        list(open_table(path).rows)


def test_a_damaged_sheet_whose_reading_never_ends_is_stopped_with_a_message(tmp_path, monkeypatch):
    # calamine loops for ever on an ODS whose XML stops after a row (834 bytes): the upload
    # request, or the import task, waited for ever at 100% CPU.
    monkeypatch.setattr(importers, "READER_CPU_BASE_SECONDS", 1)
    path = _ods(tmp_path / "leads.ods", [["external_id", "lead_type"], ["A", "live"]], closed=False)

    with pytest.raises(ImportFileError, match=r"reading it was stopped after 2 s, .* so it is damaged"):
        list(open_table(path).rows)


def test_the_reader_may_use_more_for_a_larger_file():
    small = importers.reader_limits_for_size(10_000)
    large = importers.reader_limits_for_size(50 * 1024**2)  # about 1.7 million rows of XLSX

    assert small.memory_bytes == importers.READER_MEMORY_BASE_BYTES + 400_000
    assert large.memory_bytes == importers.READER_MEMORY_BASE_BYTES + 40 * 50 * 1024**2
    assert (small.cpu_seconds, large.cpu_seconds) == (21, 120)


def test_sheet_rows_stream_from_the_reader_with_their_row_numbers_and_types(tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["external_id", "created_at", "converted"])
    sheet.append(["A", dt.datetime(2026, 1, 2, 3, 4), True])
    sheet.append([])
    for number in range(3_000):  # several of the reader's batches
        sheet.append([f"B{number}", dt.date(2026, 1, 1), 0])
    path = tmp_path / "leads.xlsx"
    workbook.save(path)

    table = open_table(path)
    rows = list(table.rows)

    assert table.header == ["external_id", "created_at", "converted"]
    assert rows[0] == (2, ["A", dt.datetime(2026, 1, 2, 3, 4), True])
    assert rows[1][0] == 4  # the blank row 3 is skipped but counted
    assert rows[-1] == (3_003, ["B2999", dt.date(2026, 1, 1), 0.0])
    assert len(rows) == 3_001


def test_a_sheet_cell_holding_a_time_of_day_or_a_duration_is_refused_as_having_no_date(tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["created_at", "last_activity"])
    sheet.append([dt.time(9, 30), dt.timedelta(hours=30)])
    path = tmp_path / "leads.xlsx"
    workbook.save(path)
    (_, (created_at, last_activity)), *_ = open_table(path).rows

    _, errors = parse_lead({**VALID, "created_at": created_at, "last_activity": last_activity})

    assert errors == {
        "created_at": [
            "'09:30:00' (a time of day with no date) is not a valid timestamp. "
            "Enter an ISO 8601 timestamp, e.g. 2026-11-24T09:30:00Z."
        ],
        "last_activity": [
            "'1 day, 6:00:00' (a duration, not a date) is not a valid timestamp. "
            "Enter an ISO 8601 timestamp, e.g. 2026-11-24T09:30:00Z."
        ],
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'external_id,city\nA,"Pune\nB,Delhi\nC,Goa\n', "Row 2 (from line 2) opens a quoted value"),
        (b'external_id,city\nA,Pune\n\nB,"Delhi', "Row 4 (from line 4) opens a quoted value"),
        (b'"external_id,city\nA,Pune\n', "The header (from line 1) opens a quoted value"),
    ],
    ids=["rows-after-it", "last-row-no-newline", "header"],
)
def test_a_quoted_value_never_closed_is_refused_rather_than_swallowing_later_rows(tmp_path, content, message):
    path = _write(tmp_path, "leads.csv", content)
    with pytest.raises(ImportFileError, match=re.escape(message)):
        list(open_table(path).rows)


def test_closed_quotes_line_breaks_in_values_and_a_missing_last_newline_still_read(tmp_path):
    content = b'external_id,city\r\nA,"Pu""ne"\r\n\r\nB,"two\nlines"\r\nC,"Big" Co'
    path = _write(tmp_path, "leads.csv", content)
    assert list(open_table(path).rows) == [
        (2, ["A", 'Pu"ne']),
        (4, ["B", "two\nlines"]),
        (5, ["C", "Big Co"]),
    ]


def test_xlsx_and_xls_are_detected_by_content_and_read(tmp_path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["external_id", "created_at", "customer_id"])
    sheet.append([660737, dt.datetime(2026, 1, 2, 3, 4), 1])
    xlsx = tmp_path / "leads.bin"
    workbook.save(xlsx)

    book = xlwt.Workbook()
    ws = book.add_sheet("Leads")
    for col, value in enumerate(["external_id", "city", "customer_id"]):
        ws.write(0, col, value)
    for col, value in enumerate(["B-1", "Pune", 2]):
        ws.write(1, col, value)
    xls = tmp_path / "leads.xls"
    book.save(str(xls))

    assert detect_format(xlsx) == "xlsx"
    assert detect_format(xls) == "xls"
    xlsx_rows = list(open_table(xlsx).rows)
    assert xlsx_rows[0][0] == 2
    lead_cells = xlsx_rows[0][1]
    assert lead_cells[0] == 660737 or lead_cells[0] == 660737.0
    assert lead_cells[1] == dt.datetime(2026, 1, 2, 3, 4)
    assert list(open_table(xls).rows) == [(2, ["B-1", "Pune", 2.0])]


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("city", {"a": 1}, "not a list, object or boolean"),
        ("external_id", ["x"], "not a list, object or boolean"),
        ("source", True, "not a list, object or boolean"),
        ("stage", "Email\x00Opened", "NUL"),
        ("customer_id", {"id": 1}, "positive integer id is required, got a dict"),
        ("created_at", ["2026-01-01"], "not a valid timestamp"),
    ],
)
def test_values_that_are_not_plain_text_are_field_errors(field, value, message_part):
    lead, errors = parse_lead({**VALID, field: value})
    assert lead is None
    assert list(errors) == [field]
    assert message_part in errors[field][0]


def test_a_lower_case_z_marks_utc_as_rfc_3339_allows():
    lead, errors = parse_lead({**VALID, "created_at": "2026-02-20T10:00:00z"})
    assert errors == {}
    assert lead is not None
    assert lead.created_at == dt.datetime(2026, 2, 20, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8"])
def test_a_unicode_text_csv_is_read_by_its_byte_order_mark_without_a_mapping(tmp_path, codec):
    # What spreadsheet programs save as "Unicode text": UTF-16 with its mark, tab separated;
    # "CSV UTF-8": UTF-8 with its mark (read as cp1252 the header was "ï»¿external_id").
    bom = {
        "utf-16-le": codecs.BOM_UTF16_LE,
        "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-8": codecs.BOM_UTF8,
    }.get(codec, b"")
    path = _write(tmp_path, "unicode.csv", bom + "external_id\tcity\nA\tKöln\n".encode(codec))
    # The mark is unambiguous: it decides, whatever the mapping says.
    for encoding in ("utf-8", "utf-16", "cp1252"):
        table = open_table(path, encoding=encoding)
        assert table.header == ["external_id", "city"]
        assert list(table.rows) == [(2, ["A", "Köln"])]


def test_utf_16_without_its_mark_still_needs_the_mapping_to_say_so(tmp_path):
    path = _write(tmp_path, "unicode.csv", "external_id\tcity\nA\tKöln\n".encode("utf-16-le"))
    with pytest.raises(ImportFileError):
        open_table(path)
    table = open_table(path, encoding="utf-16-le")
    assert list(table.rows) == [(2, ["A", "Köln"])]


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "cp1252", "latin-1", "utf-16", "utf-7", "shift_jis"])
def test_character_sets_of_text_files_are_accepted_as_the_mapping_encoding(encoding):
    check_file_encoding(encoding)
    assert LeadMapping.from_json({"encoding": encoding}).encoding == encoding


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("utf\x00", "Unknown encoding"),  # codecs.lookup raises ValueError, not LookupError
        ("base64", "not a character set of text files"),  # bytes to bytes
        ("hex", "not a character set of text files"),
        ("zlib", "not a character set of text files"),
        ("rot13", "not a character set of text files"),  # text to text
        ("unicode_escape", "not a character set of text files"),  # "\\ud800" → a lone surrogate
        ("Raw-Unicode-Escape", "not a character set of text files"),
        ("undefined", "not a character set of text files"),
        ("idna", "not a character set of text files"),
    ],
)
def test_an_encoding_that_is_no_character_set_of_text_files_is_a_mapping_error(encoding, message):
    with pytest.raises(MappingError, match=message) as refused:
        check_file_encoding(encoding)
    assert '"encoding"' in str(refused.value)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"empty_values": ["\x00"]}, '"empty_values"'),
        ({"constants": {"city": "\x00"}}, '"constants"'),
        ({"columns": {"city": "ci\x00ty"}}, '"columns"'),
        ({"encoding": "utf\x00"}, '"encoding"'),
        ({"colu\x00mns": {}}, '"colu\\u0000mns"'),
    ],
)
def test_a_nul_anywhere_in_the_mapping_is_a_mapping_error_naming_where(data, where):
    with pytest.raises(MappingError, match="NUL character") as refused:
        LeadMapping.from_json(data)
    assert f"in {where}," in str(refused.value)
    assert "\x00" not in str(refused.value)


def test_has_nul_looks_at_every_key_and_value_however_deep():
    assert not has_nul({"a": ["b", {"c": 1}]})
    assert has_nul({"a": ["b", {"c": "d\x00"}]})
    assert has_nul({"a\x00": 1})
    deep: object = "\x00"
    for _ in range(10_000):
        deep = [deep]
    assert has_nul(deep)


@pytest.mark.parametrize(
    ("value", "message_part"), [("Town\ud800", "lone UTF-16 surrogates"), ("Pu\x00ne", "NUL")]
)
def test_text_the_database_cannot_store_is_a_field_error(value, message_part):
    lead, errors = parse_lead({**VALID, "city": value})
    assert lead is None
    assert list(errors) == ["city"]
    assert message_part in errors["city"][0]


def test_a_nul_in_a_header_past_the_format_check_is_refused_naming_the_column(tmp_path):
    # detect_format looks for NUL in the first 64 KB only; this one comes after.
    content = b"external_id,lead_type," + b"x" * 70_000 + b"\x00y\nA,live,z\n"
    path = _write(tmp_path, "leads.csv", content)
    with pytest.raises(ImportFileError, match=r"Column 3 of the header \('x+'\) holds a NUL"):
        open_table(path)


def test_a_lone_surrogate_is_refused_in_the_header_and_kept_out_of_cells(tmp_path):
    # UTF-7 spells a lone surrogate as "+2AA-": a file can hold one in any cell.
    header = _write(tmp_path, "header.csv", b"external_id,lead_type,+2AA-\nA,live,z\n")
    with pytest.raises(ImportFileError, match=r"Column 3 of the header \('\\ud800'\) holds a lone UTF-16"):
        open_table(header, encoding="utf-7")

    cell = _write(
        tmp_path, "cell.csv", b"external_id,customer_id,campaign_id,lead_type,city\nA,1,2,live,+2AA-\n"
    )
    table = open_table(cell, encoding="utf-7")
    [(_, cells)] = list(table.rows)
    plan = plan_columns(table.header, LeadMapping(), given={})
    lead, errors = parse_lead(row_to_raw(cells, plan, frozenset()))
    assert lead is None
    assert errors == {"city": ["Text may not contain lone UTF-16 surrogates (\\ud800-\\udfff)."]}


def test_spreadsheet_header_cells_are_read_as_text_and_a_nul_is_refused(tmp_path):
    def xls(name: str, header: list[object]) -> Path:
        book = xlwt.Workbook()
        sheet = book.add_sheet("Leads")
        for column, value in enumerate(header):
            sheet.write(0, column, value)
        path = tmp_path / name
        book.save(str(path))
        return path

    assert open_table(xls("readable.xls", ["external_id", True, 7])).header == ["external_id", "True", "7"]
    with pytest.raises(ImportFileError, match=r"Column 2 of the header \('lead\\x00type'\) holds a NUL"):
        open_table(xls("broken.xls", ["external_id", "lead\x00type"]))


# --- Cells, rows and headers a CSV reader must not let through silently ------------------


def _parse_csv(
    tmp_path: Path, text: str, mapping: LeadMapping | None = None
) -> list[tuple[int, object, dict]]:
    """Each data row of a CSV file as (row number, lead or None, errors), as an import parses it."""
    mapping = mapping or LeadMapping()
    table = open_table(_write(tmp_path, "leads.csv", text.encode()))
    plan = plan_columns(table.header, mapping, given={"customer_id": 1, "campaign_id": 2})
    return [
        (number, *parse_lead(row_to_raw(cells, plan, mapping.empty_values))) for number, cells in table.rows
    ]


def test_a_cell_over_the_csv_modules_default_limit_rejects_its_row_not_the_file(tmp_path):
    long = "x" * 200_000  # the csv module refuses cells over 131,072 characters by default
    parsed = _parse_csv(tmp_path, f'external_id,lead_type,city\nA,live,Pune\nB,live,"{long}"\nC,live,Goa\n')
    assert [(number, lead and lead.external_id, errors) for number, lead, errors in parsed] == [
        (2, "A", {}),
        (3, None, {"city": ["Ensure this field has no more than 200 characters."]}),
        (4, "C", {}),
    ]


def test_a_row_with_more_cells_than_the_header_is_rejected_as_a_whole(tmp_path):
    # An unquoted comma in "Thane, Outskirts" moved Google out of the source column.
    parsed = _parse_csv(
        tmp_path, "external_id,lead_type,city,source\nw1,live,Thane, Outskirts,Google\nw2,live,Pune,Google\n"
    )
    assert parsed[0] == (
        2,
        None,
        {
            ROW_ERRORS: [
                "The row has 5 cells, the header has 4: put a value that holds the delimiter in quotes."
            ]
        },
    )
    lead = parsed[1][1]
    assert (lead.external_id, lead.city, lead.source) == ("w2", "Pune", "Google")


def test_empty_cells_past_the_header_are_padding_not_values(tmp_path):
    parsed = _parse_csv(tmp_path, "external_id,lead_type,city\nA,live,Pune,,\nB,live,Goa, ,\t\n")
    assert [(lead.external_id, lead.city, errors) for _, lead, errors in parsed] == [
        ("A", "Pune", {}),
        ("B", "Goa", {}),
    ]
    # A spreadsheet row padded with None, as well as one with a value beyond the header.
    plan = plan_columns(
        ["external_id", "lead_type"], LeadMapping(), given={"customer_id": 1, "campaign_id": 2}
    )
    assert parse_lead(row_to_raw(["A", "live", None, "", None], plan, frozenset()))[1] == {}
    assert list(parse_lead(row_to_raw(["A", "live", None, 7.0, None], plan, frozenset()))[1]) == [ROW_ERRORS]


def test_a_row_with_fewer_cells_than_the_header_has_its_last_cells_empty(tmp_path):
    parsed = _parse_csv(tmp_path, "external_id,lead_type,city,source\nA,live\nB\n")
    lead = parsed[0][1]
    assert (lead.external_id, lead.city, lead.source) == ("A", "", "")
    assert parsed[1] == (3, None, {"lead_type": ["This field is required."]})


def test_a_lead_sent_as_json_cannot_pass_for_a_rejected_row():
    lead, errors = parse_lead({**VALID, ROW_ERRORS: ["made up"]})
    assert errors == {}
    assert lead is not None


@pytest.mark.parametrize(
    ("header", "mapping", "message"),
    [
        (
            ["external_id", "lead_type", "City", "city"],
            {},
            r"Columns 3 \('City'\) and 4 \('city'\) both match city;",
        ),
        (
            ["Prospect ID", "lead_type", "prospect-id"],
            {"columns": {"external_id": "Prospect ID"}},
            r"Columns 1 \('Prospect ID'\) and 3 \('prospect-id'\) both match 'Prospect ID' "
            r"\(for external_id\);",
        ),
    ],
)
def test_two_columns_matching_the_name_a_field_is_read_by_are_refused_naming_both(header, mapping, message):
    with pytest.raises(ImportFileError, match=message):
        plan_columns(header, LeadMapping.from_json(mapping), given={"customer_id": 1, "campaign_id": 2})


def test_a_repeated_column_that_feeds_no_field_is_no_error():
    given = {"customer_id": 1, "campaign_id": 2}
    plan = plan_columns(["external_id", "lead_type", "Notes", "notes"], LeadMapping(), given=given)
    assert plan.positions == {"external_id": 0, "lead_type": 1}
    # Nor is a column named after a field the mapping reads from another column.
    mapping = LeadMapping.from_json({"columns": {"city": "Town"}})
    plan = plan_columns(["external_id", "lead_type", "City", "Town"], mapping, given=given)
    assert plan.positions["city"] == 3


def test_a_file_not_in_the_mappings_encoding_is_one_readable_error_whatever_the_codec_raises(
    tmp_path, monkeypatch
):
    path = _write(tmp_path, "leads.csv", b"external_id,lead_type\nA,live\n")
    # The UTF-16 decoder raises a plain UnicodeError here, not a UnicodeDecodeError.
    utf_16_error = r"not valid utf-16 text \(UTF-16 stream does not start with BOM\)"
    with pytest.raises(ImportFileError, match=utf_16_error):
        open_table(path, encoding="utf-16")
    with pytest.raises(MappingError, match="Unknown encoding 'klingon'"):
        open_table(path, encoding="klingon")
    # The readers say so too, should the file change after check_encoding read it.
    monkeypatch.setattr(importers, "check_encoding", lambda path, encoding: None)
    with pytest.raises(ImportFileError, match=utf_16_error):
        open_table(path, encoding="utf-16")
    late = _write(tmp_path, "late.csv", b"external_id,lead_type\n" + b"A,live\n" * 10_000 + b"B,\xff\n")
    table = open_table(late)
    with pytest.raises(ImportFileError, match="not valid utf-8 text"):
        list(table.rows)


MIB = 1 << 20  # check_encoding reads this much at a time


@pytest.mark.parametrize(
    ("first_chunk_end", "second_chunk", "where"),
    [
        # "€" (e2 82 ac) cut by the boundary: the decoder holds e2 82 back, and counts the
        # position of the bad byte at the end of the second chunk from them.
        (b"\xe2\x82", b"\xac\n" + b"b" * (MIB - 3) + b"\xff", f"line 3, byte 0xff at offset {2 * MIB - 1}"),
        # The bad byte is the held one itself: e2 is followed by no continuation byte.
        (b"\xe2", b"\nB,live\n", f"line 2, byte 0xe2 at offset {MIB - 1}"),
    ],
)
def test_a_bad_byte_next_to_a_character_cut_by_a_read_boundary_is_located(
    tmp_path, first_chunk_end, second_chunk, where
):
    head = b"external_id,lead_type\n"
    first_chunk = head + b"a" * (MIB - len(head) - len(first_chunk_end)) + first_chunk_end
    assert len(first_chunk) == MIB
    path = _write(tmp_path, "leads.csv", first_chunk + second_chunk)
    with pytest.raises(ImportFileError, match=rf"not valid utf-8 text \({where}\)"):
        open_table(path)


def _ods(path: Path, rows: list[list[str]], *, closed: bool = True) -> Path:
    """A minimal OpenDocument spreadsheet (no ODS writer is installed); with ``closed`` off,
    damaged: its XML stops after the last row."""
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    )
    cells = "".join(
        "<table:table-row>"
        + "".join(
            f'<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>'
            for v in row
        )
        + "</table:table-row>"
        for row in rows
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns} office:version="1.2">'
        f'<office:body><office:spreadsheet><table:table table:name="Leads">{cells}'
    )
    if closed:
        content += "</table:table></office:spreadsheet></office:body></office:document-content>"
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        # The mimetype entry comes first and uncompressed: detect_format looks for it.
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", zipfile.ZIP_STORED)
        archive.writestr("META-INF/manifest.xml", manifest)
        archive.writestr("content.xml", content)
    return path


@pytest.mark.parametrize(
    ("file_format", "name"),
    [
        ("xls", "leads.xlsx"),
        ("xlsx", "leads.xls"),
        ("xlsx", "leads.ods"),
        ("ods", "leads.xlsx"),
        ("ods", "leads.ods"),
    ],
)
def test_a_workbook_is_read_as_its_content_says_whatever_its_name_says(tmp_path, file_format, name):
    rows = [["external_id", "lead_type"], ["A-1", "live"]]
    path = tmp_path / name
    if file_format == "xlsx":
        workbook = openpyxl.Workbook()
        for row in rows:
            workbook.active.append(row)
        workbook.save(path)
    elif file_format == "xls":
        book = xlwt.Workbook()
        sheet = book.add_sheet("Leads")
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                sheet.write(r, c, value)
        book.save(str(path))
    else:
        _ods(path, rows)

    table = open_table(path)
    assert table.format == file_format
    assert table.header == ["external_id", "lead_type"]
    assert list(table.rows) == [(2, ["A-1", "live"])]


# --- Files of hostile shapes -------------------------------------------------------------------


def test_a_header_wider_than_any_spreadsheet_is_refused(tmp_path):
    # A CSV line of commas, or one value in column ZZZZZ of a sheet: a header of millions of
    # columns, which the preview stored and rendered.
    wide = _write(tmp_path, "wide.csv", b"external_id,lead_type" + b"," * 16_383 + b"\nA,live\n")
    widest = _write(tmp_path, "widest.csv", b"external_id,lead_type" + b"," * 16_382 + b"\nA,live\n")

    with pytest.raises(ImportFileError, match="The file has 16,385 columns; a lead file has at most 16,384"):
        open_table(wide)
    assert len(open_table(widest).header) == 16_384


@pytest.mark.parametrize("content", [codecs.BOM_UTF8, codecs.BOM_UTF16_LE])
def test_a_file_of_only_a_byte_order_mark_is_empty(tmp_path, content):
    # It was "the header opens a quoted value that is never closed".
    with pytest.raises(ImportFileError, match=r"^The file is empty\.$"):
        open_table(_write(tmp_path, "leads.csv", content))


def test_utf16_text_without_its_byte_order_mark_is_refused_with_the_encoding_to_give(tmp_path):
    path = _write(tmp_path, "leads.csv", "external_id,lead_type\nA,live\n".encode("utf-16-le"))

    with pytest.raises(ImportFileError, match='set "encoding" in the mapping to "utf-16-le"'):
        open_table(path)
    assert open_table(path, encoding="utf-16-le").header == ["external_id", "lead_type"]


def test_the_first_sheet_not_hidden_is_the_one_read(tmp_path):
    workbook = openpyxl.Workbook()
    hidden = workbook.active
    hidden.title = "Old list"
    hidden.append(["external_id", "lead_type"])
    hidden.append(["hidden-1", "live"])
    hidden.sheet_state = "veryHidden"  # Excel users cannot even unhide it
    shown = workbook.create_sheet("Leads")
    shown.append(["external_id", "lead_type"])
    shown.append(["shown-1", "live"])
    path = tmp_path / "leads.xlsx"
    workbook.save(path)

    assert [cells[0] for _, cells in open_table(path).rows] == ["shown-1"]
