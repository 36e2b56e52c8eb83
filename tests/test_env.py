"""Reading settings from the environment: a bad value stops the start with its name."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_int


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 365), ("", 365), ("  ", 365), ("30", 30), ("1", 1), ("36500", 36_500)],
)
def test_an_integer_setting_reads_its_value_or_the_default(monkeypatch, raw, expected) -> None:
    if raw is None:
        monkeypatch.delenv("LEADRANK_TEST_DAYS", raising=False)
    else:
        monkeypatch.setenv("LEADRANK_TEST_DAYS", raw)
    assert env_int("LEADRANK_TEST_DAYS", 365, minimum=1, maximum=36_500) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", "LEADRANK_TEST_DAYS must be an integer, got 'abc'"),
        ("0", "LEADRANK_TEST_DAYS must be at least 1, got 0"),
        ("36501", "LEADRANK_TEST_DAYS must be at most 36500, got 36501"),
    ],
)
def test_an_integer_setting_out_of_bounds_names_itself(monkeypatch, raw, message) -> None:
    monkeypatch.setenv("LEADRANK_TEST_DAYS", raw)
    with pytest.raises(ImproperlyConfigured, match=message):
        env_int("LEADRANK_TEST_DAYS", 365, minimum=1, maximum=36_500)
