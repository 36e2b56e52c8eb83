"""``manage.py simulate``: compare priority policies in simulated time (see the README).

With no arguments it runs the README's headline comparison: FIFO against the default
policy on the real call-centre log's week of 8 to 14 February (2026 dates), 15 contractors.
"""

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, connection

from leads.importers import TIMESTAMP_RANGE_ERROR, timestamp_in_range
from leads.management.arguments import OneLineErrorCommand, float_between, int_between
from leads.management.termination import sigterm_as_ctrl_c
from prioritization.simulation.arrivals import DataError
from prioritization.simulation.comparison import (
    DATABASE_PREFIX,
    PolicyError,
    compare_policies,
    default_entry,
    fifo_entry,
    read_policy_file,
)
from prioritization.simulation.outcomes import OutcomeModel
from prioritization.simulation.report import format_table, render_chart
from prioritization.simulation.runner import SimulationError, run_policy
from prioritization.simulation.scenario import (
    DEFAULT_DAYS,
    DEFAULT_START,
    MAX_CONTRACTORS,
    MAX_DAYS,
    MIN_DAYS,
    Scenario,
    ScenarioOptions,
)

# The headline staffing level: FIFO misses the 90% SLA there (see the README).
DEFAULT_CONTRACTORS = 15
# Caps of the options the admin's simulator does not have (its bounds on contractors and
# days are the command's too). The headline week brings about 50 leads an hour (8,317 in
# 7 days): 20 times that over the longest period is 672,000 live leads per policy.
MAX_RATE_PER_HOUR = 1_000.0
MAX_STALE_BACKLOG = 100_000
# Each job is a child process and a database of its own.
MAX_JOBS = 16


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from exc
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
    if not timestamp_in_range(moment):
        raise argparse.ArgumentTypeError(f"{text!r}: {TIMESTAMP_RANGE_ERROR}")
    return moment


class Command(OneLineErrorCommand):
    help = (
        "Replay lead arrivals against contractors in simulated time, with the engine's own code, "
        "in throwaway databases, and compare policies (FIFO, the default policy, drafts)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        world = parser.add_argument_group("scenario")
        world.add_argument(
            "--contractors",
            type=int_between(1, MAX_CONTRACTORS),
            default=DEFAULT_CONTRACTORS,
            help=f"contractors, 1 to {MAX_CONTRACTORS} (default 15)",
        )
        world.add_argument(
            "--start",
            type=_moment,
            default=DEFAULT_START,
            help="first simulated moment, UTC (default 2026-02-08: the log's week of 7 Feb 1999)",
        )
        world.add_argument(
            "--days",
            type=float_between(MIN_DAYS, MAX_DAYS),
            default=DEFAULT_DAYS,
            help=f"simulated days, {MIN_DAYS:g} to {MAX_DAYS:g} (default 7)",
        )
        world.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
        world.add_argument(
            "--rate",
            type=float_between(0, MAX_RATE_PER_HOUR, above=True),
            default=None,
            help=f"synthetic Poisson arrivals per hour instead of the call log, up to {MAX_RATE_PER_HOUR:,g}",
        )
        world.add_argument(
            "--sample", type=float, default=1.0, help="share of the log's arrivals kept, (0, 1] (default 1)"
        )
        world.add_argument(
            "--synthetic-leads", action="store_true", help="made-up lead attributes instead of the lead file"
        )
        world.add_argument(
            "--stale-backlog",
            type=int_between(0, MAX_STALE_BACKLOG),
            default=0,
            help=f"stale leads queued at the start, at most {MAX_STALE_BACKLOG:,}",
        )
        world.add_argument("--data-dir", type=Path, default=None, help="default: LEADRANK_DATA_DIR")
        model = parser.add_argument_group("outcome model")
        model.add_argument("--pickup", type=float, default=0.7, help="pick-up probability (default 0.7)")
        model.add_argument(
            "--decay-minutes", type=float, default=20.0, help="live conversion falls as exp(-t / this)"
        )
        model.add_argument(
            "--stale-recency-days", type=float, default=14.0, help="stale conversion: exp(-age / this)"
        )
        model.add_argument(
            "--smoothing", type=float, default=20.0, help="pseudo-count of the conversion rates"
        )
        model.add_argument(
            "--no-answer-seconds", type=float, default=30.0, help="length of an unanswered call"
        )
        model.add_argument(
            "--sla-minutes", type=float, default=30.0, help="SLA window the policies are judged on"
        )
        model.add_argument("--sla-target", type=float, default=0.9, help="SLA target share (default 0.9)")
        parser.add_argument(
            "--policy",
            action="append",
            default=[],
            metavar="NAME=PATH.json",
            help="a draft policy: a JSON object of policy version fields (changes to the default policy)",
        )
        parser.add_argument(
            "--jobs",
            type=int_between(1, MAX_JOBS),
            default=2,
            help=f"policies simulated at once, 1 to {MAX_JOBS} (default 2)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object (the last line)")
        parser.add_argument("--chart", type=Path, default=None, help="write a PNG chart here")
        # The run of one policy inside its throwaway database (started by the comparison).
        parser.add_argument("--child-scenario", type=Path, help=argparse.SUPPRESS)
        parser.add_argument("--child-policy", type=Path, help=argparse.SUPPRESS)
        parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["child_scenario"] is not None:
            self._run_child(options)
            return
        try:
            with sigterm_as_ctrl_c():
                self._compare(options)
        except (DataError, PolicyError, SimulationError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        except (psycopg.Error, DatabaseError) as exc:
            raise CommandError(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc

    def _compare(self, options: dict[str, Any]) -> None:
        as_json = options["json"]
        chart: Path | None = options["chart"]
        # Checked before the simulation, which takes minutes: the chart is written after it.
        if chart is not None and chart.is_dir():
            raise CommandError(f"--chart {chart} is a directory; name the PNG file to write.")
        if chart is not None and not chart.parent.is_dir():
            raise CommandError(f"--chart {chart}: the folder {chart.parent} does not exist.")
        scenario_options = ScenarioOptions(
            data_dir=options["data_dir"] or Path(settings.LEADRANK_DATA_DIR),
            contractors=options["contractors"],
            start=options["start"],
            days=options["days"],
            seed=options["seed"],
            rate_per_hour=options["rate"],
            sample=options["sample"],
            synthetic_leads=options["synthetic_leads"],
            stale_backlog=options["stale_backlog"],
            model=OutcomeModel(
                pickup_probability=options["pickup"],
                decay_minutes=options["decay_minutes"],
                stale_recency_days=options["stale_recency_days"],
                smoothing=options["smoothing"],
                no_answer_seconds=options["no_answer_seconds"],
            ),
            sla_minutes=options["sla_minutes"],
            sla_target=options["sla_target"],
        )
        default = default_entry()
        entries = [fifo_entry(default), default]
        entries += [read_policy_file(argument, base=default) for argument in options["policy"]]

        def progress(line: str) -> None:
            # With --json stdout carries only the JSON line; progress goes to stderr.
            (self.stderr if as_json else self.stdout).write(line)

        comparison = compare_policies(
            options=scenario_options, entries=entries, jobs=options["jobs"], write=progress
        )
        for note in comparison.notes:
            progress(f"Note: {note}")
        chart_error = None
        if chart is not None:
            png = render_chart(
                comparison.policies,
                sla_target=scenario_options.sla_target,
                sla_minutes=scenario_options.sla_minutes,
            )
            try:
                chart.write_bytes(png)
            except OSError as exc:
                chart_error = f"Cannot write the chart to {chart}: {exc.strerror or exc}."
            else:
                progress(f"Chart written to {chart}.")
        # The figures are printed even when the chart could not be written: they took minutes.
        if as_json:
            self.stdout.write(json.dumps(comparison.as_json(), separators=(",", ":")))
        else:
            self.stdout.write(format_table(comparison.policies, sla_target=scenario_options.sla_target))
            self.stdout.write(f"Simulated in {comparison.seconds:.0f} s.")
        if chart_error is not None:
            raise CommandError(chart_error)

    def _run_child(self, options: dict[str, Any]) -> None:
        """One policy over the scenario, in the database of DATABASE_URL (a throwaway clone)."""
        name = str(connection.settings_dict.get("NAME") or "")
        if not name.startswith(f"{DATABASE_PREFIX}_"):
            raise CommandError(
                f"Refusing to simulate in database {name!r}: it is not a simulator's throwaway database."
            )
        if options["child_policy"] is None or options["child_output"] is None:
            raise CommandError("--child-scenario needs --child-policy and --child-output.")
        scenario = Scenario.from_json(options["child_scenario"].read_text(encoding="utf-8"))
        policy = json.loads(options["child_policy"].read_text(encoding="utf-8"))
        try:
            result = run_policy(scenario, name=policy["name"], values=policy["values"])
        except SimulationError as exc:
            raise CommandError(str(exc)) from exc
        options["child_output"].write_text(json.dumps(result), encoding="utf-8")
