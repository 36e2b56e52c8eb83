"""API key authentication: ``Authorization: Api-Key <key>``.

Keys are generated and stored (SHA-512 of a high-entropy secret, never the key itself)
by djangorestframework-api-key. Verifying one is a primary-key-like lookup by prefix plus
one SHA-512: a few microseconds of CPU, no slow password hash on the request path.
"""

from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework_api_key.permissions import KeyParser

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


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Api-Key"
    _parser = KeyParser()

    def authenticate(self, request: Request) -> tuple[ApiClient, ApiKey] | None:
        key = self._parser.get(request._request)
        if key is None:
            return None
        prefix, _, _ = key.partition(".")
        api_key = ApiKey.objects.filter(prefix=prefix, revoked=False).first()
        if api_key is None or not api_key.is_valid(key):
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        if api_key.expiry_date is not None and api_key.expiry_date < timezone.now():
            raise exceptions.AuthenticationFailed("This API key has expired.")
        client = ApiClient(
            key_id=api_key.pk, name=api_key.name, scope=api_key.scope, customer_id=api_key.customer_id
        )
        return client, api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when no key is sent.
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Describes :class:`ApiKeyAuthentication` to drf-spectacular (registered on import);
    without it schema generation warns once per view that it cannot describe the key."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        # The value is "Api-Key <key>"; OpenAPI's apiKey scheme sends the header verbatim.
        return {"type": "apiKey", "in": "header", "name": "Authorization"}


def request_scope(request: Request) -> str | None:
    """The caller's scope: the key's, or ``admin`` for a staff user signed in to the admin."""
    if isinstance(request.user, ApiClient):
        return request.user.scope
    if request.user is not None and request.user.is_authenticated and request.user.is_staff:
        return ApiScope.ADMIN
    return None


def request_customer_id(request: Request) -> int | None:
    """The one customer an ingest key is bound to; ``None`` means every customer."""
    if isinstance(request.user, ApiClient) and request.user.scope == ApiScope.INGEST:
        return request.user.customer_id
    return None
