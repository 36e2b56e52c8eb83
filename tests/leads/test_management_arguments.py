"""The bounded option types the management commands share (leads.management.arguments): no
database, no command."""

import argparse
from collections.abc import Callable

import pytest

from leads.management.arguments import float_between, int_at_least, int_between


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (int_at_least(1), "1", 1),
        (int_at_least(1), "1000000", 1_000_000),
        (int_between(1, 366), "366", 366),
        (int_between(0, 10), "0", 0),
        (float_between(0.05, 28.0), "0.05", 0.05),
        (float_between(0.05, 28.0), "28", 28.0),
        (float_between(0, 1, above=True, below=True), "0.2", 0.2),
    ],
)
def test_a_value_within_the_bounds_is_taken(parse: Callable[[str], float], text: str, value: float) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (int_at_least(1), "0", "must be at least 1, got 0"),
        (int_at_least(1000), "-5", "must be at least 1,000, got -5"),
        (int_between(1, 366), "0", "must be between 1 and 366, got 0"),
        (int_between(1, 366), "367", "must be between 1 and 366, got 367"),
        (
            int_between(1, 10_000, maximum_from="LEADRANK_API_BATCH_MAX"),
            "10001",
            "must be between 1 and 10,000 (LEADRANK_API_BATCH_MAX), got 10001",
        ),
        (float_between(0.05, 28.0), "0.01", "must be between 0.05 and 28, got 0.01"),
        (float_between(0.05, 28.0), "28.5", "must be between 0.05 and 28, got 28.5"),
        (float_between(0.05, 28.0), "nan", "must be between 0.05 and 28, got nan"),
        (float_between(0.05, 28.0), "inf", "must be between 0.05 and 28, got inf"),
        (float_between(0.05, 28.0), "1e7", "must be between 0.05 and 28, got 1e7"),
        (float_between(0, 1000, above=True), "0", "must be greater than 0 and at most 1,000, got 0"),
        (float_between(0, 1, above=True, below=True), "1", "must be greater than 0 and less than 1, got 1"),
    ],
)
def test_a_value_out_of_bounds_is_refused_with_the_bounds_and_the_value(
    parse: Callable[[str], float], text: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refusal:
        parse(text)
    assert str(refusal.value) == message


def test_a_value_that_is_no_number_gets_argparse_s_own_message() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--leads", type=int_at_least(1))
    parser.add_argument("--days", type=float_between(0.05, 28.0))
    with pytest.raises(argparse.ArgumentError, match="argument --leads: invalid int value: 'many'"):
        parser.parse_args(["--leads", "many"])
    with pytest.raises(argparse.ArgumentError, match="argument --days: invalid float value: 'week'"):
        parser.parse_args(["--days", "week"])
    with pytest.raises(argparse.ArgumentError, match="argument --leads: must be at least 1, got 0"):
        parser.parse_args(["--leads", "0"])
