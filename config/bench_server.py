"""What the benchmarks share: the synthetic customers and campaigns, an API key and the
production web server (granian, as in the Procfile), all on a throwaway database."""

import http.client
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.conf import settings

from config.throwaway_database import child_environment

HEALTH_TIMEOUT_SECONDS = 60.0

# The synthetic world: 200 campaigns over 20 customers, attribute values to draw from.
CUSTOMERS = 20
CAMPAIGNS = 200
CITIES = [f"City {i}" for i in range(60)]
SOURCES = [
    "Google",
    "Direct Traffic",
    "Olark Chat",
    "Organic Search",
    "Reference",
    "Referral Sites",
    "Facebook",
]
STAGES = [
    "Email Opened",
    "SMS Sent",
    "Page Visited on Website",
    "Converted to Lead",
    "Olark Chat Conversation",
]


def create_owners(url: str, *, calling_hours: tuple[str, str], calling_days: str) -> None:
    """The customers and their campaigns (ids 1…CUSTOMERS, 1…CAMPAIGNS)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO leads_customer (id, name, pricing_plan, created_at) "
            "SELECT g, 'Bench customer ' || g, 'pro', now() FROM generate_series(1, %s) g",
            [CUSTOMERS],
        )
        conn.execute(
            "INSERT INTO leads_campaign (id, customer_id, name, active, time_zone, calling_hours_start, "
            "calling_hours_end, calling_days, created_at) "
            "SELECT g, 1 + (g - 1) %% %s, 'Bench campaign ' || g, true, 'UTC', %s, %s, %s, now() "
            "FROM generate_series(1, %s) g",
            [CUSTOMERS, *calling_hours, calling_days, CAMPAIGNS],
        )


def create_api_key(url: str, *, name: str, scope: str) -> str:
    """A new key in the database at ``url`` (through the real command)."""
    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", name, "--scope", scope],
        cwd=settings.BASE_DIR,
        env=child_environment(url),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_health(port: int) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the web server did not become healthy")


@contextmanager
def web_server(url: str, *, workers: int, **env: str) -> Iterator[int]:
    """The production server (granian, DEBUG off, as the Procfile runs it) on the database
    at ``url``; yields its port."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "config.wsgi:application",
            "--workers",
            str(workers),
            "--blocking-threads",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # Load generators may leave idle connections open at the end; do not wait.
            "--workers-kill-timeout",
            "3",
            "--log-level",
            "warning",
        ],
        cwd=settings.BASE_DIR,
        env=child_environment(url, DJANGO_DEBUG="false", DATABASE_CONN_MAX_AGE="600", **env),
    )
    try:
        _wait_for_health(port)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
