"""`manage.py bench_sla`: how fast the SLA figures, the stats API and the dashboard are at
N leads, before and after the rollups, with the plans PostgreSQL chose.

Runs in a throwaway database on the project's PostgreSQL (created, migrated and dropped):
the parent process creates it and runs the measuring part in a child ``manage.py`` whose
``DATABASE_URL`` points at it, so the real settings, selectors and views are measured.

The synthetic world: 200 campaigns over 20 customers; N leads created uniformly over the
last D days; 10% sent as stale; 93% called, time to first call drawn from an exponential
of mean 12 minutes (about 92% within 30 minutes); called leads mostly closed, some
rescheduled for tomorrow; recent claims in the decision log and a few leads being held.
The last line printed is one JSON object with every figure.
"""

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

from config.bench_server import CAMPAIGNS, CUSTOMERS, create_owners
from config.throwaway_database import child_environment, throwaway_database

CONTRACTORS = 100
REPEATS = 5  # each timing is the median of this many runs

_LOAD_SQL = """
INSERT INTO leads_lead (
    customer_id, campaign_id, external_id, lead_type, city, source, stage, pricing_plan,
    created_at, status, due_at, attempt_count, reschedule_count, first_attempt_at, last_attempt_at,
    closed_at, closed_reason, sla_deadline, received_at, updated_at)
SELECT 1 + (campaign - 1) %% %(customers)s, campaign, 'sla-' || g,
       CASE WHEN s < 0.1 THEN 'stale' ELSE 'live' END, '', '', '', 'pro',
       created,
       CASE WHEN first_call IS NULL THEN 'ready'
            WHEN w < 0.8 THEN 'closed'
            WHEN first_call + interval '23 hours' > now() THEN 'waiting'
            ELSE 'ready' END,
       CASE WHEN first_call IS NOT NULL AND w >= 0.8 THEN first_call + interval '23 hours' ELSE created END,
       CASE WHEN first_call IS NULL THEN 0 ELSE 1 END,
       CASE WHEN first_call IS NOT NULL AND w >= 0.8 THEN 1 ELSE 0 END,
       first_call, first_call,
       CASE WHEN first_call IS NOT NULL AND w < 0.8 THEN first_call + interval '2 minutes' END,
       CASE WHEN first_call IS NOT NULL AND w < 0.8 THEN 'not_interested' ELSE '' END,
       CASE WHEN s >= 0.1 THEN created + interval '30 minutes' END,
       created, created
FROM (
    SELECT g, s, w, campaign, created,
           CASE WHEN u < 0.93 AND created + tat < now() THEN created + tat END AS first_call
    FROM (
        SELECT g, random() AS s, random() AS u, random() AS w, 1 + g %% %(campaigns)s AS campaign,
               now() - random() * %(days)s * interval '1 day' AS created,
               -ln(1 - random()) * interval '12 minutes' AS tat
        FROM generate_series(1, %(leads)s) g
    ) raw
) t
"""

_CONTRACTORS_SQL = """
INSERT INTO leads_contractor (id, name, active, created_at, claims_made)
SELECT g, 'Bench contractor ' || g, true, now(), 0 FROM generate_series(1, %(contractors)s) g
"""

# Recent claims (the last hour, about one a second) and 50 leads being called now.
_ACTIVITY_SQL = """
WITH version AS (
    SELECT current_version_id AS id FROM prioritization_prioritypolicy WHERE customer_id IS NULL
),
recent AS (
    SELECT id, row_number() OVER () AS n FROM leads_lead
    WHERE first_attempt_at > now() - interval '1 hour' LIMIT 3600
)
INSERT INTO prioritization_decision (lead_id, contractor_id, campaign_ids, decided_at, policy_version_id,
    band, score, log_score, priority_key, reasons, lease_expires_at)
SELECT recent.id, 1 + n %% %(contractors)s, '{}', now() - n * interval '1 second', version.id,
       'live', 1, 0, 0, '[]', now()
FROM recent, version
"""
# One lead per contractor (a contractor holds one lead at a time).
_HELD_SQL = """
WITH picked AS (
    SELECT id, row_number() OVER (ORDER BY created_at DESC) AS n FROM leads_lead
    WHERE status = 'ready' AND first_attempt_at IS NULL AND lead_type = 'live'
    ORDER BY created_at DESC LIMIT LEAST(50, %(contractors)s)
)
UPDATE leads_lead l SET status = 'held', holder_id = picked.n, claimed_at = now(),
    lease_expires_at = now() + interval '10 minutes'
FROM picked WHERE l.id = picked.id
"""
# An attempt event per called stale lead: the became_stale lookup has rows to walk past.
_EVENTS_SQL = """
INSERT INTO leads_leadevent (lead_id, kind, at, disposition, idempotency_key, detail)
SELECT id, 'attempt', first_attempt_at, 'no_answer', '', '{}' FROM leads_lead
WHERE lead_type = 'stale' AND first_attempt_at IS NOT NULL
"""


def run_sla_benchmark(*, leads: int, days: int, write: Callable[[str], None]) -> dict[str, Any]:
    """Parent: a throwaway database, then the measuring child; returns the child's figures."""
    with throwaway_database("leadrank_sla_bench") as url:
        create_owners(url, calling_hours=("00:00", "23:59:59.999999"), calling_days="{0,1,2,3,4,5,6}")
        child = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "bench_sla",
                "--leads",
                str(leads),
                "--days",
                str(days),
                "--measure",
            ],
            cwd=settings.BASE_DIR,
            env=child_environment(url, DJANGO_DEBUG="false"),
            capture_output=True,
            text=True,
            check=False,
        )
        for line in child.stdout.splitlines()[:-1]:
            write(line)
        if child.returncode != 0:
            raise RuntimeError(f"The measuring process failed:\n{child.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
        return result


def _median_ms(action: Callable[[], object], repeats: int = REPEATS) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 1)


def measure(*, leads: int, days: int, write: Callable[[str], None]) -> dict[str, Any]:
    """Child: load the world into this process's database and time the figures."""
    import datetime as dt

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import RequestFactory
    from django.utils import timezone

    from prioritization.admin_dashboard import sla_dashboard_view
    from prioritization.services import ensure_default_policy
    from prioritization.sla import rollup_sla, sla_report, utc_day
    from prioritization.sla_api import SlaReportSerializer

    ensure_default_policy()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.42)")
        cursor.execute(
            _LOAD_SQL, {"leads": leads, "days": days, "customers": CUSTOMERS, "campaigns": CAMPAIGNS}
        )
        cursor.execute(_CONTRACTORS_SQL, {"contractors": CONTRACTORS})
        cursor.execute(_ACTIVITY_SQL, {"contractors": CONTRACTORS})
        cursor.execute(_HELD_SQL, {"contractors": CONTRACTORS})
        cursor.execute(_EVENTS_SQL)
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("SELECT status, count(*) FROM leads_lead GROUP BY status ORDER BY status")
        states = dict(cursor.fetchall())
    write(f"Loaded {leads:,} leads over {days} days in {time.perf_counter() - started:.0f} s: {states}")

    now = timezone.now()
    today = utc_day(now)
    month = today - dt.timedelta(days=days - 1)
    figures: dict[str, Any] = {"leads": leads, "days": days, "states": states}

    def report(**kwargs: Any) -> Any:
        kwargs.setdefault("start", today)
        kwargs.setdefault("end", today)
        return sla_report(now=timezone.now(), **kwargs)

    # Before any rollup every day is read live (a fresh install, or a changed SLA window).
    figures["today_all_live_ms"] = _median_ms(report)
    figures["range_all_live_ms"] = _median_ms(lambda: report(start=month), repeats=3)
    started = time.perf_counter()
    first = rollup_sla(now=timezone.now())
    figures["rollup_first_run_s"] = round(time.perf_counter() - started, 2)
    figures["rollup_first_run_days"] = first.days
    while True:  # the backlog, if the range is longer than one run takes
        if rollup_sla(now=timezone.now()).days <= 3:
            break
    figures["rollup_steady_run_ms"] = _median_ms(lambda: rollup_sla(now=timezone.now()), repeats=3)
    figures["today_all_ms"] = _median_ms(report)
    figures["range_all_rolled_ms"] = _median_ms(lambda: report(start=month))
    figures["range_one_customer_ms"] = _median_ms(lambda: report(start=month, customer_id=1))
    figures["range_one_campaign_ms"] = _median_ms(lambda: report(start=month, campaign_id=1))
    full = report(start=month)
    figures["serialize_ms"] = _median_ms(lambda: SlaReportSerializer(full, context={"now": now}).data)
    live = report(start=month)
    figures["attainment_range"] = live.overall.sla_range.attainment
    figures["tat_p50_s"] = live.overall.tat.p50_seconds

    user = User.objects.create_superuser("bench", "bench@example.com", "bench-password")
    factory = RequestFactory()

    def dashboard() -> None:
        request = factory.get("/admin/sla/")
        request.user = user
        request.session = {}  # type: ignore[assignment]
        request._messages = []  # type: ignore[attr-defined]
        response = sla_dashboard_view(request)
        response.render()  # type: ignore[attr-defined]

    figures["dashboard_ms"] = _median_ms(dashboard, repeats=3)
    figures["plans"] = _plans(now)
    for name, value in figures.items():
        if name != "plans":
            write(f"{name}: {value}")
    for name, plan in figures["plans"].items():
        write(f"plan {name}: {plan['ms']} ms, indexes {', '.join(plan['indexes']) or 'none'}")
    return figures


def _plans(now: Any) -> dict[str, dict[str, Any]]:
    """EXPLAIN ANALYZE of each figure's query at this size: time and the indexes used."""
    import re

    from django.db import connection

    from prioritization import sla

    today = sla.day_start(sla.utc_day(now))
    campaigns = list(range(1, CAMPAIGNS + 1))
    queries = {
        "day_counts_today": (
            sla._DAY_COUNTS_SQL.format(campaign_filter=""),
            {
                "customers": list(range(1, CUSTOMERS + 1)),
                "windows": [30.0] * CUSTOMERS,
                "start": today,
                "end": today + sla._DAY,
                "edges": list(sla.TAT_BUCKET_EDGES_SECONDS),
                "now": now,
            },
        ),
        "queue": (sla._QUEUE_SQL, {"campaigns": campaigns, "now": now}),
        "at_risk": (
            sla._AT_RISK_SQL,
            {"campaigns": campaigns, "until": [now + sla._DAY / 144] * CAMPAIGNS, "now": now},
        ),
        "contractors_active": (
            sla._ACTIVE_SQL,
            {"campaigns": campaigns, "since": now - sla._DAY / 96, "now": now},
        ),
    }
    plans = {}
    with connection.cursor() as cursor:
        for name, (query, params) in queries.items():
            cursor.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + query, params)
            text = "\n".join(row[0] for row in cursor.fetchall())
            total = re.search(r"Execution Time: ([0-9.]+) ms", text)
            plans[name] = {
                "ms": float(total.group(1)) if total else None,
                "indexes": sorted(
                    set(
                        re.findall(
                            r"(?:Index(?: Only)? Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)", text
                        )
                    )
                ),
                "seq_scans": sorted(set(re.findall(r"Seq Scan on (\w+)", text))),
            }
    return plans
