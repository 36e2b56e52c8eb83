import csv
import datetime as dt
import itertools
import random
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from leads.models import Campaign, Contractor, Customer, Lead, PricingPlan
from leads.services import ingest_lead_batch

DEMO_SEED = 7
X_EDUCATION_ROWS = 300
OLIST_ROWS = 200


class Command(BaseCommand):
    help = (
        "Load a small demo data set (idempotent): two customers, their campaigns, contractors, "
        "and a few hundred leads from the real public files in LEADRANK_DATA_DIR when present."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        rng = random.Random(DEMO_SEED)
        with transaction.atomic():
            education, _ = Customer.objects.get_or_create(
                name="X Education (demo)", defaults={"pricing_plan": PricingPlan.PRO}
            )
            sellers, _ = Customer.objects.get_or_create(
                name="Olist Sellers (demo)", defaults={"pricing_plan": PricingPlan.ENTERPRISE}
            )
            enquiries, _ = Campaign.objects.get_or_create(
                customer=education, name="New enquiries", defaults={"time_zone": "Asia/Kolkata"}
            )
            callbacks, _ = Campaign.objects.get_or_create(
                customer=education, name="Win-back", defaults={"time_zone": "Asia/Kolkata"}
            )
            onboarding, _ = Campaign.objects.get_or_create(
                customer=sellers, name="Seller onboarding", defaults={"time_zone": "America/Sao_Paulo"}
            )
            for index, campaigns in enumerate(
                [
                    [enquiries, callbacks],
                    [enquiries, onboarding],
                    [onboarding],
                    [enquiries, callbacks, onboarding],
                ],
                start=1,
            ):
                contractor, _ = Contractor.objects.get_or_create(name=f"Demo contractor {index}")
                contractor.campaigns.add(*campaigns)

        data_dir = Path(settings.LEADRANK_DATA_DIR)
        leads = self._x_education(data_dir, education, enquiries, callbacks, now, rng)
        leads += self._olist(data_dir, sellers, onboarding, now, rng)
        # A lead stored by an earlier run keeps its times: re-sent as "now minus a while", a
        # lead already called would seem called before it arrived (and its SLA deadline,
        # set on arrival, would no longer match).
        stored = set(
            Lead.objects.filter(customer__in=[education, sellers]).values_list("customer_id", "external_id")
        )
        for lead in leads:
            if (lead["customer_id"], lead["external_id"]) in stored:
                lead.pop("created_at", None)
                lead.pop("last_activity", None)
        results = ingest_lead_batch(leads, allowed_customer_id=None, now=now)
        counts = {
            status: sum(1 for r in results if r.status == status)
            for status in ("created", "updated", "rejected")
        }
        self.stdout.write(
            f"Demo data: {Customer.objects.count()} customers, {Campaign.objects.count()} campaigns, "
            f"{Contractor.objects.count()} contractors; leads {counts['created']} created, "
            f"{counts['updated']} updated, {counts['rejected']} rejected."
        )

    def _x_education(
        self,
        data_dir: Path,
        customer: Customer,
        live: Campaign,
        stale: Campaign,
        now: dt.datetime,
        rng: random.Random,
    ) -> list[dict[str, Any]]:
        rows = _first_rows(data_dir / "x_education_leads" / "Leads.csv", X_EDUCATION_ROWS, "Prospect ID")
        if not rows:
            rows = [
                {
                    "Prospect ID": f"synthetic-{i}",
                    "Lead Source": rng.choice(["Google", "Direct Traffic", "Reference"]),
                    "City": rng.choice(["Mumbai", "Thane & Outskirts", "Other Cities"]),
                    "Last Activity": rng.choice(["Email Opened", "SMS Sent", "Page Visited on Website"]),
                }
                for i in range(X_EDUCATION_ROWS)
            ]
        leads = []
        for index, row in enumerate(rows):
            is_live = index % 3 == 0
            clean = {k: ("" if v == "Select" else v) for k, v in row.items()}
            leads.append(
                {
                    "external_id": clean["Prospect ID"],
                    "customer_id": customer.pk,
                    "campaign_id": (live if is_live else stale).pk,
                    "lead_type": "live" if is_live else "stale",
                    "city": clean.get("City", ""),
                    "source": clean.get("Lead Source", ""),
                    "stage": clean.get("Last Activity", ""),
                    "last_activity": (now - dt.timedelta(hours=rng.uniform(1, 24 * 60))).isoformat(),
                    "created_at": (
                        now
                        - dt.timedelta(minutes=rng.uniform(0, 45) if is_live else rng.uniform(1, 60) * 1440)
                    ).isoformat(),
                }
            )
        return leads

    def _olist(
        self, data_dir: Path, customer: Customer, campaign: Campaign, now: dt.datetime, rng: random.Random
    ) -> list[dict[str, Any]]:
        rows = _first_rows(
            data_dir / "olist_marketing_funnel" / "olist_marketing_qualified_leads_dataset.csv",
            OLIST_ROWS,
            "mql_id",
        )
        if not rows:
            rows = [
                {
                    "mql_id": f"synthetic-{i}",
                    "origin": rng.choice(["organic_search", "paid_search", "social"]),
                }
                for i in range(OLIST_ROWS)
            ]
        return [
            {
                "external_id": row["mql_id"],
                "customer_id": customer.pk,
                "campaign_id": campaign.pk,
                "lead_type": "live",
                "source": row.get("origin", ""),
                "city": rng.choice(["São Paulo", "Rio de Janeiro", "Curitiba", "Belo Horizonte"]),
                "stage": rng.choice(["MQL", "Demo requested", "Pricing viewed"]),
                "created_at": (now - dt.timedelta(minutes=rng.uniform(0, 90))).isoformat(),
            }
            for row in rows
        ]


def _first_rows(path: Path, count: int, id_column: str) -> list[dict[str, str]]:
    """The first ``count`` rows of a CSV file; none (the caller makes synthetic ones) when
    the file is not there, is no UTF-8 text, or lacks the column that identifies a lead
    (``LEADRANK_DATA_DIR`` pointing at other files)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if id_column not in (reader.fieldnames or []):
                return []
            return [row for row in itertools.islice(reader, count) if row.get(id_column)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
