"""The periodic tasks, declared in code; `manage.py setup_periodic_tasks` upserts them."""

from dataclasses import dataclass

from django.conf import settings

# Every schedule's name starts so: the command owns the periodic tasks named so (it removes
# those no longer declared here) and leaves any other periodic task alone.
NAME_PREFIX = "leadrank: "


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: int
    description: str


SCHEDULES = (
    Schedule(
        name="leadrank: rescore leads",
        task="prioritization.tasks.rescore_leads",
        # A policy change takes effect for queued leads within this period (new leads: at once).
        every_seconds=60,
        description="Recompute stored priority keys with the policy versions in force.",
    ),
    Schedule(
        name="leadrank: wake due leads",
        task="prioritization.tasks.wake_due_leads",
        # Claims wake their own campaigns' leads at once; this keeps queue figures current.
        every_seconds=60,
        description="Return due reschedules and callbacks, and expired leases, to the queue.",
    ),
    Schedule(
        name="leadrank: roll up SLA figures",
        task="prioritization.tasks.rollup_sla",
        # Past days are read from the rollups once rolled up; until then they are computed
        # live, so this period only bounds how long that slower path is taken.
        every_seconds=600,
        description="Recompute the daily SLA rollups (counts and TAT histograms) of recent days.",
    ),
    Schedule(
        name="leadrank: train learned models",
        task="prioritization.tasks.train_models",
        # Daily by default: a day's outcomes move a model little, and every training gives
        # each learned policy a new version (and its leads a rescoring).
        every_seconds=settings.LEADRANK_TRAINING_EVERY_HOURS * 3600,
        description="Fit the pooled and per-customer conversion models on recent outcomes.",
    ),
    Schedule(
        name="leadrank: evaluate alerts",
        task="prioritization.tasks.evaluate_alerts",
        # An alert opens (and clears) at most this long after its condition starts (ends).
        every_seconds=60,
        description="Open, refresh and close alerts: SLA projected below target, empty queues asked for.",
    ),
    Schedule(
        name="leadrank: sweep import jobs",
        task="leads.tasks.sweep_import_jobs",
        # A job is failed within LEADRANK_IMPORT_STALL_MINUTES plus this period of its worker's
        # death, and a lost message is sent again as long after it was sent.
        every_seconds=300,
        description=(
            "Fail admin file imports whose background worker gave no sign of life; "
            "send again those no worker has taken."
        ),
    ),
    Schedule(
        name="leadrank: sweep simulation runs",
        task="prioritization.tasks.sweep_simulation_runs",
        every_seconds=300,
        description=("Fail policy comparisons whose worker died; send again those no worker has taken."),
    ),
)
