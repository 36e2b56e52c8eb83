"""Pure parsing of lead data: files (CSV, XLSX, XLS, ODS) and JSON objects into typed rows.

Nothing here touches the database. The same :func:`parse_lead` validates a lead pushed
through the API and a row read from a file, so both paths give the same field errors.
Referential checks (does customer 7 exist, does campaign 4 belong to it) need the
database and live in :mod:`leads.services`.
"""

import codecs
import csv
import datetime as dt
import itertools
import json
import math
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

from python_calamine import CalamineError, CalamineWorkbook, SheetTypeEnum, SheetVisibleEnum

from leads.ids import MAX_ID, parse_id

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
# A UTF-16 surrogate standing alone in a Python string: no UTF-8 encoder accepts it.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ERROR = "Text may not contain lone UTF-16 surrogates (\\ud800-\\udfff)."


def _text(value: object) -> str:
    if value is None:
        return ""
    if value.__class__ is str:
        text: str = value.strip()
    elif isinstance(value, float) and value.is_integer():
        # Spreadsheets store 660737 as 660737.0.
        return str(int(value))
    elif isinstance(value, float) and not math.isfinite(value):
        # JSON's 1e400 is read as infinity: stored, it was the text "inf".
        raise ValueError("Expected text or a number, not an infinite one or NaN.")
    elif isinstance(value, _SCALARS) and not isinstance(value, bool):
        text = str(value).strip()
    else:
        raise ValueError("Expected text, a number or a date, not a list, object or boolean.")
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL; one such value would fail a whole batch.
        raise ValueError("Text may not contain NUL (\\x00) characters.")
    if not text.isascii() and _SURROGATE.search(text):
        # Nor a lone surrogate (which a file read as UTF-7 can hold), for the same reason.
        raise ValueError(_SURROGATE_ERROR)
    return text


def _show(value: object) -> str:
    """A value as quoted in an error message (never raises)."""
    if isinstance(value, str):
        return repr(value.strip())
    if isinstance(value, float) and value.is_integer():
        return repr(str(int(value)))
    return repr(str(value)) if isinstance(value, _SCALARS) else f"a {type(value).__name__}"


def _show_timestamp(value: object) -> str:
    """A value refused as a timestamp: spreadsheet cells formatted as a time of day or a
    duration carry no date, which is what the reader needs to be told."""
    if isinstance(value, dt.time):
        return f"{str(value)!r} (a time of day with no date)"
    if isinstance(value, dt.timedelta):
        return f"{str(value)!r} (a duration, not a date)"
    return _show(value)


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
    """An id: an int, an integral float (spreadsheets), or ASCII digits, within bigint."""
    if value.__class__ is int:
        number: int | None = value if 0 < value <= MAX_ID else None
    elif value is None or (value.__class__ is str and not value.strip()):
        raise ValueError(_REQUIRED)
    elif isinstance(value, float) and value.is_integer():
        number = int(value) if 0 < value <= MAX_ID else None
    elif value.__class__ is str:
        number = parse_id(value.strip())
    else:
        number = None
    if number is None:
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
        raise ValueError(f"{_show_timestamp(value)} is not a valid timestamp. {_TIMESTAMP_ERROR}") from None
    if not timestamp_in_range(parsed):
        raise ValueError(f"{_show(value)} is out of range. {TIMESTAMP_RANGE_ERROR}")
    return parsed


def timestamp_in_range(value: dt.datetime) -> bool:
    return EARLIEST_TIMESTAMP <= value < LATEST_TIMESTAMP


def day_in_range(day: dt.date) -> bool:
    return EARLIEST_TIMESTAMP.date() <= day < LATEST_TIMESTAMP.date()


def _json_strings(data: object) -> Iterator[str]:
    """Every string (key or value) in parsed JSON. Iterative, so JSON nested as deep as the
    decoder allows cannot overflow the stack here."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def has_lone_surrogate(data: object) -> bool:
    """Whether any string (key or value) in parsed JSON holds a UTF-16 surrogate.

    JSON may spell one as an escape ("\\ud800") without its pair; Python decodes it to a
    string no UTF-8 encoder accepts, so PostgreSQL and every renderer refuse it later.
    """
    return any(not text.isascii() and _SURROGATE.search(text) for text in _json_strings(data))


def has_nul(data: object) -> bool:
    """Whether any string (key or value) in parsed JSON holds a NUL ("\\u0000" in JSON),
    which neither PostgreSQL text nor jsonb can store."""
    return any("\x00" in text for text in _json_strings(data))


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


# The key of an error about a lead (a file's row) as a whole rather than one of its fields,
# as the API names it; an import's error report shows it as the row's column.
ROW_ERRORS = "non_field_errors"


class _RejectedRow(dict[str, object]):
    """What :func:`row_to_raw` gives for a row that is no lead as it stands: its values as
    usual, and the ``errors`` :func:`parse_lead` returns without reading them. A class of
    its own rather than a key, so that no lead sent as JSON can pass for one."""

    def __init__(self, raw: dict[str, object], errors: FieldErrors) -> None:
        super().__init__(raw)
        self.errors = errors


def parse_lead(
    raw: Mapping[str, object], *, latest: dt.datetime | None = None
) -> tuple[LeadInput | None, FieldErrors]:
    """Validate one lead given as field name → value; unknown keys are ignored.

    ``latest`` (see :func:`latest_moment_for`) bounds ``last_activity`` and ``created_at``.
    Returns the lead, or ``None`` and every field's error (all of them, not the first).
    """
    if isinstance(raw, _RejectedRow):
        return None, raw.errors
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
    lead = LeadInput._make(values)
    if latest is not None:
        future = {
            name: [future_moment_error(name, get(name))]
            for name, value in (("last_activity", lead.last_activity), ("created_at", lead.created_at))
            if value is not None and value > latest
        }
        if future:
            return None, future
    return lead, {}


# last_activity and created_at are past moments. One later than when the lead reached us
# (give or take the sender's clock) is a mistake, most often a local time sent without its
# offset. Stored, a future last_activity would rank a stale lead first until that date, and
# a future created_at would hide a live lead (and hold its SLA clock) until then.
CLOCK_SKEW = dt.timedelta(minutes=15)


def latest_moment_for(received_at: dt.datetime) -> dt.datetime:
    """The latest ``last_activity`` or ``created_at`` a lead received at ``received_at`` may carry."""
    return received_at + CLOCK_SKEW


def future_moment_error(field: str, value: object) -> str:
    return f"{_show(value)} is in the future: {field} is a past moment; send it in UTC or with its offset."


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


# Codecs that turn bytes into text but are no character set of a file: the escape codecs
# make NULs and lone surrogates out of plain ASCII ("\\ud800"), "undefined" refuses every
# byte, idna and punycode spell domain names. Codecs from bytes to bytes (base64, zlib) or
# text to text (rot13) are refused as not text encodings.
_NOT_FILE_ENCODINGS = frozenset({"unicode-escape", "raw-unicode-escape", "undefined", "idna", "punycode"})


def check_file_encoding(encoding: str) -> None:
    """Refuse (:class:`MappingError`) an ``encoding`` that is not a character set a text
    file can be written in."""
    try:
        codec = codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a name holding NUL
        raise MappingError(f'Unknown encoding {encoding!r} in "encoding".') from None
    # CodecInfo has no public flag for this; the private one is what str.encode itself checks.
    if not codec._is_text_encoding or codec.name in _NOT_FILE_ENCODINGS:
        raise MappingError(
            f'"encoding": {encoding!r} is not a character set of text files; '
            'name one such as "utf-8", "cp1252" or "utf-16".'
        )


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
        # The mapping is kept on an admin import job (jsonb) and its strings end up in lead
        # fields and messages: text PostgreSQL cannot store is refused here, before any of that.
        for key, value in data.items():
            where = json.dumps(key)  # quoted and escaped: the key may hold such text itself
            if has_lone_surrogate([key, value]):
                raise MappingError(
                    f"The mapping holds a lone UTF-16 surrogate escape (\\ud800-\\udfff) in {where}."
                )
            if has_nul([key, value]):
                raise MappingError(
                    f"The mapping holds a NUL character (\\u0000) in {where}, which no text can store."
                )
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
        check_file_encoding(encoding)
        constants = {k: str(v) for k, v in constants.items()}
        # A value no lead can have would reject every row of the file, one line each.
        _, errors = parse_lead(constants)
        wrong = [f"{name}: {' '.join(errors[name])}" for name in constants if name in errors]
        if wrong:
            raise MappingError(f'"constants" holds values no lead can have: {"; ".join(wrong)}')
        return cls(
            columns={k: str(v) for k, v in columns.items()},
            constants=constants,
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
    has neither a column, a mapping constant nor a given value, and naming both columns
    when two header cells match the name a field is looked up by ("City" and "city").
    """
    index: dict[str, int] = {}
    # A normalised name held by more than one header cell → its second position. It is an
    # error only once a field is looked up by that name: an ignored column may repeat.
    twins: dict[str, int] = {}
    for column, name in enumerate(header):
        if name:
            key = normalize_header(name)
            if key in index:
                twins.setdefault(key, column)
            else:
                index[key] = column

    def find(name: str, *, wanted_for: str) -> int | None:
        key = normalize_header(name)
        if key in twins:
            first, second = index[key], twins[key]
            raise ImportFileError(
                f"Columns {first + 1} ({header[first]!r}) and {second + 1} ({header[second]!r}) "
                f"both match {wanted_for}; rename or remove one of them."
            )
        return index.get(key)

    found = ", ".join(name for name in header if name) or "(none: the first row is empty)"
    positions: dict[str, int] = {}
    missing_mapped: list[str] = []
    for lead_field, wanted in mapping.columns.items():
        if lead_field in mapping.constants:
            continue
        position = find(wanted, wanted_for=f"{wanted!r} (for {lead_field})")
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
        position = find(lead_field, wanted_for=lead_field)
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
    """A row's cells as field name → value for :func:`parse_lead`.

    A row shorter than the header lacks its last cells: they are empty. A row longer than
    the header, past trailing empty cells (a spreadsheet's padding, "a,b,c,,"), has values
    no column names: most often a CSV value holding the delimiter unquoted ("Thane, Outskirts"),
    which moved every later value one column on. Such a row is rejected as a whole.
    """
    raw: dict[str, object] = dict(plan.constants)
    width = len(row)
    for lead_field, position in plan.positions.items():
        value = row[position] if position < width else None
        if empty_values and value.__class__ is str and value.strip().lower() in empty_values:
            value = None
        raw[lead_field] = value
    if width > len(plan.header):
        return _check_extra_cells(raw, row, len(plan.header))
    return raw


def _check_extra_cells(raw: dict[str, object], row: list[object], columns: int) -> dict[str, object]:
    width = len(row)
    while width > columns and _is_blank(row[width - 1]):
        width -= 1
    if width == columns:
        return raw
    return _RejectedRow(
        raw,
        {
            ROW_ERRORS: [
                f"The row has {width} cells, the header has {columns}: "
                "put a value that holds the delimiter in quotes."
            ]
        },
    )


def _is_blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


# --- Files ------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
_DECODE_CHUNK_BYTES = 1 << 20
# Given to the CSV reader as one more line after the file's last. The reader takes a value
# whose opening quote is never closed to the end of the file (the csv module's default, not
# strict), so one stray quote made every later row part of one cell: rows lost without an
# error. Read inside such a value, the mark ends it; read as a line of its own, the file's
# values were all closed. Private-use characters: no file means them.
_END_MARK = "\ue000leadrank:end-of-file\ue000"

# The csv module refuses a cell over 131,072 characters with csv.Error, which would stop the
# whole import at that row. Any length is read instead, so that the row alone is rejected
# by the fields' own length check (TEXT_MAX_LENGTH). Memory stays bounded by the file: a
# cell costs about six times its length while its row is read (the line as text, the
# reader's 4-byte-per-character buffer, the cell), so a 200 MB cell, the most the admin
# accepts (LEADRANK_IMPORT_MAX_BYTES), peaks near 1.3 GB, then is freed. The limit is
# process-wide and only ever raised here; 2**31 - 1 is the most every platform's C long holds.
_CSV_FIELD_SIZE_LIMIT = 2**31 - 1
csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_SIZE_LIMIT))


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
        raise ImportFileError(
            "The file is not a spreadsheet: expected CSV, XLSX, XLS or ODS. It holds NUL bytes, "
            "which no text file in a one-byte encoding does: if it is UTF-16 text without a byte "
            'order mark, set "encoding" in the mapping to "utf-16-le" (or "utf-16-be").'
        )
    return "csv"


def check_encoding(path: Path, encoding: str) -> None:
    """Decode the whole file once so that a bad byte stops the import before any write."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(_DECODE_CHUNK_BYTES):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts in what the decoder was given: the bytes it held back from
                # the previous chunk (a character cut by the read boundary), then this chunk.
                data, start = exc.object, exc.start
                held = len(data) - len(chunk)
                # `line` counted the held bytes' line breaks; one of these slices is empty.
                line += data[held:start].count(b"\n") - data[start:held].count(b"\n")
                raise ImportFileError(
                    f"The file is not valid {encoding} text (line {line}, byte 0x{data[start]:02x} at "
                    f"offset {handle.tell() - len(data) + start}); save it as UTF-8 or set "
                    '"encoding" in the mapping.'
                ) from None
            except UnicodeError as exc:  # e.g. "UTF-16 stream does not start with BOM"
                raise _not_valid_text(encoding, exc) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeError:
            raise ImportFileError(f"The file ends in the middle of a {encoding} character.") from None


def _not_valid_text(encoding: str, exc: UnicodeError) -> ImportFileError:
    return ImportFileError(
        f'The file is not valid {encoding} text ({exc}); save it as UTF-8 or set "encoding" in the mapping.'
    )


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
    # check_encoding read the whole file, but the readers still catch UnicodeError: a file
    # replaced while it is read must not end in a traceback either.
    try:
        # The delimiter is the candidate that splits the header line most often; csv.Sniffer
        # guesses wrong on short files and blank lines, a header line is unambiguous enough.
        first_line = handle.readline()
        handle.seek(0)
        delimiter = max(_DELIMITERS, key=first_line.count)
        if first_line.count(delimiter) == 0:
            delimiter = ","
        reader = csv.reader(itertools.chain(handle, [_END_MARK]), delimiter=delimiter)
        header = [cell.strip() for cell in next(reader)]
        if header == [_END_MARK]:
            # Nothing before the mark: a file holding only a byte order mark, or blank.
            raise StopIteration
        if header and header[-1].endswith(_END_MARK):
            raise _unclosed_quote("The header", 1)
        check_header(header)
    except StopIteration:
        handle.close()
        raise ImportFileError("The file is empty.") from None
    except csv.Error as exc:
        handle.close()
        raise ImportFileError(f"The file is not readable as CSV: {exc}.") from None
    except UnicodeError as exc:
        handle.close()
        raise _not_valid_text(encoding, exc) from None
    except ImportFileError:
        handle.close()
        raise

    def rows() -> Iterator[tuple[int, list[object]]]:
        number = 1
        line = reader.line_num  # the last line of the record before
        try:
            for row in reader:
                if row and row[-1].endswith(_END_MARK):
                    if row == [_END_MARK]:
                        return  # the line after the file's last one, not data
                    raise _unclosed_quote(f"Row {number + 1}", line + 1)
                number += 1
                line = reader.line_num
                if row and any(row):
                    yield number, list(row)
        except csv.Error as exc:
            raise ImportFileError(f"CSV error on line {reader.line_num}: {exc}.") from None
        except UnicodeError as exc:
            raise _not_valid_text(encoding, exc) from None
        finally:
            handle.close()

    return Table(format="csv", header=header, rows=rows())


# Spreadsheets are read by calamine (Rust) in a child process. Some workbooks make it ask for
# more memory than any machine has: it holds the sheet as a grid from its first to its last
# value, so one value in the last cell (XFD1048576) of a 5 KB XLSX asks for 17 billion cells,
# and damaged XLS records ask for as much. Rust aborts the process when an allocation fails:
# no exception, the web worker that checked the upload (or the Celery worker) is gone, with
# the requests it was serving. In a child, only the child goes and the file gets a message.
# The child sends the header, then the rows in batches, pickled, on its stdout.
#
# Allocations that do succeed are bounded too (limit_reader): a value in cell XFD6000 of a
# 2 KB XLSX, or an 849-byte ODS repeating an empty row 20,000 times over 1,000 columns, made
# the reader take 2.5-3 GB (and more for larger numbers: the machine's memory). A sheet of
# real data needs about 30 times its file's size (a 9 MB XLSX of 300,000 rows: 245 MB).
READER_MEMORY_BASE_BYTES = 2 * 1024**3
READER_MEMORY_PER_FILE_BYTE = 40
# And its CPU time: calamine loops for ever on some damaged ODS files (an 834-byte one whose
# XML stops after a row), and the upload or the task waited for it for ever. Real data takes
# about 0.3 s per MB of XLSX.
READER_CPU_BASE_SECONDS = 20
READER_CPU_SECONDS_PER_MB = 2
_SHEET_BATCH_ROWS = 1_000
_SHEET_FORMATS: dict[str, FileFormat] = {"xlsx": "xlsx", "xls": "xls", "ods": "ods"}
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
_SHEET_READER = (
    f"import sys; sys.path.insert(0, {_PROJECT_ROOT!r}); "
    "from leads.importers import limit_reader, serve_sheet; "
    "limit_reader(int(sys.argv[3]), int(sys.argv[4])); serve_sheet(sys.argv[1], sys.argv[2])"
)


class ReaderLimits(NamedTuple):
    memory_bytes: int  # address space
    cpu_seconds: int


def reader_limits_for_size(size: int) -> ReaderLimits:
    """What the reader of a spreadsheet file of ``size`` bytes may use."""
    return ReaderLimits(
        memory_bytes=READER_MEMORY_BASE_BYTES + READER_MEMORY_PER_FILE_BYTE * size,
        cpu_seconds=READER_CPU_BASE_SECONDS + math.ceil(READER_CPU_SECONDS_PER_MB * size / 1024**2),
    )


def limit_reader(memory_bytes: int, cpu_seconds: int) -> None:
    """In the reader's child process, before it reads: the limits of :func:`reader_limits_for_size`.

    Past the memory limit an allocation fails (Rust aborts the child; Python raises
    MemoryError); past the CPU time the kernel ends it (SIGXCPU, then SIGKILL a little later).
    """
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


def _unclosed_quote(where: str, line: int) -> ImportFileError:
    return ImportFileError(
        f"{where} (from line {line}) opens a quoted value that is never closed, so every line "
        "after it would be read into that one value. Close the quote, or write a quote inside a "
        'value twice ("").'
    )


def _sheet_table(path: Path, file_format: FileFormat) -> Table:
    """Read the first visible sheet in a child process (see above); the rows stream from it."""
    # Not a pipe: a child writing there never blocks on it. Closed by stop().
    errors = tempfile.TemporaryFile()  # noqa: SIM115
    limits = reader_limits_for_size(path.stat().st_size)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _SHEET_READER, file_format, str(path), *map(str, limits)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            # What Rust prints as it aborts is one line then ("memory allocation of … failed").
            env={**os.environ, "RUST_BACKTRACE": "0"},
        )
    except OSError:
        errors.close()
        raise
    assert process.stdout is not None
    output = process.stdout

    def stop() -> None:
        if process.poll() is None:
            process.kill()
        output.close()
        process.wait()
        errors.close()

    def receive() -> tuple[str, Any]:
        try:
            message: tuple[str, Any] = pickle.load(output)  # noqa: S301 (our own child's output)
        except (EOFError, pickle.UnpicklingError):
            process.wait()
            errors.seek(0)
            last_words = errors.read(2000).decode("utf-8", "replace").strip().splitlines()
            stop()
            if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
                raise _reader_stopped(file_format, limits.cpu_seconds) from None
            raise _reader_died(file_format, last_words[0] if last_words else "") from None
        if message[0] == "error":
            stop()
            raise ImportFileError(message[1])
        return message

    try:
        _, header = receive()
    except BaseException:
        stop()
        raise

    def rows() -> Iterator[tuple[int, list[object]]]:
        try:
            while (message := receive())[0] == "rows":
                yield from message[1]
        finally:
            stop()

    generator = rows()
    # A table dropped before its rows are read (a header that lacks a column) ends its child too.
    weakref.finalize(generator, stop)
    return Table(format=file_format, header=header, rows=generator)


def _reader_died(file_format: FileFormat, last_words: str) -> ImportFileError:
    said = f" ({last_words})" if last_words else ""
    return ImportFileError(
        f"The file is not a readable {file_format.upper()} workbook: it is damaged, or reading "
        f"it needs more memory than there is or than a file of its size may use{said}. A value "
        "far below or to the right of the data (such as in the sheet's last row or column) "
        "makes a sheet too large to read: delete the rows and columns after the data, or "
        "export the sheet as CSV."
    )


def _reader_stopped(file_format: FileFormat, cpu_seconds: int) -> ImportFileError:
    return ImportFileError(
        f"The file is not a readable {file_format.upper()} workbook: reading it was stopped "
        f"after {cpu_seconds} s, far longer than a file of its size takes, so it is damaged. "
        "Save it again from the spreadsheet program, or export it as CSV."
    )


def serve_sheet(file_format: str, path: str, out: IO[bytes] | None = None) -> None:
    """The child process of :func:`_sheet_table`: read the file's first visible sheet and send
    ("header", cells), then ("rows", [(number, cells), ...]) batches and ("end", None), or
    ("error", message) for a file that cannot be read."""
    stream = out if out is not None else sys.stdout.buffer
    sheet_format = _SHEET_FORMATS[file_format]
    try:
        try:
            table = _read_sheet(Path(path), sheet_format)
            pickle.dump(("header", table.header), stream)
            batch: list[tuple[int, list[object]]] = []
            for item in table.rows:
                batch.append(item)
                if len(batch) >= _SHEET_BATCH_ROWS:
                    pickle.dump(("rows", batch), stream)
                    batch = []
            pickle.dump(("rows", batch), stream)
            pickle.dump(("end", None), stream)
        except ImportFileError as exc:
            pickle.dump(("error", str(exc)), stream)
        except MemoryError:  # past limit_reader's bound, in Python rather than in calamine
            pickle.dump(("error", str(_reader_died(sheet_format, "out of memory"))), stream)
        stream.flush()
    except BrokenPipeError:  # the parent stopped reading (it needed only the first rows)
        os._exit(0)


def _read_sheet(path: Path, file_format: FileFormat) -> Table:
    try:
        # Not from_path: it picks the reader by the file name's extension, so an XLS named
        # .xlsx would fail as "invalid Zip archive". From a file object calamine tells the
        # format by content, as detect_format did (it reads the file into memory, once).
        with path.open("rb") as handle:
            workbook = CalamineWorkbook.from_filelike(handle)
        sheet = workbook.get_sheet_by_name(_first_visible_sheet(workbook))
        iterator = sheet.iter_rows()
        header_row = next(iterator, None)
    except (CalamineError, ValueError, OSError) as exc:
        raise ImportFileError(f"The file is not a readable {file_format.upper()} workbook: {exc}") from None
    except BaseException as exc:
        if not _is_reader_panic(exc):
            raise
        raise _unreadable_workbook(file_format, exc) from None
    if header_row is None:
        raise ImportFileError(f"The spreadsheet's first visible sheet ({sheet.name!r}) is empty.")

    def rows() -> Iterator[tuple[int, list[object]]]:
        try:
            for number, row in enumerate(iterator, start=2):
                if any(cell not in ("", None) for cell in row):
                    yield number, list(row)
        except BaseException as exc:
            if not _is_reader_panic(exc):
                raise
            raise _unreadable_workbook(file_format, exc) from None

    header = [_header_text(cell) for cell in header_row]
    check_header(header)
    return Table(format=file_format, header=header, rows=rows())


def _first_visible_sheet(workbook: CalamineWorkbook) -> str:
    """The name of the workbook's first worksheet that is not hidden: the first sheet a
    person sees on opening the file (a hidden first sheet held another list, imported in its
    place). The first sheet when every one is hidden."""
    sheets = workbook.sheets_metadata
    for sheet in sheets:
        if sheet.visible == SheetVisibleEnum.Visible and sheet.typ == SheetTypeEnum.WorkSheet:
            return sheet.name
    return sheets[0].name


def _is_reader_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of calamine (Rust), which pyo3 raises as ``PanicException``.

    Damaged workbooks make calamine panic rather than fail (an XLS cut short by an interrupted
    download indexes past its end). pyo3 derives that exception from BaseException, so that
    no ``except Exception`` catches it: in the admin it was a 500 instead of a message, in a
    task it escaped the handler that fails the job. The class is not importable by name.
    """
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def _unreadable_workbook(file_format: FileFormat, exc: BaseException) -> ImportFileError:
    return ImportFileError(
        f"The file is not a readable {file_format.upper()} workbook: it is damaged or cut short "
        f"({exc}). Save it again from the spreadsheet program, or export it as CSV."
    )


def _header_text(cell: object) -> str:
    """A spreadsheet header cell as text; it may hold a number, a date or a boolean too."""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return "" if cell is None else str(cell).strip()


# A spreadsheet's widest sheet (column XFD). The header of a sheet is as wide as its widest
# row: one stray value in column ZZZZZ of a 2 KB XLSX made a header of 12 million columns,
# which the preview stored and rendered (272 MB of page); a CSV line of commas did the same.
MAX_COLUMNS = 16_384


def check_header(header: list[str]) -> None:
    """Refuse a header wider than any spreadsheet (:data:`MAX_COLUMNS`) or holding text
    PostgreSQL cannot store (the preview keeps the header, and error reports name columns by
    it). The format check only looks for NUL in the first 64 KB, and a cell is checked only
    when it feeds a lead field."""
    if len(header) > MAX_COLUMNS:
        raise ImportFileError(
            f"The file has {len(header):,} columns; a lead file has at most {MAX_COLUMNS:,}, as "
            "many as a spreadsheet. Delete the empty columns after the data, or the stray value "
            "far to the right of it."
        )
    for position, name in enumerate(header, start=1):
        if "\x00" in name:
            problem = "a NUL (\\x00) character"
        elif not name.isascii() and _SURROGATE.search(name):
            problem = "a lone UTF-16 surrogate (\\ud800-\\udfff)"
        else:
            continue
        raise ImportFileError(
            f"Column {position} of the header ({name[:40]!r}) holds {problem}, which cannot be "
            "stored; remove it from the file."
        )


def open_table(path: Path, *, encoding: str = "utf-8") -> Table:
    """Open a CSV (comma, semicolon, tab or pipe separated), XLSX, XLS or ODS file.

    Raises :class:`MappingError` for an ``encoding`` no text file is written in (a mapping
    read by :meth:`LeadMapping.from_json` was checked already; other callers were not).
    """
    check_file_encoding(encoding)
    encoding = _byte_order_mark_encoding(path) or encoding
    file_format = detect_format(path, encoding)
    if file_format == "csv":
        return _csv_table(path, encoding)
    return _sheet_table(path, file_format)


def _byte_order_mark_encoding(path: Path) -> str | None:
    """The encoding a byte order mark at the start of the file names. Spreadsheet programs
    save "Unicode text" (UTF-16) and "CSV UTF-8" so. The mark is unambiguous: it decides over
    the mapping's "encoding", which such a file then needs not give."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"  # read as "utf-8-sig", which drops the mark
    # UTF-32 first: its little-endian mark begins with UTF-16's.
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def count_data_rows(path: Path, table_format: FileFormat) -> int | None:
    """Row count for progress reporting (CSV only: lines minus the header).

    Approximate when quoted cells hold line breaks; progress is capped at 100%.
    """
    if table_format != "csv":
        return None
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(0, lines - 1)
