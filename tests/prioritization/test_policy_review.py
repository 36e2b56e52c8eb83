"""Review findings on the policy side: the preview ranks what a save would apply and only
with models the policy may use, and a calling day the clocks leave without calling hours
offers no opening. (Numbers the database cannot store: test_policy_bounds.py.)"""

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse

from leads.models import Customer
from prioritization.calling_hours import CallingHours, next_opening
from prioritization.models import PolicyVersion, PriorityPolicy
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import add_leads, default_policy, form_data, model_of

pytestmark = pytest.mark.django_db

POLICY_ADD = reverse("admin:prioritization_prioritypolicy_add")
PREVIEW_NEW = reverse("admin:prioritization_prioritypolicy_preview_new")


def preview_url(policy: PriorityPolicy) -> str:
    return reverse("admin:prioritization_prioritypolicy_preview", args=[policy.pk])


@pytest.fixture
def pune_and_goa(customer: Customer) -> Customer:
    """Two fresh live leads of the customer: Pune waited longer, so it is second today."""
    campaign = CampaignFactory(customer=customer)
    now = dt.datetime.now(dt.UTC)
    add_leads(
        campaign,
        {"city": "Pune", "created_at": (now - dt.timedelta(minutes=3)).isoformat()},
        {"city": "Goa", "created_at": (now - dt.timedelta(minutes=1)).isoformat()},
    )
    return customer


def test_the_preview_of_a_customer_policy_refuses_another_customers_model(
    admin_client: Client, pune_and_goa: Customer
) -> None:
    customer = pune_and_goa
    theirs = model_of(CustomerFactory(), {"city": {"Pune": 50.0}})
    policy = PriorityPolicy.objects.create(customer=customer, name="Own")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()

    response = admin_client.post(
        preview_url(policy), form_data(policy, weights_source="learned", learned_model=theirs.pk)
    )

    assert response.status_code == 200
    assert response.context["preview"] is None
    assert "learned_model" in response.context["form"].errors
    # The choices offered are the ones the policy's page offers: never another customer's.
    assert theirs.pk not in [
        choice.pk for choice in response.context["form"].fields["learned_model"].queryset
    ]


def test_the_preview_of_the_default_policy_refuses_the_previewed_customers_model(
    admin_client: Client, pune_and_goa: Customer
) -> None:
    customer = pune_and_goa
    own = model_of(customer, {"city": {"Pune": 50.0}})
    policy = default_policy()

    response = admin_client.post(
        preview_url(policy),
        form_data(policy, preview_customer=customer.pk, weights_source="learned", learned_model=own.pk),
    )

    # The default policy's page offers pooled models only: its draft may not use a customer's.
    assert response.status_code == 200
    assert response.context["preview"] is None
    assert "learned_model" in response.context["form"].errors


def test_the_preview_of_a_new_policy_refuses_another_customers_model(
    admin_client: Client, pune_and_goa: Customer
) -> None:
    customer = pune_and_goa
    theirs = model_of(CustomerFactory(), {"city": {"Pune": 50.0}})
    data = form_data(
        default_policy(), name="New", customer=customer.pk, weights_source="learned", learned_model=theirs.pk
    )

    response = admin_client.post(PREVIEW_NEW, data)

    assert response.status_code == 200
    assert response.context["preview"] is None
    assert "belongs to another customer" in response.context["form"].errors["learned_model"][0]


def test_the_preview_of_a_learned_draft_without_a_model_ranks_with_the_model_a_save_would_pick(
    admin_client: Client, pune_and_goa: Customer
) -> None:
    customer = pune_and_goa
    model_of(customer, {"city": {"Pune": 50.0}})
    policy = PriorityPolicy.objects.create(customer=customer, name="Own")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()

    response = admin_client.post(preview_url(policy), form_data(policy, weights_source="learned"))

    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview is not None, response.context["form"].errors
    assert [row.lead.city for row in preview.current] == ["Goa", "Pune"]
    # Saved so, the policy would use the customer's newest model (Pune ×50): Pune first.
    assert [row.lead.city for row in preview.draft] == ["Pune", "Goa"]
    assert PolicyVersion.objects.filter(policy=policy).count() == 1


# --- Calling hours: a day the clocks leave without its window ------------------------------------


@pytest.mark.parametrize(
    ("hours", "moment", "expected"),
    [
        # Berlin skips 02:00-03:00 on 2026-03-29 (the jump at 01:00 UTC): a 02:10-02:50 window
        # does not exist that day. The next opening is Monday's 02:10 CEST (00:10 UTC).
        (
            CallingHours("Europe/Berlin", dt.time(2, 10), dt.time(2, 50), frozenset(range(7))),
            dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 30, 0, 10, tzinfo=dt.UTC),
        ),
        # Lord Howe Island moves its clocks half an hour, from 02:00 to 02:30, on 2026-10-04.
        (
            CallingHours("Australia/Lord_Howe", dt.time(2), dt.time(2, 30), frozenset({6})),
            dt.datetime(2026, 10, 3, 14, 0, tzinfo=dt.UTC),
            dt.datetime(2026, 10, 10, 15, 0, tzinfo=dt.UTC),
        ),
        # After the window of the Sunday before: the skipped Sunday is passed over too (the
        # opening is two weeks ahead, not "no calling hours within a week").
        (
            CallingHours("Australia/Lord_Howe", dt.time(2), dt.time(2, 30), frozenset({6})),
            dt.datetime(2026, 9, 26, 16, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 10, 10, 15, 0, tzinfo=dt.UTC),
        ),
    ],
)
def test_a_window_the_clocks_skip_whole_is_no_opening(
    hours: CallingHours, moment: dt.datetime, expected: dt.datetime
) -> None:
    opening = next_opening(moment, hours)
    assert hours.is_open(opening), opening
    assert opening == expected
