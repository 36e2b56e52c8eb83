"""GET /healthz: is the database reachable, and the broker?"""

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from kombu import Connection

BROKER_TIMEOUT_SECONDS = 1


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _broker_ok() -> bool:
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


@require_GET
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
