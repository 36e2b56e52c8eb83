"""Typed readers for environment variables that fail loudly on bad values.

A misspelt boolean or a non-numeric port must stop the process at start-up with a
readable message, not turn silently into a default.
"""

import os
import sys
from pathlib import Path
from types import TracebackType

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvironmentVariableError(ImproperlyConfigured):
    """A variable of the environment holds a value leadrank cannot run with; the message
    names the variable."""


def _report_environment_error(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """A bad variable met while the settings load ends the process with one line (exit
    status 1), not a traceback through Django's and importlib's frames: the message is
    all the operator needs. Anything else is printed as before."""
    if isinstance(error, EnvironmentVariableError):
        sys.stderr.write(f"Configuration error: {error}\n")
        return
    _previous_excepthook(kind, error, trace)


_previous_excepthook = sys.excepthook
sys.excepthook = _report_environment_error


def _given(name: str) -> str | None:
    """The variable's value, or None when it is unset or empty (``FOO=`` in an env file,
    ``FOO=${FOO}`` in a compose file): both mean "use the default"."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    return raw


def env_str(name: str, default: str = "") -> str:
    raw = _given(name)
    return default if raw is None else raw


def env_bool(name: str, default: bool = False) -> bool:
    raw = _given(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvironmentVariableError(f"{name} must be a boolean (true/false/1/0), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = _given(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise EnvironmentVariableError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise EnvironmentVariableError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise EnvironmentVariableError(f"{name} must be at most {maximum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def make_folder(path: Path, *, variable: str) -> None:
    """Create the folder (and its parents) that a variable names or is the base of; one that
    cannot be made (a file in the way, no permission) stops the start with a line naming the
    variable, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentVariableError(
            f"{variable}: cannot make the folder {path} ({exc.strerror})"
        ) from None
