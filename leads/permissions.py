"""Which API scope may call what. Object-level customer checks live in the views."""

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from leads.authentication import is_staff_session, request_scope
from leads.models import ApiScope


class _ScopePermission(BasePermission):
    allowed: frozenset[str] = frozenset()
    message = "This API key's scope does not allow this operation."

    def has_permission(self, request: Request, view: Any) -> bool:
        scope = request_scope(request)
        return scope is not None and (scope == ApiScope.ADMIN or scope in self.allowed)


class IsAdminScope(_ScopePermission):
    allowed = frozenset({ApiScope.ADMIN})


class CanIngest(_ScopePermission):
    allowed = frozenset({ApiScope.INGEST})


class IsContractApp(_ScopePermission):
    allowed = frozenset({ApiScope.CONTRACT_APP})


class CanReadLeads(_ScopePermission):
    allowed = frozenset({ApiScope.INGEST, ApiScope.CONTRACT_APP})


class AnyValidKey(_ScopePermission):
    allowed = frozenset(ApiScope.values)


class CanReadDocs(AnyValidKey):
    """The schema and its docs: any valid key, or any staff user signed in to the admin."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_staff_session(request) or super().has_permission(request, view)
