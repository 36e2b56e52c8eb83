"""The API's default pagination (its own module: DRF reads the setting while importing its
generic views, before ``leads.api`` could define it)."""

from rest_framework.pagination import LimitOffsetPagination


class ListPagination(LimitOffsetPagination):
    """Customers, campaigns and contractors: ``?limit=`` up to 1,000 (as leads'), so that
    no request reads a whole table, nor sends the database a limit past bigint."""

    max_limit = 1000
