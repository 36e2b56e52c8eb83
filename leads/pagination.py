"""The API's paginators (their own module: DRF reads the default's setting while importing
its generic views, before ``leads.api`` could define it)."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

from leads.ids import MAX_ID

# A query parameter sent more than once: the API reads none of them rather than guess which.
REPEATED_PARAMETER_ERROR = "Give this parameter once."


def count_parameter(
    request: Request, name: str, *, default: int | None, minimum: int, cutoff: int | None = None
) -> int | None:
    """The whole number a page's parameter (``limit``, ``offset``) spells, ``default`` when it
    is not sent, at most ``cutoff``.

    DRF's paginators read ``?limit=abc``, ``?limit=0`` or ``?offset=-5`` as if they had not
    been sent: the client gets a page other than the one it asked for, unsaid. Here each is a
    400 naming the parameter, as every other bad parameter of the API is. Sent empty, it is
    not sent.
    """
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise ValidationError({name: [REPEATED_PARAMETER_ERROR]})
    text = values[0]
    if not text:
        # Not a filter: sent empty (a form's blank field), it narrows nothing nor widens it.
        return default
    if not (text.isascii() and text.isdigit()):  # ASCII only: int() reads "٣" as 3
        raise ValidationError({name: [f"A whole number, at least {minimum}."]})
    # Past a bigint (and int() of thousands of digits raises): cut, or no offset a row has.
    if len(text) > len(str(MAX_ID)) or int(text) > MAX_ID:
        if cutoff is None:
            raise ValidationError({name: [f"A whole number, at most {MAX_ID}."]})
        return cutoff
    value = int(text)
    if value < minimum:
        raise ValidationError({name: [f"A whole number, at least {minimum}."]})
    return value if cutoff is None else min(value, cutoff)


class ListPagination(LimitOffsetPagination):
    """Customers, campaigns and contractors: ``?limit=`` up to 1,000 (as leads'), so that
    no request reads a whole table, nor sends the database a limit past bigint."""

    max_limit = 1000

    def get_limit(self, request: Request) -> int | None:
        return count_parameter(
            request, self.limit_query_param, default=self.default_limit, minimum=1, cutoff=self.max_limit
        )

    def get_offset(self, request: Request) -> int:
        return count_parameter(request, self.offset_query_param, default=0, minimum=0) or 0
