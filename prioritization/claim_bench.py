"""`manage.py bench claim`: the next-lead engine under load, as a ratio of the reference.

Everything runs in throwaway databases on the project's PostgreSQL, in one session:

1. N leads over 200 campaigns (live leads of the last hours, stale leads, ~20% rescheduled
   into the future) loaded with one INSERT … SELECT generate_series, then scored by
   ``rescore_leads()`` (the full rescoring pass), compared with one raw UPDATE writing the
   same columns of the same rows;
2. ``claim_limit.sh``, the reference claim on the same server (pgbench, no Django);
3. granian (``WEB_WORKERS`` workers, one request at a time each, keep-alive) driven by wrk
   (``prioritization/bench_claim.lua``): a second
   rescoring pass under a new policy version while contractors claim; the matrix of 1, 8
   and 32 clients × tuples of 1, 5 and 20 campaigns, each client running claim cycles
   (next lead, then its outcome); the 8-client, 5-campaign cycle over the full queue and
   over a 10k-lead one (served alongside), in alternating rounds (the machine's speed
   drifts over a run), for the p99 ratio of a full queue to a small one; claims alone; a
   long run checking that throughput does not decay;
4. double claims counted in both databases from the leads' event history.

The last line printed is one JSON object with every figure and ratio.
"""

import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from django.conf import settings

from config.bench_server import (
    CAMPAIGNS,
    CITIES,
    SOURCES,
    STAGES,
    create_api_key,
    create_owners,
    web_server,
)
from config.throwaway_database import child_environment, throwaway_database

# Contractors 1…CYCLE_CONTRACTORS × CYCLE_RUNS are qualified for every campaign, and each
# cycle run has CYCLE_CONTRACTORS of its own: a request that wrk left in flight when the
# run before stopped (an outcome, say) still runs on the server, and a contractor of the
# next run holding that lead would see it closed under it (a 409, rightly).
CYCLE_CONTRACTORS = 32
CYCLE_RUNS = 16  # the full queue's runs take 15: warm-up, rescoring, 9 cells, 3 rounds, decay
# Claims-alone runs take each lead as a fresh contractor (one who holds a lead gets that
# lead again), qualified for one 5-campaign tuple derived from its number.
CLAIMS_BASE = 100_000
CLAIMS_TUPLE = 5
CLAIMS_POOL_PER_RUN = 40_000  # a multiple of 40 keeps (j * 5) % 200 aligned across runs
CLAIMS_RUNS = 2
# Web server processes: one more than the 2 cores, so a core has work while a worker waits
# for PostgreSQL (measured: 3 and 4 within noise of each other, 2 about 10% slower).
WEB_WORKERS = 3
LUA_SCRIPT = Path(__file__).resolve().parent / "bench_claim.lua"
# Latency histogram of the Lua script: bucket b covers [e^(b/50), e^((b+1)/50)) µs.
BUCKETS_PER_E = 50

# One row per lead; `r` picks the kind: 15% live of the last 6 hours, 10% live already
# called and due again now, 20% rescheduled into the next 1 h to 7 days (waiting), the rest
# stale leads of the last 90 days. The literals 20 and 200 are CUSTOMERS and CAMPAIGNS.
_LOAD_SQL = """
INSERT INTO leads_lead (
    customer_id, campaign_id, external_id, lead_type, city, source, last_activity, stage,
    pricing_plan, rescheduled_at, created_at, status, due_at, attempt_count, reschedule_count,
    first_attempt_at, last_attempt_at, closed_reason, received_at, updated_at)
SELECT 1 + (campaign - 1) %% 20, campaign, 'bench-' || g,
       CASE WHEN r < 0.25 OR (r < 0.45 AND u < 0.5) THEN 'live' ELSE 'stale' END,
       (%(cities)s::text[])[1 + floor(u * array_length(%(cities)s::text[], 1))::int],
       (%(sources)s::text[])[1 + floor(v * array_length(%(sources)s::text[], 1))::int],
       created - v * interval '30 days',
       (%(stages)s::text[])[1 + floor(w * array_length(%(stages)s::text[], 1))::int],
       (ARRAY['starter', 'pro', 'enterprise'])[1 + (campaign %% 3)],
       CASE WHEN r >= 0.15 AND r < 0.45 THEN due END,
       created,
       CASE WHEN r >= 0.25 AND r < 0.45 THEN 'waiting' ELSE 'ready' END,
       due,
       CASE WHEN r >= 0.15 AND r < 0.45 THEN 1 + floor(w * 2)::int ELSE 0 END,
       CASE WHEN r >= 0.15 AND r < 0.45 THEN 1 + floor(w * 2)::int ELSE 0 END,
       CASE WHEN r >= 0.15 AND r < 0.45 THEN created + interval '5 minutes' END,
       CASE WHEN r >= 0.15 AND r < 0.45 THEN created + interval '5 minutes' END,
       '', now(), now()
FROM (
    SELECT g, r, u, v, w, campaign, created,
           CASE WHEN r < 0.15 THEN created
                WHEN r < 0.25 THEN now() - u * interval '3 hours'
                WHEN r < 0.45 THEN now() + interval '1 hour' + u * interval '7 days'
                ELSE created END AS due
    FROM (
        SELECT g, r, u, v, w, 1 + g %% 200 AS campaign,
               CASE WHEN r < 0.15 THEN now() - u * interval '6 hours'
                    WHEN r < 0.45 THEN now() - interval '1 day' - u * interval '3 days'
                    ELSE now() - interval '1 day' - u * interval '90 days' END AS created
        FROM (SELECT g, random() AS r, random() AS u, random() AS v, random() AS w
              FROM generate_series(1, %(leads)s) g) raw
    ) timed
) s
"""

# The physical cost of writing what rescoring writes (key and deadline, changed values,
# so no HOT shortcut) to the same rows, same table, same indexes.
_RAW_UPDATE_SQL = """
UPDATE leads_lead
SET priority_key = priority_key + 1e-6, sla_deadline = sla_deadline + interval '1 millisecond',
    scored_version = scored_version
WHERE status <> 'closed'
"""

# A lead handed out twice: a 'claimed' event whose previous claim-or-return event of the
# same lead is also 'claimed' (no outcome, release or expiry in between). Ordered by id:
# a claim's event is written after the row it takes became claimable again.
_DOUBLE_CLAIMS_SQL = """
SELECT count(*) FROM (
    SELECT kind, lag(kind) OVER (PARTITION BY lead_id ORDER BY id) AS previous
    FROM leads_leadevent WHERE kind IN ('claimed', 'attempt', 'released', 'lease_expired')
) e
WHERE kind = 'claimed' AND previous = 'claimed'
"""


@dataclass(frozen=True)
class WrkResult:
    clients: int
    campaigns: int
    seconds: float
    units: int
    claims: int
    empty: int
    errors: int
    next_p50_ms: float | None
    next_p99_ms: float | None
    all_p50_ms: float
    all_p99_ms: float
    first10_s: float
    last10_s: float
    finished_threads: int
    # Next-lead latencies: bucket → count (see BUCKETS_PER_E).
    histogram: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def units_s(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0


# --- Data ---------------------------------------------------------------------------------


def _create_owners(url: str) -> None:
    """Customers, campaigns calling every day around the clock, and contractors."""
    create_owners(url, calling_hours=("00:00", "23:59:59.999999"), calling_days="{0,1,2,3,4,5,6}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leads_contractor (id, name, active, created_at, claims_made) "
            "SELECT g, 'Bench contractor ' || g, true, now(), 0 FROM generate_series(1, %s) g",
            [CYCLE_CONTRACTORS * CYCLE_RUNS],
        )
        conn.execute(
            "INSERT INTO leads_contractor_campaigns (contractor_id, campaign_id) "
            "SELECT c, g FROM generate_series(1, %s) c, generate_series(1, %s) g",
            [CYCLE_CONTRACTORS * CYCLE_RUNS, CAMPAIGNS],
        )
        pool = CLAIMS_POOL_PER_RUN * CLAIMS_RUNS
        conn.execute(
            "INSERT INTO leads_contractor (id, name, active, created_at, claims_made) "
            "SELECT %s + j, 'Bench claimer ' || j, true, now(), 0 FROM generate_series(0, %s - 1) j",
            [CLAIMS_BASE, pool],
        )
        conn.execute(
            "INSERT INTO leads_contractor_campaigns (contractor_id, campaign_id) "
            "SELECT %s + j, (j * %s + i) %% %s + 1 FROM generate_series(0, %s - 1) j, "
            "generate_series(0, %s - 1) i",
            [CLAIMS_BASE, CLAIMS_TUPLE, CAMPAIGNS, pool, CLAIMS_TUPLE],
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('leads_contractor', 'id'), %s)", [CLAIMS_BASE + pool]
        )


def _load_leads(url: str, leads: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("SELECT setseed(0.42)")
        conn.execute(_LOAD_SQL, {"leads": leads, "cities": CITIES, "sources": SOURCES, "stages": STAGES})
        seconds = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE leads_lead")
    return seconds


def _run_dry(conn: psycopg.Connection[Any]) -> bool:
    """Whether the queue has no ready lead left (one index probe), for a run that stops at a
    count of cycles: a queue too small for it (``--leads`` small, ``--decay-claims`` large)
    would otherwise answer 204 until wrk's hour is up."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM leads_lead WHERE status = 'ready')").fetchone()
    return not (row and row[0])


def _queue_figures(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM leads_lead GROUP BY status").fetchall()
    return {str(status): int(count) for status, count in rows}


def _vacuum(url: str) -> None:
    """VACUUM ANALYZE the lead table. The phases that leave dead row versions behind (a
    rescoring pass rewrites every lead) are followed by one, as autovacuum would do on a
    PostgreSQL with its default settings (0007_queue_autovacuum tunes it for the queue);
    these machines run with autovacuum off, and a claim stepping over a million dead index
    entries measures that setting, not the engine."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE leads_lead")


def _raw_update(url: str) -> tuple[float, int]:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        cursor = conn.execute(_RAW_UPDATE_SQL)
        conn.commit()
        return time.perf_counter() - started, cursor.rowcount


def _double_claims(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(_DOUBLE_CLAIMS_SQL).fetchone()
    return int(row[0]) if row else 0


# --- Rescoring (in a child process on the throwaway database) -------------------------------


def rescore_child(*, new_version: bool) -> None:
    """Run in ``manage.py shell``: optionally switch the default policy to a new version with
    another decay (so every key changes), run ``rescore_leads()`` (which times each batch's
    write, one autocommit UPDATE), print one JSON line."""
    from django.db import transaction

    from prioritization import services
    from prioritization.models import PolicyVersion, PriorityPolicy, version_values

    if new_version:
        with transaction.atomic():
            policy = PriorityPolicy.objects.select_for_update().get(customer__isnull=True)
            current = policy.current_version or services.ensure_default_policy()
            values = version_values(current)
            values["live_decay_minutes"] = current.live_decay_minutes * 1.25
            values["stale_activity_decay_days"] = current.stale_activity_decay_days * 1.25
            number = (
                PolicyVersion.objects.filter(policy=policy).order_by("-number").first() or current
            ).number
            policy.current_version = PolicyVersion.objects.create(
                policy=policy, number=number + 1, note="claim benchmark", **values
            )
            policy.save(update_fields=["current_version"])

    started = time.perf_counter()
    summary = services.rescore_leads()
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "scanned": summary.scanned,
                "rewritten": summary.rewritten,
                "batches": summary.batches,
                "skipped": summary.skipped,
                "max_batch_ms": summary.max_batch_seconds * 1000,
            }
        )
    )


def _start_rescore(url: str, *, new_version: bool) -> subprocess.Popen[str]:
    code = f"from prioritization.claim_bench import rescore_child; rescore_child(new_version={new_version!r})"
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=settings.BASE_DIR,
        env=child_environment(url),
        stdout=subprocess.PIPE,
        text=True,
    )


def _finish_rescore(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"rescoring failed (exit {process.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# --- Reference ------------------------------------------------------------------------------


def _run_reference(url: str, *, leads: int, seconds: int) -> dict[str, Any]:
    script = settings.BASE_DIR.parent / "shared" / "bench-reference" / "claim_limit.sh"
    if not script.exists():
        raise RuntimeError(f"The reference script {script} is missing.")
    result = subprocess.run(
        ["bash", str(script), "--leads", str(leads), "--seconds", str(seconds)],  # noqa: S607
        env=child_environment(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"claim_limit.sh failed: {result.stderr.strip()[-500:]}")
    reference: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return reference


# --- Server and load ------------------------------------------------------------------------


def _percentile_ms(histogram: dict[str, int], fraction: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for bucket in sorted(histogram, key=int):
        seen += histogram[bucket]
        if seen >= rank:
            # The middle of the bucket, in ms (buckets are 2% wide).
            return round(math.exp((int(bucket) + 0.5) / BUCKETS_PER_E) / 1000, 2)
    return None


def _wrk(
    port: int,
    key: str,
    *,
    mode: str,
    clients: int,
    campaigns: int,
    seconds: float,
    contractor_base: int,
    target_per_thread: int = 0,
    until: Callable[[], bool] | None = None,
) -> WrkResult:
    """One wrk run with one connection per thread, so that each connection is one contractor."""
    with tempfile.TemporaryDirectory() as scratch:
        done_file = Path(scratch) / "done"
        command = [
            "wrk",
            "-t",
            str(clients),
            "-c",
            str(clients),
            "-d",
            f"{max(1, math.ceil(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_SCRIPT),
            f"http://127.0.0.1:{port}",
            "--",
            mode,
            key,
            str(contractor_base),
            str(campaigns),
            str(clients),
            str(target_per_thread),
            str(done_file),
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if target_per_thread or until is not None:
                # Once every thread reached its target (or `until` holds), SIGINT ends wrk early.
                begun = time.monotonic()
                while process.poll() is None:
                    # wrk installs its SIGINT handler at start: give it a second first.
                    if time.monotonic() - begun < 1.0:
                        time.sleep(0.1)
                        continue
                    if (until is not None and until()) or (
                        target_per_thread
                        and done_file.exists()
                        and len(done_file.read_text().split()) >= clients
                    ):
                        process.send_signal(signal.SIGINT)
                        break
                    time.sleep(0.1)
            out, err = process.communicate()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    line = next((line for line in out.splitlines() if line.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {err.strip()[-500:]} {out.strip()[-500:]}")
    data = json.loads(line[len("BENCH ") :])
    histogram: dict[str, int] = data["histogram"]
    return WrkResult(
        clients=clients,
        campaigns=campaigns,
        seconds=data["duration_us"] / 1e6,
        units=data["units"],
        claims=data["claims"],
        empty=data["empty"],
        errors=data["errors"] + data["http_errors"] + data["timeouts"],
        next_p50_ms=_percentile_ms(histogram, 0.50),
        next_p99_ms=_percentile_ms(histogram, 0.99),
        all_p50_ms=round(data["all_p50_us"] / 1000, 2),
        all_p99_ms=round(data["all_p99_us"] / 1000, 2),
        first10_s=data["first10_us"] / 1e6,
        last10_s=data["last10_us"] / 1e6,
        finished_threads=data["finished_threads"],
        histogram=histogram,
    )


def _pooled(runs: list[WrkResult]) -> WrkResult:
    """Runs of one scenario as one: counts and seconds summed, latency histograms merged
    (the client-side figures of wrk itself, which are not mergeable, are the worst run's)."""
    histogram: dict[str, int] = {}
    for run in runs:
        for bucket, count in run.histogram.items():
            histogram[bucket] = histogram.get(bucket, 0) + count
    return WrkResult(
        clients=runs[0].clients,
        campaigns=runs[0].campaigns,
        seconds=sum(r.seconds for r in runs),
        units=sum(r.units for r in runs),
        claims=sum(r.claims for r in runs),
        empty=sum(r.empty for r in runs),
        errors=sum(r.errors for r in runs),
        next_p50_ms=_percentile_ms(histogram, 0.50),
        next_p99_ms=_percentile_ms(histogram, 0.99),
        all_p50_ms=max(r.all_p50_ms for r in runs),
        all_p99_ms=max(r.all_p99_ms for r in runs),
        first10_s=0.0,
        last10_s=0.0,
        finished_threads=0,
        histogram=histogram,
    )


def _cycles_8x5(
    port: int,
    key: str,
    contractor_base: int,
    *,
    seconds: float,
    target_per_thread: int = 0,
    until: Callable[[], bool] | None = None,
) -> WrkResult:
    """Claim cycles in the reference's shape: 8 clients, tuples of 5 campaigns."""
    return _wrk(
        port,
        key,
        mode="cycle",
        clients=8,
        campaigns=5,
        seconds=seconds,
        contractor_base=contractor_base,
        target_per_thread=target_per_thread,
        until=until,
    )


def _cycle_bases() -> Iterator[int]:
    """The first contractor of each successive cycle run (see CYCLE_CONTRACTORS)."""
    return iter(range(1, CYCLE_CONTRACTORS * CYCLE_RUNS, CYCLE_CONTRACTORS))


def _rescore_under_load(
    url: str, port: int, key: str, contractor_base: int
) -> tuple[dict[str, Any], WrkResult]:
    """A second full pass (a new policy version changes every key) while 8 clients run
    claim cycles, from the start of the pass to its end."""
    process = _start_rescore(url, new_version=True)
    box: dict[str, WrkResult] = {}

    def load() -> None:
        box["wrk"] = _cycles_8x5(
            port, key, contractor_base, seconds=3600, until=lambda: process.poll() is not None
        )

    driver = threading.Thread(target=load)
    driver.start()
    try:
        rescore = _finish_rescore(process)
    finally:
        if process.poll() is None:
            process.kill()
        driver.join()
    return rescore, box["wrk"]


QUEUE_COMPARISON_ROUNDS = 3


def _compare_queue_sizes(
    full: tuple[int, str, Iterator[int]], small: tuple[int, str, Iterator[int]], *, seconds: int
) -> tuple[WrkResult, WrkResult]:
    """8 clients × 5 campaigns of cycles on the full queue and on the small one (each a
    (port, key, contractor bases)), in alternating rounds, each side's rounds pooled. The
    machine's speed drifts over a run, and the full queue gathers dead rows: one run of
    each, minutes apart, measured those as much as the queues (a p99 ratio of 1.58 where
    the two queues, fresh and side by side, were within noise of each other)."""
    small_port, small_key, small_bases = small
    _cycles_8x5(small_port, small_key, next(small_bases), seconds=1)
    runs: tuple[list[WrkResult], list[WrkResult]] = ([], [])
    # Shorter in all than one cell of the matrix: at ~650 cycles/s (the fastest day so far)
    # the small queue's ~8,000 ready leads last ~12 s, and a queue run dry answers fast.
    round_seconds = max(1, math.ceil(seconds / (QUEUE_COMPARISON_ROUNDS + 1)))
    for _ in range(QUEUE_COMPARISON_ROUNDS):
        for side, (port, key, bases) in zip(runs, (full, small), strict=True):
            side.append(_cycles_8x5(port, key, next(bases), seconds=round_seconds))
    return _pooled(runs[0]), _pooled(runs[1])


# --- The benchmark --------------------------------------------------------------------------


def _prepare(url: str, leads: int, write: Callable[[str], None]) -> dict[str, Any]:
    _create_owners(url)
    load_seconds = _load_leads(url, leads)
    queue = _queue_figures(url)
    write(
        f"loaded {leads:,} leads in {load_seconds:.1f} s "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(queue.items()))})"
    )
    rescore = _finish_rescore(_start_rescore(url, new_version=False))
    _vacuum(url)
    return {"load_seconds": load_seconds, "queue": queue, "rescore": rescore}


def _row(label: str, result: WrkResult, unit: str) -> str:
    return (
        f"{label:<26}{result.clients:>4} cl {result.campaigns:>3} camp  {result.units_s:>8,.0f} {unit}/s  "
        f"next-lead p50 {result.next_p50_ms or 0:>6.1f} p99 {result.next_p99_ms or 0:>6.1f} ms  "
        f"all p99 {result.all_p99_ms:>6.1f} ms  empty {result.empty}  errors {result.errors}"
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def run_claim_benchmark(
    *, leads: int, seconds: int, decay_claims: int, small_leads: int, write: Callable[[str], None]
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError(
            "wrk is not installed: the claim benchmark drives the API with it. "
            "Install it with `apt-get install -y wrk` (Debian/Ubuntu) and run again."
        )
    result: dict[str, Any] = {"leads": leads, "seconds": seconds, "web_workers": WEB_WORKERS}
    matrix: list[WrkResult] = []
    with (
        throwaway_database("leadrank_bench_claim") as url,
        throwaway_database("leadrank_bench_claim_small") as small_url,
    ):
        prepared = _prepare(url, leads, write)
        rescore1 = prepared["rescore"]
        raw_seconds, raw_rows = _raw_update(url)
        _vacuum(url)
        write(
            f"full rescoring pass  {rescore1['seconds']:.1f} s for {rescore1['rewritten']:,} rows; "
            f"raw UPDATE of the same rows {raw_seconds:.1f} s ({raw_rows:,}); "
            f"ratio {rescore1['seconds'] / raw_seconds:.2f}× (goal ≤ 2)"
        )
        write(f"small queue for comparison: {small_leads:,} leads…")
        _prepare(small_url, small_leads, write)
        write(f"reference claim_limit.sh ({leads:,} leads, {seconds} s)…")
        reference = _run_reference(url, leads=leads, seconds=seconds)
        write(
            f"reference            {reference['claims_s']:>8,.0f} claims/s  p50 {reference['p50_ms']} ms  "
            f"p99 {reference['p99_ms']} ms  (8 clients, 5 campaigns)"
        )
        key = create_api_key(url, name="claim-bench", scope="contract-app")
        small_key = create_api_key(small_url, name="claim-bench", scope="contract-app")
        with (
            web_server(url, workers=WEB_WORKERS) as port,
            web_server(small_url, workers=WEB_WORKERS) as small_port,
        ):
            bases = _cycle_bases()
            _cycles_8x5(port, key, next(bases), seconds=2)
            rescore2, during = _rescore_under_load(url, port, key, next(bases))
            _vacuum(url)
            write(
                f"rescoring under load {rescore2['seconds']:.1f} s, "
                f"{rescore2['rewritten']:,} rows rewritten, "
                f"longest batch {rescore2['max_batch_ms']:.0f} ms (goal ≤ 250); claims meanwhile: "
                f"{during.claims:,}, empty answers {during.empty} (goal 0), errors {during.errors}"
            )
            for clients in (1, 8, 32):
                for campaigns in (1, 5, 20):
                    run = _wrk(
                        port,
                        key,
                        mode="cycle",
                        clients=clients,
                        campaigns=campaigns,
                        seconds=seconds,
                        contractor_base=next(bases),
                    )
                    matrix.append(run)
                    write(_row("cycles (claim + outcome)", run, "cycles"))
            # The matrix left ~30,000 cycles of dead row versions behind; the small queue
            # was vacuumed when it was made. Compare queue sizes, not vacuum states.
            _vacuum(url)
            full, small = _compare_queue_sizes(
                (port, key, bases), (small_port, small_key, _cycle_bases()), seconds=seconds
            )
            write(_row(f"rounds, {leads:,} leads", full, "cycles"))
            write(_row(f"rounds, {small_leads:,} leads", small, "cycles"))
            claims_alone: list[WrkResult] = []
            for index, clients in enumerate((8, 32)):
                run = _wrk(
                    port,
                    key,
                    mode="claims",
                    clients=clients,
                    campaigns=CLAIMS_TUPLE,
                    seconds=seconds,
                    contractor_base=CLAIMS_BASE + index * CLAIMS_POOL_PER_RUN,
                )
                claims_alone.append(run)
                write(_row("claims alone", run, "claims"))
            _vacuum(url)
            per_thread = math.ceil(decay_claims / 8)
            write(f"no-decay run: {per_thread * 8:,} cycles, 8 clients, 5 campaigns…")
            with psycopg.connect(url, autocommit=True) as watch:
                decay = _cycles_8x5(
                    port,
                    key,
                    next(bases),
                    seconds=3600,
                    target_per_thread=per_thread,
                    until=lambda: _run_dry(watch),
                )
            write(_row("no-decay run", decay, "cycles"))
            if decay.finished_threads < 8:
                write("no-decay run stopped early: the queue ran out of ready leads (raise --leads)")
        queue_after = _queue_figures(url)
        double_claims = _double_claims(url) + _double_claims(small_url)

    cell = {(r.clients, r.campaigns): r for r in matrix}
    at_8x5, at_32x5 = cell[(8, 5)], cell[(32, 5)]
    decay_ratio = _ratio(decay.last10_s, decay.first10_s)
    result.update(
        {
            "load_seconds": round(prepared["load_seconds"], 1),
            "queue_before": prepared["queue"],
            "queue_after": queue_after,
            "rescore_seconds": round(rescore1["seconds"], 2),
            "rescore_rows": rescore1["rewritten"],
            "raw_update_seconds": round(raw_seconds, 2),
            "rescore_ratio": round(rescore1["seconds"] / raw_seconds, 3),
            "rescore_max_batch_ms": round(max(rescore1["max_batch_ms"], rescore2["max_batch_ms"]), 1),
            "rescore_under_load_seconds": round(rescore2["seconds"], 2),
            "rescore_under_load_rows": rescore2["rewritten"],
            "claims_during_rescore": during.claims,
            "empty_during_rescore": during.empty,
            "reference": reference,
            "matrix": [
                {
                    "clients": r.clients,
                    "campaigns": r.campaigns,
                    "cycles_s": round(r.units_s, 1),
                    "next_p50_ms": r.next_p50_ms,
                    "next_p99_ms": r.next_p99_ms,
                    "all_p50_ms": r.all_p50_ms,
                    "all_p99_ms": r.all_p99_ms,
                    "empty": r.empty,
                    "errors": r.errors,
                }
                for r in matrix
            ],
            "claims_alone": [
                {
                    "clients": r.clients,
                    "campaigns": r.campaigns,
                    "claims_s": round(r.units_s, 1),
                    "p50_ms": r.next_p50_ms,
                    "p99_ms": r.next_p99_ms,
                    "empty": r.empty,
                    "errors": r.errors,
                }
                for r in claims_alone
            ],
            "cycles_s_8x5": round(at_8x5.units_s, 1),
            "cycle_ratio_to_reference": _ratio(at_8x5.units_s, reference["claims_s"]),
            "claims_alone_ratio_to_reference": _ratio(claims_alone[0].units_s, reference["claims_s"]),
            "next_p99_ms_32x5": at_32x5.next_p99_ms,
            "next_p99_ms_8x5": at_8x5.next_p99_ms,
            "decay_cycles": decay.units,
            "decay_first10_s": round(decay.first10_s, 2),
            "decay_last10_s": round(decay.last10_s, 2),
            "decay_ratio": decay_ratio,
            "decay_complete": decay.finished_threads == 8,
            "small_leads": small_leads,
            "queue_comparison_rounds": QUEUE_COMPARISON_ROUNDS,
            "cycles_s_full_rounds": round(full.units_s, 1),
            "cycles_s_small_rounds": round(small.units_s, 1),
            "next_p99_ms_full_rounds": full.next_p99_ms,
            "next_p99_ms_small_rounds": small.next_p99_ms,
            "empty_full_rounds": full.empty,
            "empty_small_rounds": small.empty,
            "p99_ratio_full_to_small": _ratio(full.next_p99_ms, small.next_p99_ms),
            "double_claims": double_claims,
            "errors": sum(r.errors for r in [*matrix, *claims_alone, decay, full, small, during]),
        }
    )
    result["goals"] = {
        "cycles_ge_0.15x_reference": (result["cycle_ratio_to_reference"] or 0) >= 0.15,
        "next_p99_32_clients_le_50ms": (at_32x5.next_p99_ms or 1e9) <= 50,
        # A run the queue cut short does not show the goal's 100,000 claims.
        "no_decay_le_1.25": result["decay_complete"] and decay_ratio is not None and decay_ratio <= 1.25,
        "p99_full_over_small_le_1.3": (result["p99_ratio_full_to_small"] or 1e9) <= 1.3,
        "no_double_claims": double_claims == 0,
        "rescore_le_2x_raw": result["rescore_ratio"] <= 2,
        "batches_le_250ms": result["rescore_max_batch_ms"] <= 250,
        "no_empty_during_rescore": during.empty == 0,
    }
    write(
        f"summary: cycles/s at 8×5 {at_8x5.units_s:,.0f} = "
        f"{result['cycle_ratio_to_reference']}× the reference "
        f"(goal ≥ 0.15); next-lead p99 at 32 clients {at_32x5.next_p99_ms} ms (goal ≤ 50); "
        f"decay {decay_ratio} (goal ≤ 1.25); p99 1M/10k {result['p99_ratio_full_to_small']} (goal ≤ 1.3); "
        f"double claims {double_claims}"
    )
    return result
