"""Pure parsing of lead data: files (CSV, XLSX, XLS, ODS) and JSON objects into typed rows.

Nothing here touches the database. The same :func:`parse_lead` validates a lead pushed
through the API and a row read from a file, so both paths give the same field errors.
Referential checks (does customer 7 exist, does campaign 4 belong to it) need the
database and live in :mod:`leads.services`.
"""

import codecs
import csv
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from python_calamine import CalamineError, CalamineWorkbook

LEAD_FIELDS = (
    "external_id",
    "customer_id",
    "campaign_id",
    "lead_type",
    "city",
    "source",
    "last_activity",
    "stage",
    "pricing_plan",
    "rescheduled_at",
    "created_at",
)
REQUIRED_FIELDS = ("external_id", "customer_id", "campaign_id", "lead_type")
# A file of past leads maps a column to this field: 1/0, true/false or yes/no, whether the
# lead converted. Such leads are stored closed with that outcome (never queued) and train
# the learned model. Only an explicit mapping turns it on, never a header that happens to
# be called "converted": importing history instead of leads to call must be deliberate.
OUTCOME_FIELD = "converted"
MAPPABLE_FIELDS = (*LEAD_FIELDS, OUTCOME_FIELD)
LEAD_TYPES = ("live", "stale")
PRICING_PLANS = ("starter", "pro", "enterprise")
TEXT_MAX_LENGTH = 200

FileFormat = Literal["csv", "xlsx", "xls", "ods"]
FieldErrors = dict[str, list[str]]


class ImportFileError(Exception):
    """The file as a whole cannot be processed; the message is one readable sentence."""


class MappingError(ImportFileError):
    """The mapping (JSON) is malformed."""


class LeadInput(NamedTuple):
    """One validated lead, before referential checks. ``None`` means "not given".

    A plain tuple in the column order of the upsert's staging table, so that it is
    written to COPY as it is (no per-row conversion on the import's hot path).
    """

    customer_id: int
    campaign_id: int
    external_id: str
    lead_type: str
    city: str
    source: str
    last_activity: dt.datetime | None
    stage: str
    pricing_plan: str | None
    rescheduled_at: dt.datetime | None
    created_at: dt.datetime | None


# --- Values -----------------------------------------------------------------------------
# Each reader takes a raw value (text from CSV, a number or date from a spreadsheet, any
# JSON value from the API) and returns the typed value or raises ValueError with the
# field's error message. Empty means None or blank text.

_REQUIRED = "This field is required."
_TOO_LONG = f"Ensure this field has no more than {TEXT_MAX_LENGTH} characters."
_TIMESTAMP_ERROR = "Enter an ISO 8601 timestamp, e.g. 2026-11-24T09:30:00Z."

# The timestamps a lead or an outcome may carry. Python's datetime ends at 9999-12-31, so a
# value near that end overflows once a deadline or a calling-hours opening is computed from it.
EARLIEST_TIMESTAMP = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST_TIMESTAMP = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
TIMESTAMP_RANGE_ERROR = "Enter a timestamp in the years 1900 to 2099."
DAY_RANGE_ERROR = "Enter a day in the years 1900 to 2099."


_SCALARS = (str, int, float, dt.date)


def _text(value: object) -> str:
    if value is None:
        return ""
    if value.__class__ is str:
        text: str = value.strip()
    elif isinstance(value, float) and value.is_integer():
        # Spreadsheets store 660737 as 660737.0.
        return str(int(value))
    elif isinstance(value, _SCALARS) and not isinstance(value, bool):
        text = str(value).strip()
    else:
        raise ValueError("Expected text, a number or a date, not a list, object or boolean.")
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; one such value would fail a whole batch.
        raise ValueError("Text may not contain NUL (\\x00) characters.")
    return text


def _show(value: object) -> str:
    """A value as quoted in an error message (never raises)."""
    if isinstance(value, str):
        return repr(value.strip())
    if isinstance(value, float) and value.is_integer():
        return repr(str(int(value)))
    return repr(str(value)) if isinstance(value, _SCALARS) else f"a {type(value).__name__}"


def _required_text(value: object) -> str:
    text = _text(value)
    if not text:
        raise ValueError(_REQUIRED)
    if len(text) > TEXT_MAX_LENGTH:
        raise ValueError(_TOO_LONG)
    return text


def _optional_text(value: object) -> str:
    text = _text(value)
    if len(text) > TEXT_MAX_LENGTH:
        raise ValueError(_TOO_LONG)
    return text


def _positive_id(value: object) -> int:
    if value.__class__ is int:
        number: int = value
    elif value is None or (value.__class__ is str and not value.strip()):
        raise ValueError(_REQUIRED)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif value.__class__ is str and value.strip().isdigit():
        number = int(value)
    else:
        number = 0
    if number <= 0:
        raise ValueError(f"A positive integer id is required, got {_show(value)}.")
    return number


def _choice(value: object, choices: tuple[str, ...], *, required: bool) -> str | None:
    text = _text(value)
    if not text:
        if required:
            raise ValueError(_REQUIRED)
        return None
    lowered = text.lower()
    if lowered not in choices:
        raise ValueError(f"{text!r} is not one of: {', '.join(choices)}.")
    return lowered


def parse_timestamp(value: object) -> dt.datetime:
    """ISO 8601 text or a spreadsheet date/time; naive values are taken as UTC."""
    if value.__class__ is str:
        text = value.strip()
        if text.endswith("z"):  # RFC 3339 allows a lower-case "z"; fromisoformat does not
            text = text[:-1] + "Z"
        parsed = dt.datetime.fromisoformat(text)
    elif isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time())
    else:
        raise ValueError
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    if parsed.tzinfo is dt.UTC:
        return parsed
    return parsed.astimezone(dt.UTC)


def _optional_timestamp(value: object) -> dt.datetime | None:
    if value is None or (value.__class__ is str and not value.strip()):
        return None
    try:
        parsed = parse_timestamp(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{_show(value)} is not a valid timestamp. {_TIMESTAMP_ERROR}") from None
    if not timestamp_in_range(parsed):
        raise ValueError(f"{_show(value)} is out of range. {TIMESTAMP_RANGE_ERROR}")
    return parsed


def timestamp_in_range(value: dt.datetime) -> bool:
    return EARLIEST_TIMESTAMP <= value < LATEST_TIMESTAMP


def day_in_range(day: dt.date) -> bool:
    return EARLIEST_TIMESTAMP.date() <= day < LATEST_TIMESTAMP.date()


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(data: object) -> bool:
    """Whether any string (key or value) in parsed JSON holds a UTF-16 surrogate.

    JSON may spell one as an escape ("\\ud800") without its pair; Python decodes it to a
    string no UTF-8 encoder accepts, so PostgreSQL and every renderer refuse it later.
    Iterative, so JSON nested as deep as the decoder allows cannot overflow the stack here.
    """
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _lead_type(value: object) -> str | None:
    return _choice(value, LEAD_TYPES, required=True)


def _pricing_plan(value: object) -> str | None:
    return _choice(value, PRICING_PLANS, required=False)


# Field readers in LeadInput order.
_READERS: tuple[tuple[str, Callable[[object], object]], ...] = (
    ("customer_id", _positive_id),
    ("campaign_id", _positive_id),
    ("external_id", _required_text),
    ("lead_type", _lead_type),
    ("city", _optional_text),
    ("source", _optional_text),
    ("last_activity", _optional_timestamp),
    ("stage", _optional_text),
    ("pricing_plan", _pricing_plan),
    ("rescheduled_at", _optional_timestamp),
    ("created_at", _optional_timestamp),
)


def parse_lead(raw: Mapping[str, object]) -> tuple[LeadInput | None, FieldErrors]:
    """Validate one lead given as field name → value; unknown keys are ignored.

    Returns the lead, or ``None`` and every field's error (all of them, not the first).
    """
    get = raw.get
    values: list[object] = []
    errors: FieldErrors | None = None
    for name, read in _READERS:
        try:
            values.append(read(get(name)))
        except ValueError as exc:
            if errors is None:
                errors = {}
            errors[name] = [str(exc)]
    if errors is not None:
        return None, errors
    return LeadInput._make(values), {}


_TRUE_WORDS = frozenset({"1", "true", "yes"})
_FALSE_WORDS = frozenset({"0", "false", "no"})
OUTCOME_ERROR = "Enter whether the lead converted: 1/0, true/false or yes/no."


def parse_outcome(value: object) -> bool:
    """A past outcome: 1/0, true/false or yes/no in any case (spreadsheets: 1.0, TRUE)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else ""
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    if value is None or (isinstance(value, str) and not text):
        raise ValueError(f"This field is required in a file of past outcomes. {OUTCOME_ERROR}")
    raise ValueError(f"{_show(value)} is not an outcome. {OUTCOME_ERROR}")


# --- Mapping ----------------------------------------------------------------------------


def normalize_header(name: str) -> str:
    """Header matching ignores case, spacing and punctuation: "Customer ID" == "customer_id"."""
    return re.sub(r"[^0-9a-z]+", "", name.strip().lower())


@dataclass(frozen=True)
class LeadMapping:
    """How a file's columns become lead fields.

    JSON form (every key optional)::

        {"columns": {"external_id": "Prospect ID", "source": "Lead Source"},
         "constants": {"lead_type": "stale"},
         "empty_values": ["Select"],
         "encoding": "utf-8"}

    Fields not named in ``columns`` are looked up by their own name in the header.
    """

    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    empty_values: frozenset[str] = frozenset()
    encoding: str = "utf-8"

    @classmethod
    def from_json(cls, data: object) -> "LeadMapping":
        if data is None or data == {}:
            return cls()
        if not isinstance(data, dict):
            raise MappingError("The mapping must be a JSON object.")
        if has_lone_surrogate(data):
            raise MappingError("The mapping holds a lone UTF-16 surrogate escape (\\ud800-\\udfff).")
        unknown = set(data) - {"columns", "constants", "empty_values", "encoding"}
        if unknown:
            raise MappingError(f"Unknown mapping keys: {', '.join(sorted(unknown))}.")
        columns = data.get("columns", {})
        constants = data.get("constants", {})
        empty_values = data.get("empty_values", [])
        encoding = data.get("encoding", "utf-8")
        for label, section in (("columns", columns), ("constants", constants)):
            if not isinstance(section, dict) or not all(
                isinstance(k, str) and isinstance(v, str | int) for k, v in section.items()
            ):
                raise MappingError(f'"{label}" must map lead fields to strings.')
            bad = set(section) - set(MAPPABLE_FIELDS)
            if bad:
                raise MappingError(
                    f'"{label}" names unknown lead fields: {", ".join(sorted(bad))} '
                    f"(known: {', '.join(MAPPABLE_FIELDS)})."
                )
        if not isinstance(empty_values, list) or not all(isinstance(v, str) for v in empty_values):
            raise MappingError('"empty_values" must be a list of strings.')
        if not isinstance(encoding, str):
            raise MappingError('"encoding" must be a string such as "utf-8" or "cp1252".')
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise MappingError(f"Unknown encoding {encoding!r}.") from None
        return cls(
            columns={k: str(v) for k, v in columns.items()},
            constants={k: str(v) for k, v in constants.items()},
            empty_values=frozenset(v.strip().lower() for v in empty_values),
            encoding=encoding,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "constants": self.constants,
            "empty_values": sorted(self.empty_values),
            "encoding": self.encoding,
        }


@dataclass(frozen=True)
class ColumnPlan:
    """Which header position feeds which lead field, decided once per file."""

    positions: dict[str, int]
    constants: dict[str, str]
    header: list[str]

    def column_name(self, lead_field: str) -> str:
        position = self.positions.get(lead_field)
        return self.header[position] if position is not None else lead_field


def plan_columns(header: list[str], mapping: LeadMapping, *, given: Mapping[str, object]) -> ColumnPlan:
    """Match the header to lead fields; ``given`` holds values chosen outside the file.

    Raises :class:`ImportFileError` naming the missing columns when a required field
    has neither a column, a mapping constant nor a given value.
    """
    index = {normalize_header(name): position for position, name in enumerate(header) if name}
    found = ", ".join(name for name in header if name) or "(none: the first row is empty)"
    positions: dict[str, int] = {}
    missing_mapped: list[str] = []
    for lead_field, wanted in mapping.columns.items():
        if lead_field in mapping.constants:
            continue
        position = index.get(normalize_header(wanted))
        if position is None:
            missing_mapped.append(f"{wanted!r} (for {lead_field})")
        else:
            positions[lead_field] = position
    if missing_mapped:
        raise ImportFileError(
            f"The mapping names columns the file does not have: {', '.join(missing_mapped)}. "
            f"Columns found: {found}."
        )
    # A column mapped explicitly to one field is not also matched by name to another
    # ("Last Activity" mapped to stage must not feed last_activity as well).
    taken = set(positions.values())
    for lead_field in LEAD_FIELDS:
        if lead_field in positions or lead_field in mapping.constants:
            continue
        position = index.get(normalize_header(lead_field))
        if position is not None and position not in taken:
            positions[lead_field] = position
    constants = dict(mapping.constants)
    for name, value in given.items():
        if value is not None and name not in positions:
            constants.setdefault(name, str(value))
    missing = [f for f in REQUIRED_FIELDS if f not in positions and f not in constants]
    if missing:
        raise ImportFileError(
            f"Missing required columns: {', '.join(missing)}. Columns found: {found}. "
            "Rename them, add a mapping, or choose a fixed value."
        )
    return ColumnPlan(positions=positions, constants=constants, header=header)


def row_to_raw(row: list[object], plan: ColumnPlan, empty_values: frozenset[str]) -> dict[str, object]:
    raw: dict[str, object] = dict(plan.constants)
    width = len(row)
    for lead_field, position in plan.positions.items():
        value = row[position] if position < width else None
        if empty_values and value.__class__ is str and value.strip().lower() in empty_values:
            value = None
        raw[lead_field] = value
    return raw


# --- Files ------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")


def detect_format(path: Path, encoding: str = "utf-8") -> FileFormat:
    """Tell the format from the content, not the file name."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise ImportFileError("The file is empty.")
    if head.startswith(_ZIP_MAGIC):
        return "ods" if b"application/vnd.oasis.opendocument" in head[:200] else "xlsx"
    if head.startswith(_OLE_MAGIC):
        return "xls"
    wide_text = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if b"\x00" in head and not wide_text:
        raise ImportFileError("The file is not a spreadsheet: expected CSV, XLSX, XLS or ODS.")
    return "csv"


def check_encoding(path: Path, encoding: str) -> None:
    """Decode the whole file once so that a bad byte stops the import before any write."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: exc.start].count(b"\n")
                raise ImportFileError(
                    f"The file is not valid {encoding} text (line {line}, byte "
                    f'0x{chunk[exc.start]:02x}); save it as UTF-8 or set "encoding" in the mapping.'
                ) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ImportFileError(f"The file ends in the middle of a {encoding} character.") from None


@dataclass
class Table:
    """A file opened for reading: its header and its data rows as (row number, cells).

    Row numbers count like a spreadsheet: the header is row 1, so error reports point at
    the line a person sees when opening the file (blank rows are skipped but counted).
    """

    format: FileFormat
    header: list[str]
    rows: Iterator[tuple[int, list[object]]]


def _csv_table(path: Path, encoding: str) -> Table:
    check_encoding(path, encoding)
    handle = path.open(
        encoding="utf-8-sig" if encoding.lower() in ("utf-8", "utf8") else encoding, newline=""
    )
    # The delimiter is the candidate that splits the header line most often; csv.Sniffer
    # guesses wrong on short files and blank lines, a header line is unambiguous enough.
    first_line = handle.readline()
    handle.seek(0)
    delimiter = max(_DELIMITERS, key=first_line.count)
    if first_line.count(delimiter) == 0:
        delimiter = ","
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise ImportFileError("The file is empty.") from None
    except csv.Error as exc:
        handle.close()
        raise ImportFileError(f"The file is not readable as CSV: {exc}.") from None

    def rows() -> Iterator[tuple[int, list[object]]]:
        number = 1
        try:
            for row in reader:
                number += 1
                if row and any(row):
                    yield number, list(row)
        except csv.Error as exc:
            raise ImportFileError(f"CSV error on line {reader.line_num}: {exc}.") from None
        finally:
            handle.close()

    return Table(format="csv", header=[h.strip() for h in header], rows=rows())


def _sheet_table(path: Path, file_format: FileFormat) -> Table:
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
        iterator = sheet.iter_rows()
        header_row = next(iterator, None)
    except (CalamineError, ValueError, OSError) as exc:
        raise ImportFileError(f"The file is not a readable {file_format.upper()} workbook: {exc}") from None
    if header_row is None:
        raise ImportFileError("The spreadsheet's first sheet is empty.")

    def rows() -> Iterator[tuple[int, list[object]]]:
        for number, row in enumerate(iterator, start=2):
            if any(cell not in ("", None) for cell in row):
                yield number, list(row)

    return Table(format=file_format, header=[_text(cell) for cell in header_row], rows=rows())


def open_table(path: Path, *, encoding: str = "utf-8") -> Table:
    """Open a CSV (comma, semicolon, tab or pipe separated), XLSX, XLS or ODS file."""
    file_format = detect_format(path, encoding)
    if file_format == "csv":
        return _csv_table(path, encoding)
    return _sheet_table(path, file_format)


def count_data_rows(path: Path, table_format: FileFormat) -> int | None:
    """Row count for progress reporting (CSV only: lines minus the header).

    Approximate when quoted cells hold line breaks; progress is capped at 100%.
    """
    if table_format != "csv":
        return None
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(0, lines - 1)
