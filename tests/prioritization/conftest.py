"""Shared helpers of the engine tests: policies as versions, leads through the real ingest path."""

import datetime as dt
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from leads.models import Campaign, Contractor, Customer, Lead
from leads.services import ingest_lead_batch
from prioritization.models import Decision, ModelVersion, PolicyVersion, PriorityPolicy, version_values
from prioritization.services import claim_next_lead, ensure_default_policy
from tests.factories import ContractorFactory, campaign_calling_all_day

# A fixed instant (a Tuesday) the tests travel to; 10:00 UTC is inside default calling hours.
T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)

_external_ids = itertools.count(1)


def set_policy(customer: Customer | None, **fields: Any) -> PolicyVersion:
    """Add a version to the customer's policy (the default policy for ``None``) and make it current."""
    policy, _ = PriorityPolicy.objects.get_or_create(
        customer=customer, defaults={"name": f"Policy of {customer}" if customer else "Default policy"}
    )
    number = (policy.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    version = PolicyVersion.objects.create(policy=policy, number=number, **fields)
    policy.current_version = version
    policy.save(update_fields=["current_version"])
    return version


def add_leads(campaign: Campaign, *items: dict[str, Any], now: dt.datetime | None = None) -> list[Lead]:
    """Ingest leads of the campaign (scored on arrival, as in production); returns them in order."""
    payload = [
        {
            "customer_id": campaign.customer_id,
            "campaign_id": campaign.pk,
            "external_id": f"t-{next(_external_ids)}",
            "lead_type": "live",
            **item,
        }
        for item in items
    ]
    results = ingest_lead_batch(payload, allowed_customer_id=None, now=now)
    assert all(r.status == "created" for r in results), [r.errors for r in results]
    ids = [r.lead_id for r in results]
    by_id = Lead.objects.in_bulk(ids)
    return [by_id[i] for i in ids]


def add_lead(campaign: Campaign, now: dt.datetime | None = None, **fields: Any) -> Lead:
    return add_leads(campaign, fields, now=now)[0]


def claim(contractor: Contractor, campaign: Campaign) -> Lead:
    """The lead the contractor is handed for the campaign (there must be one)."""
    result = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
    assert result is not None
    return result.lead


@pytest.fixture
def all_day_campaign(db: None) -> Campaign:
    """Calling hours around the clock, every day: reschedules are never moved."""
    return campaign_calling_all_day()


@pytest.fixture
def make_contractor(db: None) -> Callable[..., Contractor]:
    def make(*campaigns: Campaign, **fields: Any) -> Contractor:
        return ContractorFactory(campaigns=list(campaigns), **fields)

    return make


def model_of(customer: Customer | None, multipliers: dict[str, Any] | None = None) -> ModelVersion:
    """A trained model version of the customer (pooled for ``None``)."""
    number = ModelVersion.objects.filter(customer=customer).count() + 1
    return ModelVersion.objects.create(
        customer=customer,
        number=number,
        trained_at=T0,
        trigger="admin",
        training_rows=10,
        positive_rows=1,
        holdout_rows=2,
        all_rows=10,
        base_rate=0.1,
        multipliers=multipliers if multipliers is not None else {"city": {"Pune": 3.0}},
    )


def change_url(policy: PriorityPolicy) -> str:
    return reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])


def as_form(values: dict[str, Any]) -> dict[str, Any]:
    """Version values as the browser posts them."""
    posted: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, ModelVersion):
            value = value.pk
        posted[name] = "" if value is None else value
    return posted


def default_policy() -> PriorityPolicy:
    ensure_default_policy()
    return PriorityPolicy.objects.select_related("current_version").get(customer__isnull=True)


def form_data(policy: PriorityPolicy | None = None, **changes: Any) -> dict[str, Any]:
    """What the browser posts for the policy's page (the default policy's if none) as it
    loads, with ``changes``."""
    policy = policy or default_policy()
    version = policy.current_version
    assert version is not None
    data: dict[str, Any] = {"name": policy.name, "note": "", "base_version": version.number}
    data.update(as_form(version_values(version)))
    data.update(changes)
    return data


@pytest.fixture
def decision(all_day_campaign: Campaign, make_contractor: Callable[..., Any]) -> Decision:
    """A claim's logged decision (a lead of the all-day campaign handed to a new contractor)."""
    add_lead(all_day_campaign)
    claim = claim_next_lead(
        contractor_id=make_contractor(all_day_campaign).pk, campaign_ids=[all_day_campaign.pk]
    )
    assert claim is not None
    return claim.decision


def delete_policy_as_the_admin_does(policy: PriorityPolicy) -> None:
    """PriorityPolicyAdmin.delete_model: the pointer cleared, then the policy and its versions."""
    PriorityPolicy.objects.filter(pk=policy.pk).update(current_version=None)
    policy.current_version = None
    policy.delete()
