"""The Contract app's engine API: next lead, outcomes, release, lease extension, withdrawal."""

from collections.abc import Iterable
from typing import Any

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from leads.api import IdField, LeadOutputSerializer, TimestampField, leads_visible_to
from leads.api_errors import error_responses
from leads.models import Disposition, Lead
from leads.permissions import CanIngest, IsContractApp
from prioritization import metrics, services


class JsonOnly(BaseContentNegotiation):
    """The Contract app's endpoints read and answer JSON whatever the request's Accept header
    says (DRF's "ignore the client" negotiation): nothing else is offered, and parsing the
    header on every next-lead and outcome request is work for nothing."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


NextLeadOutput = inline_serializer(
    "NextLead",
    fields={
        "lead_id": serializers.IntegerField(),
        "lead": LeadOutputSerializer(),
        "score": serializers.FloatField(help_text="Relative worth of a call now (higher is better)."),
        "band": serializers.ChoiceField(choices=["at_risk", "live", "stale"]),
        "reasons": serializers.ListField(child=serializers.CharField()),
        "lease_expires_at": serializers.DateTimeField(),
        "decision_id": serializers.IntegerField(),
        "policy_version_id": serializers.IntegerField(),
    },
)


class NextLeadInput(serializers.Serializer[Any]):
    campaign_ids = serializers.ListField(
        child=IdField(), min_length=1, max_length=services.MAX_TUPLE_CAMPAIGNS
    )
    contractor_id = IdField()


@metrics.instrument_next_lead
class NextLeadView(APIView):
    """The best lead to call now for a contractor qualified for these campaigns."""

    permission_classes = [IsContractApp]
    content_negotiation_class = JsonOnly

    @extend_schema(
        request=NextLeadInput,
        responses={
            200: NextLeadOutput,
            204: None,
            **error_responses(
                400,
                403,
                404,
                429,
                descriptions={
                    403: "The contractor is inactive or not qualified for a campaign of the tuple.",
                    404: "Unknown contractor.",
                    503: "The database is unavailable, or every lead this request chose was taken "
                    "by other contractors meanwhile (many asking at once); retry after `Retry-After`.",
                },
            ),
        },
        description=(
            "200 with the lead, its score, the reasons and the lease deadline; 204 when nothing is "
            "eligible. A contractor who already holds a lead gets that same lead again. 404 for an "
            "unknown contractor, 403 for an inactive or unqualified one, 429 (with Retry-After) "
            "for one over its claim cap."
        ),
    )
    def post(self, request: Request) -> Response:
        body = NextLeadInput(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            claim = services.claim_next_lead(
                contractor_id=body.validated_data["contractor_id"],
                campaign_ids=body.validated_data["campaign_ids"],
            )
        except services.ClaimRefused as refused:
            payload: dict[str, Any] = {"detail": str(refused)}
            headers = {}
            if refused.retry_after is not None:
                payload["retry_after"] = refused.retry_after.isoformat()
                seconds = max(1, int((refused.retry_after - timezone.now()).total_seconds()) + 1)
                headers["Retry-After"] = str(seconds)
            return Response(payload, status=refused.status, headers=headers)
        if claim is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        decision = claim.decision
        return Response(
            {
                "lead_id": claim.lead.pk,
                "lead": LeadOutputSerializer(claim.lead).data,
                "score": decision.score,
                "band": decision.band,
                "reasons": decision.reasons,
                "lease_expires_at": claim.lead.lease_expires_at,
                "decision_id": decision.pk,
                "policy_version_id": decision.policy_version_id,
            }
        )


class OutcomeInput(serializers.Serializer[Any]):
    contractor_id = IdField()
    disposition = serializers.ChoiceField(choices=Disposition.choices)
    callback_at = TimestampField(required=False, allow_null=True)
    idempotency_key = serializers.CharField(required=False, allow_blank=True, max_length=100)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["disposition"] == Disposition.CALLBACK and not attrs.get("callback_at"):
            raise serializers.ValidationError({"callback_at": ["Required when the disposition is callback."]})
        return attrs


class OutcomeView(APIView):
    """Report a call attempt of the lead the contractor holds."""

    permission_classes = [IsContractApp]
    content_negotiation_class = JsonOnly

    @extend_schema(
        request=OutcomeInput,
        responses={
            200: LeadOutputSerializer,
            **error_responses(
                400,
                403,
                404,
                409,
                descriptions={
                    409: "The contractor does not hold the lead, the lead is closed, or the "
                    "idempotency key was used for another outcome of the lead (a retry sends the "
                    "same body again; a new attempt needs a new key)."
                },
            ),
        },
    )
    def post(self, request: Request, lead_id: int) -> Response:
        body = OutcomeInput(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.record_outcome(
            lead_id=lead_id,
            contractor_id=body.validated_data["contractor_id"],
            disposition=body.validated_data["disposition"],
            callback_at=body.validated_data.get("callback_at"),
            idempotency_key=body.validated_data.get("idempotency_key", ""),
        )
        return Response(LeadOutputSerializer(result.lead).data)


class HolderInput(serializers.Serializer[Any]):
    contractor_id = IdField()


class _HolderActionView(APIView):
    """A POST by the contractor holding the lead: ``{"contractor_id": N}``."""

    permission_classes = [IsContractApp]
    content_negotiation_class = JsonOnly

    def act(self, *, lead_id: int, contractor_id: int) -> Lead:
        raise NotImplementedError

    @extend_schema(
        request=HolderInput,
        responses={200: LeadOutputSerializer, **error_responses(400, 403, 404, 409)},
    )
    def post(self, request: Request, lead_id: int) -> Response:
        body = HolderInput(data=request.data)
        body.is_valid(raise_exception=True)
        lead = self.act(lead_id=lead_id, contractor_id=body.validated_data["contractor_id"])
        return Response(LeadOutputSerializer(lead).data)


class ReleaseView(_HolderActionView):
    """Give a held lead back without an outcome; it is claimable again at once."""

    def act(self, *, lead_id: int, contractor_id: int) -> Lead:
        return services.release_lead(lead_id=lead_id, contractor_id=contractor_id)


class ExtendView(_HolderActionView):
    """Renew the holder's lease (the policy's lease length from now)."""

    def act(self, *, lead_id: int, contractor_id: int) -> Lead:
        return services.extend_lease(lead_id=lead_id, contractor_id=contractor_id)


class WithdrawView(APIView):
    """The customer withdraws a lead: closed, never handed out again."""

    permission_classes = [CanIngest]

    @extend_schema(request=None, responses={200: LeadOutputSerializer, **error_responses(403, 404)})
    def post(self, request: Request, lead_id: int) -> Response:
        get_object_or_404(leads_visible_to(request), pk=lead_id)
        lead = services.withdraw_lead(lead_id=lead_id)
        return Response(LeadOutputSerializer(lead).data)
