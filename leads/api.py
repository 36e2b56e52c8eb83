"""REST API of the lead data store: thin views over :mod:`leads.services`.

Each view validates input, calls one service and serializes the result.
"""

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import QueryDict
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from leads import services
from leads.api_errors import FIELD_ERRORS_SCHEMA, error_responses
from leads.authentication import request_customer_id
from leads.ids import MAX_ID, parse_id
from leads.importers import (
    LEAD_FIELDS,
    TIMESTAMP_RANGE_ERROR,
    future_moment_error,
    latest_moment_for,
    timestamp_in_range,
)
from leads.models import (
    DEFAULT_CALLING_END,
    DEFAULT_CALLING_START,
    Campaign,
    CloseReason,
    Contractor,
    Customer,
    Lead,
    LeadType,
    PricingPlan,
)
from leads.pagination import REPEATED_PARAMETER_ERROR, count_parameter
from leads.permissions import CanIngest, CanReadLeads, IsAdminScope, IsContractApp

# --- Output shapes ------------------------------------------------------------------------


def _render(value: object) -> object:
    """A value as DRF's fields render it: aware datetimes in ISO 8601, UTC written "Z"."""
    if isinstance(value, dt.datetime):
        text = value.astimezone(dt.UTC).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return value


class LeadOutputSerializer(serializers.ModelSerializer[Lead]):
    """The lead as every endpoint returns it (GET, PATCH, next lead, outcomes)."""

    customer_id = serializers.IntegerField(read_only=True)
    campaign_id = serializers.IntegerField(read_only=True)
    holder_id = serializers.IntegerField(read_only=True, allow_null=True)
    # Blank while the lead is open; declared so the schema's enum includes "".
    closed_reason = serializers.ChoiceField(choices=CloseReason.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Lead
        fields = [
            "id",
            *LEAD_FIELDS,  # the schema's fields, as they are sent
            "status",
            "due_at",
            "holder_id",
            "lease_expires_at",
            "attempt_count",
            "reschedule_count",
            "first_attempt_at",
            "last_attempt_at",
            "closed_at",
            "closed_reason",
            "received_at",
            "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Lead) -> dict[str, Any]:
        # On the hot path of every engine answer: reading the attributes directly skips
        # building 24 DRF field objects per call. The declared fields still describe the
        # shape for OpenAPI, and a test checks both give the same output.
        return {name: _render(getattr(instance, name)) for name in self.Meta.fields}


def unknown_parameter_errors(query: Mapping[str, Any], known: Iterable[str]) -> dict[str, list[str]]:
    """Field errors for the query string's parameters an endpoint does not read: ignored, a
    filter the client meant (``type=live``) would give it rows it did not ask for."""
    return {name: ["Unknown parameter."] for name in sorted(set(query) - set(known))}


class QueryStringSerializer(serializers.Serializer[Any]):
    """A GET's query string, its fields the parameters, read strictly. A parameter the view
    does not know, one given twice, or one sent empty is a 400 naming it: otherwise each is
    ignored (or all but its last value), and the client takes every row for the rows it
    asked for. Validate ``request.query_params`` with it, as any serializer's ``data``."""

    # Parameters read elsewhere (a paginator's, DRF's format): allowed, not fields.
    OTHER_PARAMETERS: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, QueryDict):
            raise TypeError(f"{type(self).__name__} reads a QueryDict, not {type(data).__name__}.")
        known = set(self.fields) | self.OTHER_PARAMETERS
        errors = unknown_parameter_errors(data, known)
        errors.update(
            {
                name: [REPEATED_PARAMETER_ERROR]
                for name in sorted(set(data) & known)
                if len(data.getlist(name)) > 1
            }
        )
        if errors:
            raise ValidationError(errors)
        # DRF reads a QueryDict as an HTML form, where an optional field sent empty counts as
        # not sent (Field.get_value): "?customer_id=" dropped the filter and answered every
        # customer's leads. From a plain dict each field gets what was sent, and "" is a
        # field error ("may not be blank", "a valid integer is required") like any bad value.
        return super().to_internal_value(data.dict())


class AsciiDigitsMixin(serializers.Field[Any, Any, Any, Any]):
    """Put before a number or date field in its bases: as text, ASCII only. DRF's own fields
    read other scripts' digits as ours (an Arabic-Indic "٣" as 3, a day written in fullwidth
    digits as that day): text no client sends meaning a number, which is safer refused than
    read as a filter or a range the client may not have meant."""

    default_error_messages = {"ascii": "Use ASCII digits (0-9)."}

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and not data.isascii():
            self.fail("ascii")
        return super().to_internal_value(data)


class IdField(AsciiDigitsMixin, serializers.IntegerField):
    """A positive id that fits PostgreSQL's bigint; as text, ASCII digits only (DRF's own
    field reads an Arabic-Indic one as 1)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


class AsciiIntegerField(AsciiDigitsMixin, serializers.IntegerField):
    """An integer, as text in ASCII digits only (see :class:`AsciiDigitsMixin`)."""


class AsciiFloatField(AsciiDigitsMixin, serializers.FloatField):
    """A number, as text in ASCII digits only (see :class:`AsciiDigitsMixin`)."""


class AsciiDateField(AsciiDigitsMixin, serializers.DateField):
    """A day, as text in ASCII digits only (see :class:`AsciiDigitsMixin`)."""


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField[Any]):
    """A related object's id given as an integer (or a string of digits). DRF's own field
    hands the value to the ORM, which looks up 1.7 as 1 (another object) and fails in the
    query on a number past bigint."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("incorrect_type", data_type=type(data).__name__)
        if isinstance(data, str):
            if not (data.isascii() and data.isdigit()):
                self.fail("incorrect_type", data_type="str")
            parsed = parse_id(data)
            if parsed is None:
                self.fail("does_not_exist", pk_value=data)
            data = parsed
        if not 1 <= data <= MAX_ID:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)


class CaseInsensitiveChoiceField(serializers.ChoiceField):
    """A choice sent in any case ("LIVE"), as lead pushes accept it (leads.importers)."""

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(data.strip().lower() if isinstance(data, str) else data)


class LocalTimeField(serializers.TimeField):
    """A campaign's calling-hours bound: a wall-clock time of the campaign's own time zone.
    DRF would read "08:00+05:00" as 08:00 and drop the offset unsaid."""

    default_error_messages = {
        "offset": "A time of day in the campaign's time zone (time_zone), without an offset: e.g. 08:00."
    }
    _OFFSET = re.compile(r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$")

    def to_internal_value(self, value: Any) -> dt.time:
        if isinstance(value, str) and self._OFFSET.search(value.strip()):
            self.fail("offset")
        parsed: dt.time = super().to_internal_value(value)
        return parsed


class TimestampField(AsciiDigitsMixin, serializers.DateTimeField):
    """A DateTimeField limited to the years leads may carry, read as a lead push reads one
    (:func:`leads.importers.parse_timestamp`): ASCII digits only, and RFC 3339's lower-case
    "z" for UTC accepted, as Django's parser does not."""

    default_error_messages = {"range": TIMESTAMP_RANGE_ERROR}

    def to_internal_value(self, value: Any) -> dt.datetime:
        if isinstance(value, str) and value.rstrip().endswith("z"):
            value = value.rstrip()[:-1] + "Z"
        parsed: dt.datetime = super().to_internal_value(value)
        if not timestamp_in_range(parsed):
            self.fail("range")
        return parsed


class LeadInputSerializer(serializers.Serializer[Any]):
    """Documents the lead object for OpenAPI; validation is :func:`leads.importers.parse_lead`."""

    external_id = serializers.CharField(max_length=200)
    customer_id = serializers.IntegerField(min_value=1)
    campaign_id = serializers.IntegerField(min_value=1)
    lead_type = serializers.ChoiceField(choices=LeadType.choices)
    city = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    # The schema's field is named "source"; DRF's Field also has a `source` attribute.
    source = serializers.CharField(  # type: ignore[assignment]
        required=False, allow_blank=True, allow_null=True
    )
    last_activity = TimestampField(required=False, allow_null=True)
    stage = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    pricing_plan = serializers.ChoiceField(choices=PricingPlan.choices, required=False, allow_null=True)
    rescheduled_at = TimestampField(required=False, allow_null=True)
    created_at = TimestampField(required=False, allow_null=True)


_BatchItem = inline_serializer(
    "LeadBatchItemResult",
    many=True,
    fields={
        "index": serializers.IntegerField(),
        "external_id": serializers.CharField(allow_null=True),
        "status": serializers.ChoiceField(choices=["created", "updated", "rejected"]),
        "id": serializers.IntegerField(required=False),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()), required=False
        ),
    },
)
_BatchResult = inline_serializer(
    "LeadBatchResult",
    fields={
        "created": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "rejected": serializers.IntegerField(),
        "results": _BatchItem,
    },
)


class LeadPagination(CursorPagination):
    # Keyset pagination: no COUNT(*) and no OFFSET scan at millions of leads.
    ordering = "-id"
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"

    def get_page_size(self, request: Request) -> int | None:
        return count_parameter(
            request, self.page_size_query_param, default=self.page_size, minimum=1, cutoff=self.max_page_size
        )

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF checks the cursor's offset and direction, not its position: a crafted cursor
        # whose position is not a lead id (the cursor is ASCII) would fail in the query.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = str(cursor.position)  # the decoded text (the stubs say int)
            if parse_id(position) is None:
                raise NotFound(self.invalid_cursor_message)
        return cursor


def leads_visible_to(request: Request) -> QuerySet[Lead]:
    queryset = Lead.objects.all()
    customer_id = request_customer_id(request)
    if customer_id is not None:
        queryset = queryset.filter(customer_id=customer_id)
    return queryset


# --- Leads ----------------------------------------------------------------------------------


class LeadCollectionView(APIView):
    """POST one lead or ``{"leads": [...]}``; GET leads, newest first."""

    pagination_class = LeadPagination  # used by get(), and shown in the schema

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [CanIngest()]
        return [CanReadLeads()]

    @extend_schema(
        request=LeadInputSerializer,
        responses={
            **error_responses(403),
            201: LeadOutputSerializer,
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="LeadUpsertResult",
                    serializers=[LeadOutputSerializer, _BatchResult],
                    resource_type_field_name=None,
                ),
                "A single lead: updated, the stored lead. A batch: the batch result, something stored.",
            ),
            400: OpenApiResponse(
                {"oneOf": [FIELD_ERRORS_SCHEMA, {"$ref": "#/components/schemas/LeadBatchResult"}]},
                "A single lead: its field errors. A batch: the batch result, every item rejected.",
            ),
        },
        description=(
            'One lead object, or `{"leads": [...]}` with up to LEADRANK_API_BATCH_MAX (10,000 unless '
            "configured) of them. Upsert by "
            "(customer_id, external_id). A single lead answers 201 (created) or 200 (updated) with "
            "the lead, or 400 with field errors. A batch answers per item `created`, `updated` or "
            "`rejected` (with its field errors); valid items are stored even when others are not. "
            "The batch answers 200 when any item was stored, 400 when none was."
        ),
    )
    def post(self, request: Request) -> Response:
        body = request.data
        allowed_customer_id = request_customer_id(request)
        if isinstance(body, dict) and "leads" in body:
            items = body["leads"]
            if not isinstance(items, list):
                raise ValidationError({"leads": ["Expected a list of lead objects."]})
            if not items:
                raise ValidationError({"leads": ["The batch is empty."]})
            if len(items) > settings.LEADRANK_API_BATCH_MAX:
                raise ValidationError(
                    {
                        "leads": [
                            f"At most {settings.LEADRANK_API_BATCH_MAX} leads per request, got {len(items)}."
                        ]
                    }
                )
            results = services.ingest_lead_batch(items, allowed_customer_id=allowed_customer_id)
            counts = {"created": 0, "updated": 0, "rejected": 0}
            rows = []
            for result in results:
                counts[result.status] += 1
                row: dict[str, Any] = {
                    "index": result.index,
                    "external_id": result.external_id,
                    "status": result.status,
                }
                if result.lead_id is not None:
                    row["id"] = result.lead_id
                if result.errors:
                    row["errors"] = result.errors
                rows.append(row)
            batch_code = (
                status.HTTP_400_BAD_REQUEST if counts["rejected"] == len(results) else status.HTTP_200_OK
            )
            return Response({**counts, "results": rows}, status=batch_code)
        if not isinstance(body, dict):
            raise ValidationError({"non_field_errors": ['Send one lead object or {"leads": [...]}.']})
        (result,) = services.ingest_lead_batch([body], allowed_customer_id=allowed_customer_id)
        if result.lead_id is None:  # rejected
            raise ValidationError(result.errors)
        lead = Lead.objects.get(pk=result.lead_id)
        code = status.HTTP_201_CREATED if result.status == "created" else status.HTTP_200_OK
        return Response(LeadOutputSerializer(lead).data, status=code)

    @extend_schema(
        parameters=[
            OpenApiParameter("customer_id", int),
            OpenApiParameter("campaign_id", int),
            OpenApiParameter("external_id", str),
            OpenApiParameter("status", str, enum=["waiting", "ready", "held", "closed"]),
            OpenApiParameter("lead_type", str, enum=LeadType.values),
        ],
        responses={
            200: LeadOutputSerializer(many=True),
            **error_responses(400, 403, 404, descriptions={404: "Invalid cursor."}),
        },
    )
    def get(self, request: Request) -> Response:
        queryset = leads_visible_to(request)
        filters = _LeadFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        for name, value in filters.validated_data.items():
            queryset = queryset.filter(**{name: value})
        campaign_id = filters.validated_data.get("campaign_id")
        if campaign_id is not None:
            # No index starts with the campaign (the engine's are partial on the queue state),
            # so newest first for one campaign walked the whole table backwards by id, past
            # every other campaign's leads. Naming its customer lets lead_customer_created
            # bound the walk to that customer's leads; the planner picks whichever is cheaper.
            queryset = queryset.filter(
                customer_id__in=Campaign.objects.filter(pk=campaign_id).values("customer_id")
            )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(LeadOutputSerializer(page, many=True).data)


class _LeadFilterSerializer(QueryStringSerializer):
    customer_id = IdField(required=False)
    campaign_id = IdField(required=False)
    external_id = serializers.CharField(required=False, max_length=200)
    status = serializers.ChoiceField(required=False, choices=["waiting", "ready", "held", "closed"])
    lead_type = serializers.ChoiceField(required=False, choices=LeadType.choices)

    # Parameters of the query string that are not filters: the page's, and DRF's format.
    OTHER_PARAMETERS = frozenset(
        {
            LeadPagination.cursor_query_param,
            LeadPagination.page_size_query_param,
            api_settings.URL_FORMAT_OVERRIDE,
        }
    )


class LeadPatchSerializer(serializers.Serializer[Any]):
    lead_type = CaseInsensitiveChoiceField(choices=LeadType.choices, required=False)
    rescheduled_at = TimestampField(required=False, allow_null=True)
    city = serializers.CharField(required=False, allow_blank=True, max_length=200)
    source = serializers.CharField(  # type: ignore[assignment]  # see LeadInputSerializer
        required=False, allow_blank=True, max_length=200
    )
    stage = serializers.CharField(required=False, allow_blank=True, max_length=200)
    last_activity = TimestampField(required=False, allow_null=True)
    pricing_plan = CaseInsensitiveChoiceField(choices=PricingPlan.choices, required=False)

    def validate_last_activity(self, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value > latest_moment_for(timezone.now()):
            raise ValidationError(
                future_moment_error("last_activity", self.initial_data.get("last_activity"))
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise ValidationError({name: ["Unknown or read-only field."] for name in sorted(unknown)})
        if not attrs:
            raise ValidationError({"non_field_errors": ["Nothing to update."]})
        return attrs


class LeadDetailView(APIView):
    """GET a lead; PATCH what the Contract app propagates (rescheduled_at, lead_type, …)."""

    def get_permissions(self) -> list[Any]:
        if self.request.method == "PATCH":
            return [IsContractApp()]
        return [CanReadLeads()]

    @extend_schema(responses={200: LeadOutputSerializer, **error_responses(403, 404)})
    def get(self, request: Request, lead_id: int) -> Response:
        lead = get_object_or_404(leads_visible_to(request), pk=lead_id)
        return Response(LeadOutputSerializer(lead).data)

    @extend_schema(
        request=LeadPatchSerializer,
        responses={200: LeadOutputSerializer, **error_responses(400, 403, 404, 409)},
    )
    def patch(self, request: Request, lead_id: int) -> Response:
        get_object_or_404(leads_visible_to(request), pk=lead_id)
        changes = LeadPatchSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        lead = services.update_lead(lead_id=lead_id, changes=changes.validated_data)
        return Response(LeadOutputSerializer(lead).data)


# --- Customers, campaigns, contractors -------------------------------------------------------


class CustomerSerializer(serializers.ModelSerializer[Customer]):
    class Meta:
        model = Customer
        fields = ["id", "name", "pricing_plan", "created_at"]
        read_only_fields = ["id", "created_at"]


@extend_schema_view(
    get=extend_schema(responses={200: CustomerSerializer, **error_responses(403)}),
    post=extend_schema(responses={201: CustomerSerializer, **error_responses(400, 403)}),
)
class CustomerListView(generics.ListCreateAPIView[Customer]):
    serializer_class = CustomerSerializer

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [IsAdminScope()]
        return [CanIngest()]

    def get_queryset(self) -> QuerySet[Customer]:
        queryset = Customer.objects.order_by("id")
        customer_id = request_customer_id(self.request)
        return queryset if customer_id is None else queryset.filter(pk=customer_id)


@extend_schema_view(get=extend_schema(responses={200: CustomerSerializer, **error_responses(403, 404)}))
class CustomerDetailView(generics.RetrieveAPIView[Customer]):
    serializer_class = CustomerSerializer
    permission_classes = [CanIngest]
    lookup_url_kwarg = "customer_id"

    def get_queryset(self) -> QuerySet[Customer]:
        return CustomerListView.get_queryset(self)  # type: ignore[arg-type]


class CampaignSerializer(serializers.ModelSerializer[Campaign]):
    customer_id = StrictPrimaryKeyRelatedField(source="customer", queryset=Customer.objects.all())
    calling_days = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6), required=False, allow_empty=False
    )
    calling_hours_start = LocalTimeField(required=False)
    calling_hours_end = LocalTimeField(required=False)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "customer_id",
            "name",
            "active",
            "time_zone",
            "calling_hours_start",
            "calling_hours_end",
            "calling_days",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        request = self.context.get("request")
        customer_id = request_customer_id(request) if request is not None else None
        if customer_id is not None:
            # An ingest key names its own customer, and learns nothing of which others exist.
            fields["customer_id"] = StrictPrimaryKeyRelatedField(
                source="customer",
                queryset=Customer.objects.filter(pk=customer_id),
                error_messages={
                    "does_not_exist": f"This API key may only manage campaigns of customer {customer_id}."
                },
            )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A bound left out is the stored one, or the model's default on create: sending only
        # an end of 07:00 must meet the default start of 08:00 here, not in the CHECK constraint.
        start = attrs.get("calling_hours_start", self._current("calling_hours_start"))
        end = attrs.get("calling_hours_end", self._current("calling_hours_end"))
        if start >= end:
            raise ValidationError({"calling_hours_end": ["Calling hours must end after they start."]})
        if "calling_days" in attrs:
            attrs["calling_days"] = sorted(set(attrs["calling_days"]))
        return attrs

    def _current(self, name: str) -> dt.time:
        if self.instance is not None:
            value: dt.time = getattr(self.instance, name)
            return value
        return {"calling_hours_start": DEFAULT_CALLING_START, "calling_hours_end": DEFAULT_CALLING_END}[name]


@extend_schema_view(
    get=extend_schema(responses={200: CampaignSerializer, **error_responses(403)}),
    post=extend_schema(responses={201: CampaignSerializer, **error_responses(400, 403)}),
)
class CampaignListView(generics.ListCreateAPIView[Campaign]):
    serializer_class = CampaignSerializer

    def get_permissions(self) -> list[Any]:
        if self.request.method == "POST":
            return [CanIngest()]
        return [CanReadLeads()]

    def get_queryset(self) -> QuerySet[Campaign]:
        queryset = Campaign.objects.order_by("id")
        customer_id = request_customer_id(self.request)
        return queryset if customer_id is None else queryset.filter(customer_id=customer_id)


@extend_schema_view(get=extend_schema(responses={200: CampaignSerializer, **error_responses(403, 404)}))
class CampaignDetailView(generics.RetrieveAPIView[Campaign]):
    serializer_class = CampaignSerializer
    permission_classes = [CanReadLeads]
    lookup_url_kwarg = "campaign_id"

    def get_queryset(self) -> QuerySet[Campaign]:
        return CampaignListView.get_queryset(self)  # type: ignore[arg-type]


class ContractorSerializer(serializers.ModelSerializer[Contractor]):
    campaign_ids = StrictPrimaryKeyRelatedField(
        source="campaigns", many=True, queryset=Campaign.objects.all(), required=False
    )

    class Meta:
        model = Contractor
        fields = ["id", "name", "active", "campaign_ids", "created_at"]
        read_only_fields = ["id", "created_at"]

    def update(self, instance: Contractor, validated_data: dict[str, Any]) -> Contractor:
        # Only the fields the request sent: a whole-row save would write back the claims_made
        # read with the contractor, losing the claims the engine counted meanwhile.
        campaigns = validated_data.pop("campaigns", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        instance.save(update_fields=list(validated_data))
        if campaigns is not None:
            instance.campaigns.set(campaigns)
        return instance


@extend_schema_view(
    get=extend_schema(responses={200: ContractorSerializer, **error_responses(403)}),
    post=extend_schema(responses={201: ContractorSerializer, **error_responses(400, 403)}),
)
class ContractorListView(generics.ListCreateAPIView[Contractor]):
    serializer_class = ContractorSerializer
    permission_classes = [IsContractApp]
    queryset = Contractor.objects.prefetch_related("campaigns").order_by("id")


@extend_schema_view(
    get=extend_schema(responses={200: ContractorSerializer, **error_responses(403, 404)}),
    patch=extend_schema(responses={200: ContractorSerializer, **error_responses(400, 403, 404)}),
)
class ContractorDetailView(generics.RetrieveUpdateAPIView[Contractor]):
    """GET or PATCH a contractor (name, active, campaign_ids)."""

    serializer_class = ContractorSerializer
    permission_classes = [IsContractApp]
    queryset = Contractor.objects.prefetch_related("campaigns")
    lookup_url_kwarg = "contractor_id"
    # GET and PATCH as documented, no PUT or DELETE; HEAD answers as GET does (uptime
    # probes send it, and every other view allows it).
    http_method_names = ["get", "head", "patch", "options"]
