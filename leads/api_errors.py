"""One error shape for the whole API, and no 500 for input a client can fix."""

from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from leads.services import LeadConflict
from prioritization.services import LeadStateConflict


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, LeadConflict | LeadStateConflict | DataError | IntegrityError):
        # As DRF does for the errors it handles: nothing of a refused request is committed
        # when requests run in a transaction.
        set_rollback()
    if isinstance(exc, LeadConflict | LeadStateConflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away (restart, failover, a persistent connection that died):
        # the request changed nothing; Django drops the broken connection when the request
        # ends, so a retry gets a fresh one.
        set_rollback()
        return Response(
            {"detail": "The database is unavailable; retry shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, RequestDataTooBig):
        # Django's own answer is an HTML page; a client sending a batch wants to be told how
        # much fits (split the batch).
        return Response(
            {
                "detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes "
                "(DATA_UPLOAD_MAX_MEMORY_SIZE): send it in smaller batches."
            },
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, ObjectDoesNotExist):
        # A service looked up an id from the URL that does not exist.
        exc = Http404(str(exc))
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, DataError):
        # A value PostgreSQL refuses (out of range, too long) that validation let through.
        return Response(
            {"detail": "A value is out of range or too long for its field."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    elif isinstance(exc, IntegrityError):
        # A unique or check rule that validation saw hold but the database refused: another
        # request wrote the same name between this one's check and its insert.
        return Response(
            {"detail": "This conflicts with data stored by another request meanwhile; check and retry."},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)


# --- The same errors, described for the OpenAPI schema ----------------------------------------

FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": "Field name → messages; `non_field_errors` for the body as a whole.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_DETAIL = inline_serializer("ErrorDetail", fields={"detail": serializers.CharField()})
_ERRORS = {
    400: OpenApiResponse(FIELD_ERRORS_SCHEMA, "Invalid input, with a message per field."),
    401: OpenApiResponse(_DETAIL, "No API key, or one that is unknown, revoked or expired."),
    403: OpenApiResponse(_DETAIL, "The key's scope or customer does not allow this."),
    404: OpenApiResponse(_DETAIL, "No such object visible to this key."),
    409: OpenApiResponse(_DETAIL, "The lead's state does not allow this (held by another; closed)."),
    429: OpenApiResponse(_DETAIL, "Over a claim cap; `Retry-After` says when to come back."),
    503: OpenApiResponse(_DETAIL, "The database is unavailable; retry after `Retry-After` seconds."),
}


def error_responses(*codes: int, descriptions: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """Schema entries for the errors an operation answers, besides the 401 and 503 every
    operation may; ``descriptions`` words a code for this operation."""
    responses = {code: _ERRORS[code] for code in (*codes, 401, 503)}
    for code, description in (descriptions or {}).items():
        responses[code] = OpenApiResponse(_ERRORS[code].response, description)
    return responses


def is_api_request(request: HttpRequest) -> bool:
    """Whether an error answers the API (its JSON shape) rather than a page (HTML)."""
    return request.path.startswith("/api/")


# Django's own error pages are HTML, and a client that parses every error body of the API
# as JSON would choke on them: under /api/ each is the API's JSON shape instead.


@csrf_exempt  # a POST to a wrong path is told "not found", not Django's HTML CSRF page
def no_api_route(request: HttpRequest, path: str = "") -> HttpResponse:
    """The last route under ``/api/``: a path that no API route matches (``/api/v1/leads/abc/``)
    is the same JSON 404 in debug mode too, where Django answers with its HTML debug page
    rather than ``handler404``. It matches paths that end in a slash only, so a known route
    written without its slash is still redirected to it (``APPEND_SLASH``)."""
    return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: under ``/api/``, :func:`no_api_route`'s answer."""
    if is_api_request(request):
        return no_api_route(request)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler400``: what Django refuses before a view runs (more than
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` query parameters, a Host not in ``ALLOWED_HOSTS``)."""
    if is_api_request(request):
        return JsonResponse(
            {"detail": "Bad request: the request is malformed or too large to read (see the server log)."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: an error no handler turned into an answer (logged with its traceback)."""
    if is_api_request(request):
        return JsonResponse(
            {"detail": "Server error: the request failed; it is logged and will be looked into."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return defaults.server_error(request)
