"""Project-wide request middleware."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.http.response import HttpResponseRedirectBase
from django.middleware import common
from django.utils.http import escape_leading_slashes

from leads.api_errors import is_api_request


def refuse_nul_in_query_string(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[..., HttpResponse]:
    """A query string or a path holding a NUL character (``%00``) is a 400.

    PostgreSQL text cannot hold NUL, and the admin's list filters (Django's own among them)
    hand their parameters to queries unchecked: ``?status__exact=%00`` would fail in the
    database, a 500. No parameter of this project means anything with a NUL in it. Nor does
    a path: the admin looks up an API key (whose primary key is text) by the id in its URL,
    so ``/admin/leads/apikey/%00/change/`` failed the same way.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query:
            return _bad_request(
                request, "The query string holds a NUL character (%00), which no parameter accepts."
            )
        if "\x00" in request.path_info:  # decoded from the URL's %00
            return _bad_request(request, "The path holds a NUL character (%00), which no URL accepts.")
        return get_response(request)

    return middleware


def _bad_request(request: HttpRequest, message: str) -> HttpResponse:
    """A 400 in the API's JSON error shape under ``/api/``, plain text elsewhere."""
    if is_api_request(request):
        return JsonResponse({"detail": message}, status=400)
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


class HttpResponsePermanentRedirectKeepingMethod(HttpResponseRedirectBase):
    """308: as 301, but the client sends the same method and body to the new address."""

    status_code = 308


class CommonMiddleware(common.CommonMiddleware):
    """Django's, but it adds the missing trailing slash (``APPEND_SLASH``) with a 308.

    Its 301 made clients (requests, ``curl -L``, browsers) send a POST again as a GET: a lead
    pushed to ``/api/v1/leads`` was lost behind a 200 that answered the lead list. A 308 keeps
    the method and the body, so Django's refusal in debug mode to redirect a POST (it would
    lose its data) has no reason left.
    """

    response_redirect_class = HttpResponsePermanentRedirectKeepingMethod

    def get_full_path_with_slash(self, request: HttpRequest) -> str:
        return escape_leading_slashes(request.get_full_path(force_append_slash=True))
