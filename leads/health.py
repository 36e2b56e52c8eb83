"""GET /healthz: is the database reachable, and the broker?"""

import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe
from kombu import Connection

BROKER_TIMEOUT_SECONDS = 1
# How long a process answers with the broker state it last saw. /healthz needs no key, and
# while the broker is down each check holds a web worker for up to its timeouts: probed
# often (a load balancer, or anyone), that would take workers from the next-lead path.
BROKER_STATUS_SECONDS = 10.0

# (monotonic time of the check, broker reachable), of this process.
_broker_seen: tuple[float, bool] | None = None


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _broker_ok() -> bool:
    global _broker_seen
    now = time.monotonic()
    if _broker_seen is not None and now - _broker_seen[0] < BROKER_STATUS_SECONDS:
        return _broker_seen[1]
    _broker_seen = (now, _broker_reachable())
    return _broker_seen[1]


def forget_broker_status() -> None:
    """Check the broker again on the next request (tests; nothing else needs it)."""
    global _broker_seen
    _broker_seen = None


def _broker_reachable() -> bool:
    try:
        with Connection(
            settings.CELERY_BROKER_URL,
            connect_timeout=BROKER_TIMEOUT_SECONDS,
            transport_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
        ) as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        return True
    except Exception:  # any broker failure is reported, never raised
        return False


# GET or HEAD: uptime probes and load balancers often send HEAD, and a 405 reads as down.
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers (the next-lead path needs nothing else), else 503.

    The broker's state is reported but does not fail the check: claims work without it.
    """
    database = _database_ok()
    body = {
        "status": "ok" if database else "unavailable",
        "database": "ok" if database else "unreachable",
        "broker": "ok" if _broker_ok() else "unreachable",
    }
    return JsonResponse(body, status=200 if database else 503)
