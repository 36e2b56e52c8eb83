import io
import json

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_ingest_benchmark_prints_its_ratios_as_a_last_json_line():
    out = io.StringIO()
    call_command("bench", "ingest", "--rows", "300", "--batch", "100", stdout=out)
    lines = out.getvalue().strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["rows"] == 300
    for name in ("copy_rows_s", "cli_rows_s", "cli_ratio", "api_rows_s", "api_ratio"):
        assert figures[name] > 0
    assert any(line.startswith("raw COPY") for line in lines)
