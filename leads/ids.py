"""Row ids: every primary key is a PostgreSQL ``bigint``. A number past it is no id, and is
refused (or matches nothing) before it reaches a query, which would fail on it."""

MAX_ID = 2**63 - 1
# Digits of MAX_ID: a longer string of digits is no id (and int() of thousands of digits
# raises instead of answering).
_MAX_DIGITS = len(str(MAX_ID))


def parse_id(text: str | None) -> int | None:
    """The row id a query parameter or search term spells, or ``None`` when it spells none.

    Only ASCII digits: ``str.isdigit()`` alone accepts "²", which ``int()`` refuses, and
    "٣", which it reads as 3. Only ids a ``bigint`` primary key can hold (1 to 2**63 - 1),
    so the value is safe to put in any lookup.
    """
    if not text or not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
