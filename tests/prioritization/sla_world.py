"""Helpers of the SLA tests: leads called through the real engine at chosen instants."""

import datetime as dt

from leads.models import Campaign, Contractor, Lead
from prioritization.services import claim_next_lead, record_outcome
from tests.prioritization.conftest import add_lead

MINUTE = dt.timedelta(minutes=1)


def claim_at(contractor: Contractor, lead: Lead, at: dt.datetime) -> None:
    """The contractor claims ``lead`` at ``at`` (it must be the lead the engine hands out)."""
    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[lead.campaign_id], now=at)
    assert claim is not None
    assert claim.lead.pk == lead.pk, "the engine handed out another lead"


def call_at(contractor: Contractor, lead: Lead, at: dt.datetime, disposition: str = "not_interested") -> Lead:
    """A call that starts at ``at`` (the claim) and ends a minute later with ``disposition``."""
    claim_at(contractor, lead, at)
    record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition=disposition, now=at + MINUTE)
    lead.refresh_from_db()
    return lead


def live_lead(campaign: Campaign, created_at: dt.datetime, **fields: object) -> Lead:
    return add_lead(campaign, now=created_at, created_at=created_at.isoformat(), **fields)
