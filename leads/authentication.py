"""API key authentication: ``Authorization: Api-Key <key>``.

Keys are generated and stored (SHA-512 of a high-entropy secret, never the key itself)
by djangorestframework-api-key. Verifying one is a lookup by prefix plus one SHA-512.

The Contract app sends the same key thousands of times a second, so each web process
remembers a verified key for ``LEADRANK_API_KEY_CACHE_SECONDS`` (default 30 s): the
request path then costs no query. The price is that revoking a key, or its expiry,
takes effect in every process within that many seconds (0 turns the cache off).
"""

import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework_api_key.permissions import KeyParser

from leads.admin_widgets import may_view_leads
from leads.models import ApiKey, ApiScope


@dataclass(frozen=True)
class ApiClient:
    """The caller behind a valid key; stands in for ``request.user``."""

    key_id: str
    name: str
    scope: str
    customer_id: int | None

    is_authenticated = True
    is_active = True
    is_staff = False

    @property
    def pk(self) -> str:
        return self.key_id


# Verified keys of this process: SHA-256 of the key → (client, its expiry, wall-clock time
# of the check). Only valid keys are remembered, so a flood of wrong keys cannot grow it
# past the number of keys that exist.
_verified: dict[bytes, tuple["ApiClient", dt.datetime | None, float]] = {}


def forget_verified_keys() -> None:
    """Drop this process's remembered keys (tests; a revocation in this process)."""
    _verified.clear()


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Api-Key"
    _parser = KeyParser()

    def authenticate(self, request: Request) -> tuple[ApiClient, None] | None:
        key = self._parser.get(request._request)
        if key is None:
            return None
        ttl: int = settings.LEADRANK_API_KEY_CACHE_SECONDS
        digest = hashlib.sha256(key.encode()).digest()
        remembered = _verified.get(digest)
        if remembered is not None:
            client, expires, checked = remembered
            if time.time() - checked < ttl and (expires is None or timezone.now() < expires):
                return client, None
        client, expires = _verify(key)
        if ttl > 0:
            _verified[digest] = (client, expires, time.time())
        return client, None

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when no key is sent.
        return self.keyword


def _verify(key: str) -> tuple[ApiClient, dt.datetime | None]:
    prefix, _, _ = key.partition(".")
    api_key = ApiKey.objects.filter(prefix=prefix, revoked=False).first()
    if api_key is None or not api_key.is_valid(key):
        _verified.pop(hashlib.sha256(key.encode()).digest(), None)
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
    if api_key.expiry_date is not None and api_key.expiry_date < timezone.now():
        raise exceptions.AuthenticationFailed("This API key has expired.")
    client = ApiClient(
        key_id=api_key.pk, name=api_key.name, scope=api_key.scope, customer_id=api_key.customer_id
    )
    return client, api_key.expiry_date


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Describes :class:`ApiKeyAuthentication` to drf-spectacular (registered on import);
    without it schema generation warns once per view that it cannot describe the key."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        # The value is "Api-Key <key>"; OpenAPI's apiKey scheme sends the header verbatim.
        return {"type": "apiKey", "in": "header", "name": "Authorization"}


def request_scope(request: Request) -> str | None:
    """The caller's scope: the key's; for a staff user signed in to the admin, what their
    admin permissions allow (:func:`staff_session_scope`)."""
    if isinstance(request.user, ApiClient):
        return request.user.scope
    return staff_session_scope(request)


def staff_session_scope(request: Request) -> str | None:
    """A signed-in staff user's scope through the API, which has no per-model permissions of
    its own: a superuser has ``admin``; other staff may read (safe methods only) as ``admin``
    when they may view leads in the admin, and nothing else. Writing through a session would
    otherwise let staff whom the admin shows leads read-only push, claim or withdraw them."""
    if not is_staff_session(request):
        return None
    if request.user.is_superuser:
        return ApiScope.ADMIN
    # The lead admin decides who may view leads, as it does for the admin's own screens.
    if request.method in SAFE_METHODS and may_view_leads(request._request):
        return ApiScope.ADMIN
    return None


def is_staff_session(request: Request) -> bool:
    """Whether the caller is an active staff user signed in to the admin (the API docs are
    theirs to read whatever their permissions)."""
    user = request.user
    return user is not None and user.is_authenticated and user.is_active and user.is_staff


def request_customer_id(request: Request) -> int | None:
    """The one customer an ingest key is bound to; ``None`` means every customer."""
    if isinstance(request.user, ApiClient) and request.user.scope == ApiScope.INGEST:
        return request.user.customer_id
    return None
