"""Bounded numbers for management commands' options, checked by argparse itself.

``type=int_between(1, 366)`` makes a bad value a parse error: ``manage.py bench_sla --days 0``
exits with status 2 and the one line ``manage.py bench_sla: error: argument --days: must be
between 1 and 366, got 0``; ``call_command("bench_sla", "--days", "0")`` raises
``CommandError("Error: argument --days: ...")``. Either way it is refused before the command
does anything (a benchmark or a simulation otherwise failed minutes in, with a traceback).

Django hands keyword options of ``call_command`` (``call_command("bench_sla", days=0)``) to
the command without parsing them: pass bounded options as strings.
"""

import argparse
import math
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


def _figure(value: float) -> str:
    """1000000 as 1,000,000, 28.0 as 28, 0.05 as 0.05."""
    if math.isfinite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return str(value)


def _bounds(minimum: float | None, maximum: float | None, *, above: bool = False, below: bool = False) -> str:
    if minimum is not None and maximum is not None and not above and not below:
        return f"between {_figure(minimum)} and {_figure(maximum)}"
    parts = []
    if minimum is not None:
        parts.append(f"{'greater than' if above else 'at least'} {_figure(minimum)}")
    if maximum is not None:
        parts.append(f"{'less than' if below else 'at most'} {_figure(maximum)}")
    return " and ".join(parts)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``."""
    return int_between(minimum, None)


def int_between(minimum: int, maximum: int | None, *, maximum_from: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``minimum`` to ``maximum``, both included
    (``None``: no upper bound). ``maximum_from`` names the setting the maximum comes from,
    shown in the message."""
    bounds = _bounds(minimum, maximum) + (f" ({maximum_from})" if maximum_from else "")

    def parse(text: str) -> int:
        value = int(text)  # a ValueError is argparse's "invalid int value: 'x'"
        if value < minimum or (maximum is not None and value > maximum):
            raise _out_of_bounds(bounds, text)
        return value

    parse.__name__ = "int"
    return parse


def float_between(
    minimum: float, maximum: float, *, above: bool = False, below: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number from ``minimum`` to ``maximum``; ``above``
    and ``below`` leave out the minimum and the maximum themselves."""
    bounds = _bounds(minimum, maximum, above=above, below=below)

    def parse(text: str) -> float:
        value = float(text)  # a ValueError is argparse's "invalid float value: 'x'"
        too_low = value <= minimum if above else value < minimum
        too_high = value >= maximum if below else value > maximum
        if not math.isfinite(value) or too_low or too_high:
            raise _out_of_bounds(bounds, text)
        return value

    parse.__name__ = "float"
    return parse


def _out_of_bounds(bounds: str, text: str) -> argparse.ArgumentTypeError:
    # The value as it was written: "got 1e7", not "got 10,000,000.0".
    return argparse.ArgumentTypeError(f"must be {bounds}, got {text.strip()}")


def _no_usage(file: object = None) -> None:
    return None


def errors_on_one_line(parser: CommandParser) -> CommandParser:
    """From the command line, a bad argument prints only argparse's ``...: error: ...`` line
    (and exits with status 2), not the usage block first: with Django's own options that
    block is several lines and buries the reason. ``--help`` still shows it. Call it on each
    subcommand's parser too (``add_subparsers().add_parser(...)``): each has its own usage."""
    parser.print_usage = _no_usage  # type: ignore[method-assign]
    return parser


class OneLineErrorCommand(BaseCommand):
    """A command whose bad arguments are one line on the command line (see
    :func:`errors_on_one_line`)."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return errors_on_one_line(super().create_parser(prog_name, subcommand, **kwargs))
