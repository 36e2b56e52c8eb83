import datetime as dt

import factory
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from leads.models import (
    ALL_WEEKDAYS,
    Campaign,
    Contractor,
    Customer,
    Lead,
    LeadType,
    PricingPlan,
    QueueStatus,
)


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Sequence(lambda n: f"Customer {n}")
    pricing_plan = PricingPlan.STARTER


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    customer = factory.SubFactory(CustomerFactory)
    name = factory.Sequence(lambda n: f"Campaign {n}")


class ContractorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contractor
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Contractor {n}")

    @factory.post_generation
    def campaigns(self, create: bool, extracted: list[Campaign] | None, **kwargs: object) -> None:
        if create and extracted:
            self.campaigns.add(*extracted)


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lead

    campaign = factory.SubFactory(CampaignFactory)
    customer = factory.LazyAttribute(lambda lead: lead.campaign.customer)
    external_id = factory.Sequence(lambda n: f"ext-{n}")
    lead_type = LeadType.LIVE
    pricing_plan = PricingPlan.STARTER
    created_at = factory.LazyFunction(timezone.now)
    due_at = factory.LazyAttribute(lambda lead: lead.created_at)
    status = QueueStatus.READY


def minutes_ago(minutes: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(minutes=minutes)


def staff_client(*perms: str, name: str = "clerk") -> Client:
    """A signed-in staff user holding exactly ``perms`` ("app_label.codename")."""
    user = User.objects.create_user(name, is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def campaign_calling_all_day(customer: Customer | None = None, **fields: object) -> Campaign:
    """A campaign whose calling hours are the whole day, every day: reschedules and callbacks
    are never moved to an opening."""
    return CampaignFactory(
        customer=customer or CustomerFactory(),
        calling_hours_start=dt.time(0),
        calling_hours_end=dt.time(23, 59, 59, 999999),
        calling_days=ALL_WEEKDAYS,
        **fields,
    )


def lead_body(campaign: Campaign, **fields: object) -> dict[str, object]:
    """The smallest valid lead object (as the API takes it) for ``campaign``; ``fields`` add
    or override."""
    return {
        "external_id": "A-1",
        "customer_id": campaign.customer_id,
        "campaign_id": campaign.pk,
        "lead_type": "live",
        **fields,
    }
