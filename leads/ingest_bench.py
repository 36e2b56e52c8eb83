"""`manage.py bench ingest`: how fast leads come in, as a ratio of raw COPY.

All three loads go into the same table, with the same indexes and constraints, in a
throwaway database on the project's PostgreSQL, measured in one run:

1. raw COPY of the rows, already in the table's own format (the physical limit);
2. the CLI import (`manage.py import_leads`, a subprocess) of the same rows as a CSV file;
3. the API (`POST /api/v1/leads/` under granian) in batches of 10,000 over HTTP.
"""

import datetime as dt
import http.client
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings

from config.bench_server import (
    CAMPAIGNS,
    CITIES,
    CUSTOMERS,
    SOURCES,
    STAGES,
    create_api_key,
    create_owners,
    web_server,
)
from config.throwaway_database import child_environment, throwaway_database
from leads.importers import LEAD_FIELDS, LeadInput

CSV_COLUMNS = LEAD_FIELDS
# The table's columns in the order _copy_payload writes them.
COPY_COLUMNS = (
    *LeadInput._fields,
    "status",
    "due_at",
    "attempt_count",
    "reschedule_count",
    "closed_reason",
    "received_at",
    "updated_at",
    "priority_key",
    "sla_deadline",
    "scored_version",
)


@dataclass(frozen=True)
class SyntheticLead:
    external_id: str
    customer_id: int
    campaign_id: int
    lead_type: str
    city: str
    source: str
    last_activity: dt.datetime
    stage: str
    created_at: dt.datetime


def synthetic_leads(rows: int, *, now: dt.datetime, seed: int = 1) -> list[SyntheticLead]:
    """Leads over 200 campaigns of 20 customers: a third live (last hour), the rest stale."""
    rng = random.Random(seed)
    leads = []
    for index in range(rows):
        campaign_id = 1 + index % CAMPAIGNS
        live = rng.random() < 1 / 3
        created = now - dt.timedelta(minutes=rng.uniform(0, 60) if live else rng.uniform(60, 60 * 24 * 90))
        leads.append(
            SyntheticLead(
                external_id=f"bench-{index}",
                customer_id=1 + (campaign_id - 1) % CUSTOMERS,
                campaign_id=campaign_id,
                lead_type="live" if live else "stale",
                city=rng.choice(CITIES),
                source=rng.choice(SOURCES),
                last_activity=created - dt.timedelta(hours=rng.uniform(0, 24 * 30)),
                stage=rng.choice(STAGES),
                created_at=created,
            )
        )
    return leads


def _truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE leads_lead CASCADE")
        conn.execute("VACUUM ANALYZE leads_lead")


def _count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM leads_lead").fetchone()
    return int(row[0]) if row else 0


def _copy_payload(leads: list[SyntheticLead], now: dt.datetime) -> bytes:
    """The rows in COPY text format, exactly as the table stores them (scores included,
    so the baseline writes what an import writes)."""
    stamp = now.isoformat()
    lines = []
    for index, lead in enumerate(leads):
        created = lead.created_at.isoformat()
        deadline = (
            (lead.created_at + dt.timedelta(minutes=30)).isoformat() if lead.lead_type == "live" else r"\N"
        )
        lines.append(
            "\t".join(
                (
                    str(lead.customer_id),
                    str(lead.campaign_id),
                    lead.external_id,
                    lead.lead_type,
                    lead.city,
                    lead.source,
                    lead.last_activity.isoformat(),
                    lead.stage,
                    "pro",
                    r"\N",
                    created,
                    "ready",
                    created,
                    "0",
                    "0",
                    "",
                    stamp,
                    stamp,
                    str(index * 1e-3),
                    deadline,
                    "1",
                )
            )
        )
    return ("\n".join(lines) + "\n").encode()


def run_copy(url: str, payload: bytes) -> float:
    """Seconds for one COPY of the whole payload into leads_lead (committed)."""
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY leads_lead ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy,
        ):
            step = 1 << 20
            for offset in range(0, len(payload), step):
                copy.write(payload[offset : offset + step])
        conn.commit()
        return time.perf_counter() - started


def write_csv(path: Path, leads: list[SyntheticLead]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(CSV_COLUMNS) + "\n")
        for lead in leads:
            handle.write(
                f"{lead.external_id},{lead.customer_id},{lead.campaign_id},{lead.lead_type},{lead.city},"
                f"{lead.source},{lead.last_activity.isoformat()},{lead.stage},,,{lead.created_at.isoformat()}\n"
            )


def run_cli(url: str, csv_path: Path) -> float:
    """Seconds for `manage.py import_leads` on the CSV, process start included."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "manage.py", "import_leads", str(csv_path), "--no-progress"],
        cwd=settings.BASE_DIR,
        env=child_environment(url),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def run_api(url: str, leads: list[SyntheticLead], *, batch: int, clients: int, workers: int) -> float:
    """Seconds to POST every lead in batches under granian, from `clients` keep-alive clients."""
    key = create_api_key(url, name="bench", scope="admin")
    bodies = [
        json.dumps(
            {
                "leads": [
                    {
                        "external_id": lead.external_id,
                        "customer_id": lead.customer_id,
                        "campaign_id": lead.campaign_id,
                        "lead_type": lead.lead_type,
                        "city": lead.city,
                        "source": lead.source,
                        "last_activity": lead.last_activity.isoformat(),
                        "stage": lead.stage,
                        "created_at": lead.created_at.isoformat(),
                    }
                    for lead in leads[start : start + batch]
                ]
            }
        ).encode()
        for start in range(0, len(leads), batch)
    ]
    with web_server(url, workers=workers, DATA_UPLOAD_MAX_MEMORY_SIZE=str(64 << 20)) as port:
        pending = list(reversed(bodies))
        lock = threading.Lock()
        failures: list[str] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            while True:
                with lock:
                    if not pending:
                        break
                    body = pending.pop()
                conn.request(
                    "POST",
                    "/api/v1/leads/",
                    body=body,
                    headers={
                        "Authorization": f"Api-Key {key}",
                        "Content-Type": "application/json",
                    },
                )
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    failures.append(f"HTTP {response.status}: {payload[:200]!r}")
            conn.close()

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"{len(failures)} API batches failed, first: {failures[0]}")
        return seconds


def run_ingest_benchmark(
    *, rows: int, batch: int, clients: int, workers: int, write: Callable[[str], None]
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    write(f"Generating {rows:,} synthetic leads over {CAMPAIGNS} campaigns…")
    leads = synthetic_leads(rows, now=now)
    payload = _copy_payload(leads, now)
    with tempfile.TemporaryDirectory() as scratch, throwaway_database("leadrank_bench_ingest") as url:
        csv_path = Path(scratch) / "leads.csv"
        write_csv(csv_path, leads)
        create_owners(url, calling_hours=("08:00", "20:00"), calling_days="{0,1,2,3,4}")

        _truncate(url)
        copy_seconds = run_copy(url, payload)
        assert _count(url) == rows
        write(f"raw COPY          {rows / copy_seconds:>10,.0f} rows/s  ({copy_seconds:.1f} s)")

        _truncate(url)
        cli_seconds = run_cli(url, csv_path)
        assert _count(url) == rows, "the CLI import did not store every row"
        write(f"CLI import_leads  {rows / cli_seconds:>10,.0f} rows/s  ({cli_seconds:.1f} s)")

        _truncate(url)
        api_seconds = run_api(url, leads, batch=batch, clients=clients, workers=workers)
        assert _count(url) == rows, "the API did not store every row"
        write(f"API batches       {rows / api_seconds:>10,.0f} rows/s  ({api_seconds:.1f} s)")

    copy_rate = rows / copy_seconds
    result = {
        "rows": rows,
        "copy_rows_s": round(copy_rate),
        "cli_rows_s": round(rows / cli_seconds),
        "cli_ratio": round(rows / cli_seconds / copy_rate, 3),
        "api_rows_s": round(rows / api_seconds),
        "api_ratio": round(rows / api_seconds / copy_rate, 3),
        "api_batch": batch,
        "api_clients": clients,
        "web_workers": workers,
    }
    write(
        f"ratios to COPY: CLI {result['cli_ratio']:.2f}× (goal ≥ 0.5), "
        f"API {result['api_ratio']:.2f}× (goal ≥ 0.15)"
    )
    return result
