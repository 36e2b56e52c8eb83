"""The API's JSON parser: DRF's, refusing two texts that would otherwise end as a 500.

- A lone UTF-16 surrogate escape (``"\\ud800"``): such a string could be neither stored
  (PostgreSQL's COPY would fail the whole batch of valid leads with it) nor echoed in an
  error message (the renderer cannot encode it): a 500 far from its cause. It is refused at
  parsing, as the malformed text it is.
- JSON nested deeper than Python's decoder can follow: its ``RecursionError`` is not one of
  the errors DRF's parser turns into a 400.
"""

import codecs
import io
import re
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from leads.importers import has_lone_surrogate

LONE_SURROGATE_MESSAGE = (
    "JSON parse error - the text holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without "
    "its pair); send valid Unicode text."
)

TOO_DEEP_MESSAGE = "JSON parse error - the text is nested too deeply."

# In UTF-8 text a surrogate can only arrive as an escape, so without one nothing is walked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class StrictJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        raw = stream.read()
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:  # nested deeper than the decoder can follow (DRF lets it out)
            raise ParseError(TOO_DEEP_MESSAGE) from None
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        # super() has decoded the body, so the encoding is a known one. In another encoding
        # (a client may send charset=utf-16) the escape test below does not apply.
        utf8 = codecs.lookup(encoding).name == "utf-8"
        if (not utf8 or _SURROGATE_ESCAPE.search(raw)) and has_lone_surrogate(data):
            raise ParseError(LONE_SURROGATE_MESSAGE)
        return data
