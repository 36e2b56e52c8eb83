"""Pure parsing: no database."""

import datetime as dt
from pathlib import Path

import openpyxl
import pytest
import xlwt

from leads.importers import (
    ImportFileError,
    LeadMapping,
    MappingError,
    detect_format,
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


def test_a_utf_16_csv_is_read_when_the_mapping_names_its_encoding(tmp_path):
    path = _write(tmp_path, "unicode.csv", "external_id\tcity\nA\tKöln\n".encode("utf-16"))
    with pytest.raises(ImportFileError):
        open_table(path)
    table = open_table(path, encoding="utf-16")
    assert table.header == ["external_id", "city"]
    assert list(table.rows) == [(2, ["A", "Köln"])]
