"""Policies side by side: one scenario, one throwaway database and one process per policy.

The parent builds the scenario from the data files, creates a throwaway database on the
project's PostgreSQL server and migrates it (:func:`config.throwaway_database`), then
clones it once per policy (``CREATE DATABASE … TEMPLATE``: seconds instead of a
migration each, and every policy starts from identical rows and id sequences). Each
policy runs in a child ``manage.py simulate`` process whose ``DATABASE_URL`` points at
its clone, so the engine's services run unchanged on their default connection and
nothing reaches the project's own database. Clones and the template are dropped when
the comparison ends, also when it fails.
"""

import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import ProgrammingError, connection
from psycopg import sql

from config.throwaway_database import child_environment, throwaway_database
from prioritization.models import PolicyVersion, PriorityPolicy, version_field_names
from prioritization.scoring import FIFO
from prioritization.simulation.runner import SimulationError
from prioritization.simulation.scenario import Scenario, ScenarioOptions, build_scenario

logger = logging.getLogger(__name__)

# Every database the simulator creates starts with this; a child refuses any other.
DATABASE_PREFIX = "leadrank_sim"
FIFO_NAME = "FIFO"
DEFAULT_NAME = "default"
# A child that runs longer than this is stopped (a run of the default scenario takes minutes).
CHILD_TIMEOUT_SECONDS = 3600
# Version fields that are not settings a simulation can carry (validated separately).
_NOT_VALIDATED = ["policy", "number", "created_at", "created_by", "note"]


class PolicyError(ValueError):
    """A policy given to the simulator is not valid; the message says which and why."""


@dataclass(frozen=True)
class PolicyEntry:
    name: str
    values: dict[str, Any]  # every settings field of a PolicyVersion, JSON-compatible
    notes: tuple[str, ...] = ()


def settings_of(version: PolicyVersion) -> tuple[dict[str, Any], list[str]]:
    """A version's settings as JSON values, and notes on what a simulation cannot carry.

    Relations (a learned model) are not copied into the throwaway database: the
    simulated version scores with its manual weights, as a learned policy without a
    model does, and the note says so.
    """
    values: dict[str, Any] = {}
    notes = []
    for name in version_field_names():
        model_field = PolicyVersion._meta.get_field(name)
        if model_field.is_relation:
            values[name] = None
            if getattr(version, f"{name}_id", None) is not None:
                notes.append(
                    f"{name} is not copied into the simulation: the version scores with its manual weights."
                )
        else:
            values[name] = getattr(version, name)
    return values, notes


def default_entry() -> PolicyEntry:
    """The default policy in force in the project's database (read only), or the built-in
    defaults when it has none (or is not migrated): the entry named ``default``."""
    notes = []
    try:
        policy = (
            PriorityPolicy.objects.filter(customer__isnull=True).select_related("current_version").first()
        )
    except ProgrammingError:  # no policy table: a database that was never migrated
        policy = None
        notes.append("the project's database has no policy tables: the built-in defaults are used.")
    version = policy.current_version if policy is not None else None
    values, more = settings_of(version if version is not None else PolicyVersion())
    return PolicyEntry(DEFAULT_NAME, values, tuple(notes + more))


def fifo_entry(base: PolicyEntry) -> PolicyEntry:
    """Today's behaviour: the base policy's rules (reschedules, leases) with FIFO order."""
    return PolicyEntry(FIFO_NAME, {**base.values, "ordering": FIFO})


def _check_name(name: str) -> None:
    if not name or name in (FIFO_NAME, DEFAULT_NAME):
        raise PolicyError(
            f"A policy needs its own name, not {name!r} ({FIFO_NAME} and {DEFAULT_NAME} are taken)."
        )


def draft_entry(name: str, changes: Mapping[str, Any], *, base: PolicyEntry) -> PolicyEntry:
    """A policy given as changes to ``base`` (field → value), validated like an admin edit.

    Raises :class:`PolicyError` with one readable line.
    """
    _check_name(name)
    allowed = set(version_field_names())
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise PolicyError(
            f"Policy {name}: unknown field(s) {', '.join(unknown)}; "
            f"policy fields are {', '.join(sorted(allowed))}."
        )
    values = {**base.values, **changes}
    relations = [
        key for key in changes if PolicyVersion._meta.get_field(key).is_relation and changes[key] is not None
    ]
    if relations:
        raise PolicyError(f"Policy {name}: {', '.join(relations)} cannot be set in a simulation.")
    validate_settings(name, values)
    return PolicyEntry(name, values)


def validate_settings(name: str, values: Mapping[str, Any]) -> None:
    """The model's own validation (field types and ranges, ``clean()``, constraints)."""
    version = PolicyVersion(**values)
    try:
        version.full_clean(exclude=_NOT_VALIDATED, validate_unique=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
            for field, messages in exc.message_dict.items()
        )
        raise PolicyError(f"Policy {name}: {problems}") from exc


def read_policy_file(argument: str, *, base: PolicyEntry) -> PolicyEntry:
    """``name=path.json`` of ``--policy``: a JSON object of PolicyVersion field values."""
    name, separator, path_text = argument.partition("=")
    if not separator or not name.strip() or not path_text.strip():
        raise PolicyError(f"--policy takes NAME=PATH.json, not {argument!r}.")
    _check_name(name.strip())
    path = Path(path_text.strip())
    try:
        changes = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"Policy {name}: cannot read {path}: {exc.strerror or exc}.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError(f"Policy {name}: {path} is not valid JSON ({exc}).") from exc
    except RecursionError:
        raise PolicyError(f"Policy {name}: {path} is not valid JSON (it is nested too deeply).") from None
    if not isinstance(changes, dict):
        raise PolicyError(f"Policy {name}: {path} must hold a JSON object of policy fields.")
    return draft_entry(name.strip(), changes, base=base)


# --- Running ----------------------------------------------------------------------------------


@dataclass
class Comparison:
    scenario: dict[str, Any]
    policies: list[dict[str, Any]]  # figures per policy, in the order given
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` object: figures per policy (without the TAT curve) and the scenario."""
        policies = [{k: v for k, v in policy.items() if k != "tat_curve_s"} for policy in self.policies]
        return {"policies": policies, "scenario": self.scenario, "seconds": round(self.seconds, 1)}


def _admin_connection() -> psycopg.Connection[tuple[Any, ...]]:
    params = {
        k: v
        for k, v in connection.get_connection_params().items()
        if k in ("user", "password", "host", "port")
    }
    return psycopg.connect(dbname="postgres", autocommit=True, **params)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _create_clone(template_url: str, name: str) -> str:
    """A copy of the migrated template database; its URL.

    Commits in it skip waiting for the WAL flush (``synchronous_commit = off``): a crash
    could only lose a throwaway database, and every claim and outcome commits.
    """
    template = urlsplit(template_url).path.lstrip("/")
    identifier = sql.Identifier(name)
    with _admin_connection() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(identifier, sql.Identifier(template)))
        admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(identifier))
    return _with_database(template_url, name)


def _drop_database(name: str) -> None:
    with _admin_connection() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_child(
    url: str, scenario_path: Path, entry: PolicyEntry, scratch: Path, index: int
) -> dict[str, Any]:
    policy_path = scratch / f"policy-{index}.json"
    output_path = scratch / f"result-{index}.json"
    policy_path.write_text(json.dumps({"name": entry.name, "values": entry.values}), encoding="utf-8")
    try:
        finished = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "simulate",
                "--child-scenario",
                str(scenario_path),
                "--child-policy",
                str(policy_path),
                "--child-output",
                str(output_path),
            ],
            cwd=settings.BASE_DIR,
            env=child_environment(url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SimulationError(f"The run of policy {entry.name} took over {CHILD_TIMEOUT_SECONDS} s.") from exc
    if finished.returncode != 0:
        lines = [line for line in (finished.stderr or "").splitlines() if line.strip()]
        logger.error("simulation child of %s failed:\n%s", entry.name, finished.stderr)
        reason = lines[-1] if lines else f"exit status {finished.returncode}"
        raise SimulationError(f"The run of policy {entry.name} failed: {reason}")
    result: dict[str, Any] = json.loads(output_path.read_text(encoding="utf-8"))
    return result


def compare_policies(
    *,
    options: ScenarioOptions,
    entries: Sequence[PolicyEntry],
    jobs: int = 2,
    write: Callable[[str], None] | None = None,
    scenario: Scenario | None = None,
) -> Comparison:
    """Simulate each policy over the same scenario; figures in the order of ``entries``.

    Raises :class:`SimulationError` (and data errors from the scenario) with one line.
    """
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise PolicyError(f"Policy names must differ: {', '.join(names)}.")
    say = write or (lambda _: None)
    started = time.perf_counter()
    scenario = scenario or build_scenario(options)
    say(
        f"Scenario: {len(scenario.leads):,} leads from {scenario.start:%Y-%m-%d %H:%M} to "
        f"{scenario.end:%Y-%m-%d %H:%M} UTC, {len(scenario.contractors)} contractors."
    )
    results: list[dict[str, Any] | None] = [None] * len(entries)
    lock = threading.Lock()
    with (
        tempfile.TemporaryDirectory(prefix="leadrank-sim-") as scratch_name,
        throwaway_database(DATABASE_PREFIX) as template_url,
    ):
        scratch = Path(scratch_name)
        scenario_path = scratch / "scenario.json"
        scenario_path.write_text(scenario.to_json(), encoding="utf-8")

        template = urlsplit(template_url).path.lstrip("/")

        def run(index: int) -> None:
            entry = entries[index]
            clone = f"{template}_{index}"
            try:
                with lock:  # CREATE DATABASE … TEMPLATE needs the template to itself
                    url = _create_clone(template_url, clone)
                result = _run_child(url, scenario_path, entry, scratch, index)
            finally:
                _drop_database(clone)
            results[index] = result
            say(f"  {entry.name}: simulated in {result.get('seconds', 0):.0f} s")

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(run, index) for index in range(len(entries))]
            errors = [future.exception() for future in futures]
        failed = [error for error in errors if error is not None]
        if failed:
            error = failed[0]
            if isinstance(error, SimulationError | PolicyError):
                raise error
            raise SimulationError(f"The simulation failed: {error}") from error
    notes = [f"{entry.name}: {note}" for entry in entries for note in entry.notes]
    return Comparison(
        scenario=scenario.options,
        policies=[result for result in results if result is not None],
        notes=notes,
        seconds=time.perf_counter() - started,
    )
