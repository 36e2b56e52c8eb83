"""`manage.py evaluate_model --bench-training N`: how long the daily training takes.

A throwaway database on the project's PostgreSQL gets N synthetic outcomes (closed
leads of 20 customers over a year, conversion following city, source, stage and
recency, differently per customer); then `manage.py train_models` runs on it in a
subprocess, exactly as in production: gather (SQL), evaluate (four models on the
holdout), fit, store and apply. Its timings are printed; the database is dropped.
"""

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
from django.conf import settings

from config.bench_server import CAMPAIGNS, CITIES, CUSTOMERS, SOURCES, STAGES, create_owners
from config.throwaway_database import child_environment, throwaway_database

_COLUMNS = (
    "customer_id, campaign_id, external_id, lead_type, city, source, last_activity, stage, pricing_plan, "
    "created_at, status, due_at, attempt_count, reschedule_count, closed_reason, closed_at, received_at, "
    "updated_at"
)


def synthetic_outcomes(outcomes: int, *, now: dt.datetime, seed: int = 5) -> list[str]:
    """COPY text lines of closed leads whose conversion follows a known per-customer model."""
    rng = np.random.default_rng(seed)
    customer = rng.integers(0, CUSTOMERS, outcomes)
    campaign = customer + 1 + CUSTOMERS * rng.integers(0, CAMPAIGNS // CUSTOMERS, outcomes)
    popularity = 1 / np.arange(1, len(CITIES) + 1) ** 1.1  # a few big cities, a long tail
    city = rng.choice(len(CITIES), outcomes, p=popularity / popularity.sum())
    source = rng.integers(0, len(SOURCES), outcomes)
    stage = rng.integers(0, len(STAGES), outcomes)
    hours = rng.lognormal(2.0, 2.0, outcomes)
    known = rng.random(outcomes) > 0.2
    age_seconds = rng.uniform(0, 360 * 86400, outcomes)
    # The truth: shared effects plus each customer's own taste in sources.
    logit = (
        -1.2
        + rng.normal(0, 0.4, len(CITIES))[city]
        + rng.normal(0, 0.5, len(STAGES))[stage]
        + rng.normal(0, 0.6, (CUSTOMERS, len(SOURCES)))[customer, source]
        - 0.3 * np.log1p(hours) * known
    )
    converted = rng.random(outcomes) < 1 / (1 + np.exp(-logit))
    stamp = now.isoformat()
    lines = []
    for i in range(outcomes):
        created = now - dt.timedelta(seconds=float(age_seconds[i]))
        active = (created - dt.timedelta(hours=float(hours[i]))).isoformat() if known[i] else r"\N"
        reason = "converted" if converted[i] else "not_interested"
        lines.append(
            f"{customer[i] + 1}\t{campaign[i]}\tbench-{i}\tlive\t{CITIES[city[i]]}\t{SOURCES[source[i]]}\t"
            f"{active}\t{STAGES[stage[i]]}\tpro\t{created.isoformat()}\tclosed\t{created.isoformat()}\t1\t0\t"
            f"{reason}\t{created.isoformat()}\t{stamp}\t{stamp}\n"
        )
    return lines


def run_training_benchmark(*, outcomes: int, write: Callable[[str], object]) -> dict[str, Any]:
    now = dt.datetime.now(tz=dt.UTC)
    with throwaway_database("leadrank_model_bench") as url:
        create_owners(url, calling_hours=("00:00", "23:59:59.999999"), calling_days="{0,1,2,3,4,5,6}")
        started = time.perf_counter()
        lines = synthetic_outcomes(outcomes, now=now)
        generated = time.perf_counter() - started
        with psycopg.connect(url) as conn, conn.cursor() as cursor:
            with cursor.copy(f"COPY leads_lead ({_COLUMNS}) FROM STDIN") as copy:
                for offset in range(0, len(lines), 50_000):
                    copy.write("".join(lines[offset : offset + 50_000]))
            conn.commit()
            conn.execute("ANALYZE leads_lead")
        loaded = time.perf_counter() - started - generated
        write(
            f"{outcomes} synthetic outcomes of {CUSTOMERS} customers: generated in {generated:.1f} s, "
            f"loaded in {loaded:.1f} s"
        )
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "manage.py", "train_models", "--json"],
            cwd=settings.BASE_DIR,
            env=child_environment(url),
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"train_models failed: {result.stderr.strip()}")
        summary = json.loads(result.stdout.strip().splitlines()[-1])
    steps = summary["seconds"]
    write(
        f"training run (process start included): {wall:.1f} s; gather {steps['gather']:.1f} s, evaluate "
        f"(learned, gradient boosting, pooled, manual on the holdout) {steps['evaluate']:.1f} s, fit "
        f"{steps['fit']:.1f} s, store {steps['store']:.1f} s; "
        f"{len(summary['model_version_ids'])} model versions"
    )
    return {
        "outcomes": outcomes,
        "customers": CUSTOMERS,
        "training_seconds": round(wall, 2),
        "steps": steps,
        "model_versions": len(summary["model_version_ids"]),
    }
