"""`manage.py bench_metrics`: what metrics and alerts cost, measured.

1. Recording a next-lead answer (histogram, counter, the demand of a 5-campaign tuple), in
   one process (prometheus_client's in-memory values) and in multiprocess mode (values in
   memory-mapped files): microseconds per answer.
2. django-prometheus' request middleware (``PrometheusBeforeMiddleware`` /
   ``PrometheusAfterMiddleware``) around a view that answers at once, against the view
   alone, alternating rounds: its cost per request, in both modes.
3. A scrape of ``/metrics`` and an alert evaluation on a throwaway database holding N leads
   (the claim benchmark's synthetic world: 200 campaigns, 15% live leads of the last six
   hours), every campaign recently asked for, past days rolled up as the beat task keeps them.

Each measurement runs in a child process (its own settings and mode); the last line
printed is one JSON object with every figure.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from config.bench_server import create_owners
from config.throwaway_database import child_environment, throwaway_database

TUPLE = [1, 2, 3, 4, 5]
_BEFORE = "django_prometheus.middleware.PrometheusBeforeMiddleware"
_AFTER = "django_prometheus.middleware.PrometheusAfterMiddleware"


def time_recording(*, calls: int) -> dict[str, float]:
    """Microseconds per recorded next-lead answer (no database: the tuple's campaigns were
    written a moment ago, as on a busy server)."""
    from prioritization import demand, metrics

    demand.recorder = demand.DemandRecorder(max_lag_seconds=1e12)
    demand.recorder._written.update(TUPLE)
    demand.recorder._last_write = time.time()
    record = metrics.record_next_lead
    started = time.perf_counter()
    for _ in range(calls):
        record(seconds=0.003, status=200, campaign_ids=TUPLE, at=time.time())
    lead = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(calls):
        record(seconds=0.003, status=204, campaign_ids=TUPLE, at=time.time())
    empty = time.perf_counter() - started
    return {"lead_us": lead / calls * 1e6, "empty_us": empty / calls * 1e6}


def time_middleware(*, requests: int, rounds: int) -> dict[str, float]:
    """Microseconds per request of django-prometheus' two middlewares: a request object and a
    view that answers at once, called directly and through the middlewares (with the
    ``process_view`` hook the handler would call); medians of alternating rounds."""
    from django.test import RequestFactory
    from django.urls import ResolverMatch
    from django_prometheus.middleware import (  # type: ignore[import-untyped]
        PrometheusAfterMiddleware,
        PrometheusBeforeMiddleware,
    )

    factory = RequestFactory()

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b'{"lead_id": 1}', content_type="application/json")

    after = PrometheusAfterMiddleware(view)
    before = PrometheusBeforeMiddleware(after)
    match = ResolverMatch(view, (), {}, url_name="next-lead", route="api/v1/next-lead/")

    def per_request(instrumented: bool) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            request = factory.post("/api/v1/next-lead/", data=b"{}", content_type="application/json")
            request.resolver_match = match
            if instrumented:
                after.process_view(request, view, (), {})
                before(request)
            else:
                view(request)
        return (time.perf_counter() - started) / requests * 1e6

    without, with_ = [], []
    for _ in range(rounds):
        without.append(per_request(False))
        with_.append(per_request(True))
    return {
        "without_us": statistics.median(without),
        "with_us": statistics.median(with_),
        "overhead_us": statistics.median(w - o for w, o in zip(with_, without, strict=True)),
    }


def time_scrape(*, scrapes: int) -> dict[str, float]:
    """Milliseconds per /metrics exposition and per alert evaluation, this database."""
    from django.utils import timezone

    from prioritization import alerts, metrics, sla

    # Past days come from the rollups in production (the beat task keeps them): roll them up.
    rolled = time.perf_counter()
    sla.rollup_sla(now=timezone.now())
    rolled = time.perf_counter() - rolled
    metrics.exposition()  # warm the connection and the policy cache
    seconds = []
    for _ in range(scrapes):
        started = time.perf_counter()
        body = metrics.exposition()
        seconds.append(time.perf_counter() - started)
    evaluations = []
    for _ in range(scrapes):
        started = time.perf_counter()
        alerts.evaluate_alerts(now=timezone.now())
        evaluations.append(time.perf_counter() - started)
    return {
        "scrape_ms": statistics.median(seconds) * 1e3,
        "scrape_max_ms": max(seconds) * 1e3,
        "evaluate_alerts_ms": statistics.median(evaluations) * 1e3,
        "exposition_bytes": float(len(body)),
        "rollup_first_s": rolled,
    }


def child_main(part: str, arguments: dict[str, int]) -> None:
    """Entry point of the child processes: print one JSON line."""
    parts: dict[str, Callable[..., dict[str, float]]] = {
        "recording": time_recording,
        "middleware": time_middleware,
        "scrape": time_scrape,
    }
    print(json.dumps(parts[part](**arguments)))


def _child(part: str, arguments: dict[str, int], env: dict[str, str]) -> dict[str, float]:
    code = (
        "import django; django.setup(); from prioritization import metrics_bench; "
        f"metrics_bench.child_main({part!r}, {arguments!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench_metrics {part} failed:\n{result.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


_DEMAND_SQL = """
INSERT INTO prioritization_campaigndemand (campaign_id, last_asked_at, last_empty_at)
SELECT id, now(), NULL FROM leads_campaign
"""


def _load_world(url: str, leads: int) -> None:
    # The claim benchmark's synthetic world, so that both benchmarks measure the same data.
    from prioritization.claim_bench import _load_leads

    create_owners(url, calling_hours=("00:00", "23:59:59.999999"), calling_days="{0,1,2,3,4,5,6}")
    _load_leads(url, leads)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_DEMAND_SQL)


def run_metrics_benchmark(
    *, leads: int, calls: int, requests: int, scrapes: int, write: Callable[[str], None]
) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    figures: dict[str, Any] = {}
    write(f"Recording {calls:,} next-lead answers, one process and multiprocess mode …")
    figures["record_single_process"] = _child("recording", {"calls": calls}, env)
    with tempfile.TemporaryDirectory() as folder:
        multi = {**env, "PROMETHEUS_MULTIPROC_DIR": folder}
        figures["record_multiprocess"] = _child("recording", {"calls": calls}, multi)
        write(f"django-prometheus middleware, {requests:,} requests × 5 rounds, each mode …")
        figures["middleware_multiprocess"] = _child("middleware", {"requests": requests, "rounds": 5}, multi)
    figures["middleware_single_process"] = _child("middleware", {"requests": requests, "rounds": 5}, env)
    write(f"A throwaway database with {leads:,} leads …")
    with throwaway_database("leadrank_metrics_bench") as url:
        started = time.perf_counter()
        _load_world(url, leads)
        write(f"  loaded in {time.perf_counter() - started:.0f} s; {scrapes} scrapes and alert evaluations …")
        figures["scrape"] = {"leads": leads, **_child("scrape", {"scrapes": scrapes}, child_environment(url))}
    return figures
