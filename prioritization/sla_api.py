"""``GET /api/v1/stats/sla/``: SLA, TAT, queue, at-risk and contractor figures as JSON.

A thin view over :func:`prioritization.sla.sla_report`: validate the query, resolve what
the key may see, call the selector, serialize. Definitions are in :mod:`prioritization.sla`.
"""

import datetime as dt
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from leads.api import AsciiDateField, AsciiFloatField, AsciiIntegerField, IdField, QueryStringSerializer
from leads.api_errors import error_responses
from leads.authentication import request_customer_id
from leads.importers import DAY_RANGE_ERROR, day_in_range
from leads.models import Campaign, Customer
from leads.permissions import AnyValidKey
from prioritization.sla import (
    DEFAULT_ACTIVE_MINUTES,
    MAX_RANGE_DAYS,
    AtRiskLead,
    SlaReport,
    sla_report,
    utc_day,
)

# --- Input ----------------------------------------------------------------------------------


class SlaQuerySerializer(QueryStringSerializer):
    """The query string, read as strictly as the lead list's. ``from`` / ``to`` are UTC
    days, both included; ``from`` alone runs to today, ``to`` alone is one day, neither is
    today."""

    customer_id = IdField(required=False)
    campaign_id = IdField(required=False)
    at_risk_minutes = AsciiFloatField(required=False, min_value=0, max_value=24 * 60)
    active_minutes = AsciiIntegerField(required=False, min_value=1, max_value=24 * 60)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "from" is a Python keyword, so these two cannot be class attributes.
        fields = super().get_fields()
        fields["from"] = AsciiDateField(required=False)
        fields["to"] = AsciiDateField(required=False)
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        today: dt.date = self.context["today"]
        start, end = attrs.pop("from", None), attrs.pop("to", None)
        for name, day in (("from", start), ("to", end)):
            # The same years as lead timestamps; a day near 9999-12-31 overflows the walk.
            if day is not None and not day_in_range(day):
                raise ValidationError({name: [DAY_RANGE_ERROR]})
        if start is None and end is None:
            start = end = today
        elif start is None:
            start = end
        elif end is None:
            end = max(start, today)
        if start > end:
            raise ValidationError({"from": [f"'from' ({start}) is after 'to' ({end})."]})
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise ValidationError({"to": [f"A range is at most {MAX_RANGE_DAYS} days."]})
        attrs["start"], attrs["end"] = start, end
        return attrs


# --- Output ---------------------------------------------------------------------------------


class SlaCountsSerializer(serializers.Serializer[Any]):
    live_leads = serializers.IntegerField(help_text="Leads counted for SLA: in_sla + missed + pending.")
    in_sla = serializers.IntegerField()
    missed = serializers.IntegerField()
    pending = serializers.IntegerField(
        help_text="Not called yet, deadline not passed: not in the attainment."
    )
    stale_leads = serializers.IntegerField(help_text="Sent as stale: never counted.")
    attainment = serializers.FloatField(allow_null=True, help_text="in_sla / (in_sla + missed).")


class SlaPeriodsSerializer(serializers.Serializer[Any]):
    range = SlaCountsSerializer(source="sla_range", help_text="Leads created from 'from' to 'to'.")
    today = SlaCountsSerializer(source="sla_today")
    last_7_days = SlaCountsSerializer(source="sla_last_7_days", help_text="Today and the 6 days before.")


class TatSerializer(serializers.Serializer[Any]):
    called = serializers.IntegerField(help_text="Counted leads of the range called so far.")
    p50_seconds = serializers.FloatField(allow_null=True)
    p90_seconds = serializers.FloatField(allow_null=True)
    p99_seconds = serializers.FloatField(allow_null=True)


class TatHistogramSerializer(TatSerializer):
    histogram = serializers.ListField(
        child=serializers.IntegerField(), help_text="Leads per bucket of tat_bucket_edges_seconds."
    )


class QueueSerializer(serializers.Serializer[Any]):
    live_due = serializers.IntegerField()
    live_later = serializers.IntegerField(help_text="Rescheduled or called back for later.")
    stale_due = serializers.IntegerField()
    stale_later = serializers.IntegerField()
    stale = serializers.IntegerField()
    held = serializers.IntegerField(help_text="Being called now.")
    total = serializers.IntegerField()


class DaySerializer(serializers.Serializer[Any]):
    day = serializers.DateField()
    live_leads = serializers.IntegerField(source="sla.live_leads")
    in_sla = serializers.IntegerField(source="sla.in_sla")
    missed = serializers.IntegerField(source="sla.missed")
    pending = serializers.IntegerField(source="sla.pending")
    attainment = serializers.FloatField(source="sla.attainment", allow_null=True)


class OverallSerializer(serializers.Serializer[Any]):
    sla = SlaPeriodsSerializer(source="*")
    tat = TatHistogramSerializer()
    queue = QueueSerializer()
    at_risk = serializers.IntegerField()
    contractors_active = serializers.IntegerField()
    daily = DaySerializer(many=True)


class CustomerFiguresSerializer(serializers.Serializer[Any]):
    customer_id = serializers.IntegerField()
    name = serializers.CharField()
    sla_window_minutes = serializers.FloatField()
    sla_target = serializers.FloatField()
    meets_target = serializers.BooleanField(allow_null=True, help_text="Range attainment ≥ target.")
    at_risk_minutes = serializers.FloatField()
    sla = SlaPeriodsSerializer(source="figures")
    tat = TatSerializer(source="figures.tat")
    queue = QueueSerializer(source="figures.queue")
    at_risk = serializers.IntegerField(source="figures.at_risk")
    contractors_active = serializers.IntegerField(source="figures.contractors_active")
    daily = DaySerializer(source="figures.daily", many=True)


class CampaignFiguresSerializer(serializers.Serializer[Any]):
    campaign_id = serializers.IntegerField()
    customer_id = serializers.IntegerField()
    name = serializers.CharField()
    sla = SlaPeriodsSerializer(source="figures")
    tat = TatSerializer(source="figures.tat")
    queue = QueueSerializer(source="figures.queue")
    at_risk = serializers.IntegerField(source="figures.at_risk")
    contractors_active = serializers.IntegerField(source="figures.contractors_active")


class AtRiskLeadSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    customer_id = serializers.IntegerField()
    campaign_id = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    sla_deadline = serializers.DateTimeField()
    minutes_left = serializers.SerializerMethodField()

    def get_minutes_left(self, lead: AtRiskLead) -> float:
        return round(lead.minutes_left(self.context["now"]), 2)


class SlaReportSerializer(serializers.Serializer[SlaReport]):
    to = serializers.DateField(source="end")
    today = serializers.DateField()
    time_zone = serializers.SerializerMethodField(help_text="Days are days of this zone.")
    generated_at = serializers.DateTimeField(source="now")
    at_risk_minutes = serializers.FloatField(
        allow_null=True, help_text="As asked; null: each customer's own (see customers)."
    )
    active_minutes = serializers.FloatField()
    tat_bucket_edges_seconds = serializers.ListField(child=serializers.FloatField())
    overall = OverallSerializer()
    customers = CustomerFiguresSerializer(many=True)
    campaigns = CampaignFiguresSerializer(many=True)
    at_risk_leads = AtRiskLeadSerializer(many=True, help_text="Earliest deadline first, at most 50.")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields: dict[str, serializers.Field[Any, Any, Any, Any]] = {
            "from": serializers.DateField(source="start")
        }
        fields.update(super().get_fields())
        return fields

    def get_time_zone(self, report: SlaReport) -> str:
        return "UTC"


# --- View -----------------------------------------------------------------------------------


class SlaStatsView(APIView):
    """SLA attainment, TAT, queue depth, leads at risk and active contractors."""

    permission_classes = [AnyValidKey]

    @extend_schema(
        parameters=[
            OpenApiParameter("customer_id", int, description="One customer (an ingest key: its own)."),
            OpenApiParameter("campaign_id", int, description="One campaign."),
            OpenApiParameter("from", dt.date, description="First UTC day (default: today, or 'to')."),
            OpenApiParameter("to", dt.date, description="Last UTC day (default: today, or 'from' if later)."),
            OpenApiParameter(
                "at_risk_minutes", float, description="Horizon of 'at risk' (default: each policy's)."
            ),
            OpenApiParameter(
                "active_minutes",
                int,
                description=f"Claims this recent count (default {DEFAULT_ACTIVE_MINUTES}).",
            ),
        ],
        responses={
            200: SlaReportSerializer,
            **error_responses(
                400, 403, 404, descriptions={404: "Another customer's id, through an ingest key."}
            ),
        },
        description=(
            "Figures overall, per customer and per campaign. Admin and contract-app keys read every "
            "customer; an ingest key reads its own customer only (another one's id: 404). SLA and "
            "TAT cover leads created on the UTC days from..to; queue, at-risk and contractor "
            "figures are as of now."
        ),
    )
    def get(self, request: Request) -> Response:
        now = timezone.now()
        query = SlaQuerySerializer(data=request.query_params, context={"today": utc_day(now)})
        query.is_valid(raise_exception=True)
        params = query.validated_data
        own = request_customer_id(request)
        customer_id: int | None = params.get("customer_id")
        campaign_id: int | None = params.get("campaign_id")
        if customer_id is not None and (
            (own is not None and customer_id != own) or not Customer.objects.filter(pk=customer_id).exists()
        ):
            raise NotFound(f"No customer {customer_id}.")
        if campaign_id is not None:
            owner = Campaign.objects.filter(pk=campaign_id).values_list("customer_id", flat=True).first()
            if owner is None or (own is not None and owner != own):
                raise NotFound(f"No campaign {campaign_id}.")
            if customer_id is not None and owner != customer_id:
                raise ValidationError(
                    {
                        "campaign_id": [
                            f"Campaign {campaign_id} belongs to customer {owner}, not {customer_id}."
                        ]
                    }
                )
        report = sla_report(
            now=now,
            start=params["start"],
            end=params["end"],
            customer_id=customer_id if customer_id is not None else own,
            campaign_id=campaign_id,
            at_risk_minutes=params.get("at_risk_minutes"),
            active_minutes=params.get("active_minutes", DEFAULT_ACTIVE_MINUTES),
        )
        return Response(SlaReportSerializer(report, context={"now": now}).data)
