"""The policy screens under production-sized data: the preview reads each campaign's first
leads through the claim's indexes (never the whole queue) and ranks them as next-lead hands
them out; the version history and the forms' model choices stay bounded."""

import datetime as dt
import re
from typing import Any
from unittest import mock

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from leads.models import Campaign, Customer, Lead, QueueStatus
from prioritization import admin_preview, services
from prioritization.admin import HISTORY_VERSIONS
from prioritization.admin_preview import build_preview, draft_params
from prioritization.models import PolicyVersion, PriorityPolicy, version_values
from prioritization.services import claim_next_lead, current_versions, ranked_leads_at
from tests.factories import ContractorFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_leads, model_of, set_policy

pytestmark = pytest.mark.django_db

MINUTE = dt.timedelta(minutes=1)


def in_force_params(customer: Customer) -> Any:
    """The draft of a preview opened on the customer's policy: its settings in force."""
    return draft_params(version_values(current_versions([customer.pk])[customer.pk]))


def queue(campaign: Campaign, count: int, *, now: dt.datetime) -> list[Lead]:
    """``count`` leads of the campaign: live and stale, cities and arrival times spread."""
    cities = ["Pune", "Goa", "Delhi", ""]
    return add_leads(
        campaign,
        *(
            {
                "lead_type": "live" if i % 3 else "stale",
                "city": cities[i % len(cities)],
                "created_at": (now - dt.timedelta(minutes=1 + (i * 7) % 90)).isoformat(),
                "last_activity": (now - dt.timedelta(days=1 + i % 20)).isoformat(),
            }
            for i in range(count)
        ),
        now=now,
    )


# --- The preview reads a bounded number of leads ----------------------------------------------


def test_the_preview_builds_only_the_leads_it_shows_not_the_whole_queue() -> None:
    customer = CustomerFactory()
    set_policy(customer, city_weights={"Pune": 2.0})
    campaigns = [campaign_calling_all_day(customer) for _ in range(2)]
    for campaign in campaigns:
        queue(campaign, 60, now=T0 - MINUTE)
    built = 0
    original = Lead.from_db

    def counting(*args: Any, **kwargs: Any) -> Lead:
        nonlocal built
        built += 1
        return original(*args, **kwargs)

    with mock.patch.object(Lead, "from_db", counting):
        preview = build_preview(customer=customer, params=in_force_params(customer), now=T0, top=5)

    assert len(preview.current) == len(preview.draft) == 5
    # The rows shown (at most 10 leads), not the 120 queued: the old preview loaded every
    # eligible lead of the customer as a model instance, twice over.
    assert built <= 10
    # Each campaign's first 5 of three lists at most, not the queue.
    assert preview.read <= 2 * 3 * 5
    assert (preview.eligible, preview.more_eligible) == (120, False)


def test_the_preview_reads_through_the_claim_indexes() -> None:
    customer = CustomerFactory()
    campaign = campaign_calling_all_day(customer)
    queue(campaign, 20, now=T0 - MINUTE)
    params = {"campaigns": [campaign.pk], "now": T0, "top": 5, "cap": 10}
    with transaction.atomic(), connection.cursor() as cursor:
        # Small tables make a scan cheap; forbidding it shows whether an index path exists.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + admin_preview._POOL_SQL, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN " + admin_preview._ELIGIBLE_SQL, params)
        count_plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "lead_claim_ready" in plan
    assert "lead_claim_sla" in plan
    assert "lead_waiting_due" in plan
    assert "lead_held_lease" in plan
    assert "Seq Scan on leads_lead" not in plan
    assert "Seq Scan on leads_lead" not in count_plan


def test_the_eligible_count_stops_at_its_cap() -> None:
    customer = CustomerFactory()
    campaign = campaign_calling_all_day(customer)
    queue(campaign, 12, now=T0 - MINUTE)
    with mock.patch.object(admin_preview, "ELIGIBLE_COUNT_CAP", 10):
        preview = build_preview(customer=customer, params=in_force_params(customer), now=T0, top=3)
    assert (preview.eligible, preview.more_eligible) == (10, True)


# --- The preview's current order is next-lead's ----------------------------------------------


def test_the_current_order_is_the_order_next_lead_hands_the_leads_out() -> None:
    customer = CustomerFactory()
    set_policy(customer, city_weights={"Pune": 3.0, "Goa": 0.5}, sla_protect_minutes=10)
    first, second = campaign_calling_all_day(customer), campaign_calling_all_day(customer)
    queue(first, 30, now=T0 - MINUTE)
    queue(second, 30, now=T0 - MINUTE)
    # Ties: two leads with the same key, the lower id goes first (in two campaigns).
    twins = add_leads(
        first,
        {"city": "Delhi", "created_at": (T0 - 3 * MINUTE).isoformat()},
        now=T0 - MINUTE,
    ) + add_leads(
        second,
        {"city": "Delhi", "created_at": (T0 - 3 * MINUTE).isoformat()},
        now=T0 - MINUTE,
    )
    assert twins[0].priority_key == twins[1].priority_key
    # A lead due again (rescheduled, not yet woken) and one whose lease ran out.
    rescheduled, expired = queue(second, 2, now=T0 - MINUTE)
    Lead.objects.filter(pk=rescheduled.pk).update(status=QueueStatus.WAITING, due_at=T0 - 2 * MINUTE)
    holder = ContractorFactory(campaigns=[first, second])
    Lead.objects.filter(pk=expired.pk).update(
        status=QueueStatus.HELD, holder=holder, lease_expires_at=T0 - MINUTE
    )
    top = 12

    preview = build_preview(customer=customer, params=in_force_params(customer), now=T0, top=top)

    shown = [row.lead.pk for row in preview.current]
    # The brute-force ranking of every eligible lead agrees ...
    oracle = [r.candidate.lead_id for r in ranked_leads_at(campaign_ids=[first.pk, second.pk], now=T0)]
    assert shown == oracle[:top]
    # ... and so do the claims of contractors asking for both campaigns at that instant.
    handed = []
    for _ in range(top):
        claim = claim_next_lead(
            contractor_id=ContractorFactory(campaigns=[first, second]).pk,
            campaign_ids=[first.pk, second.pk],
            now=T0,
        )
        assert claim is not None
        handed.append(claim.lead.pk)
    assert shown == handed


def test_a_lead_never_scored_is_ranked_under_the_version_in_force_as_a_claim_ranks_it() -> None:
    customer = CustomerFactory()
    set_policy(customer, ordering="fifo")
    campaign = campaign_calling_all_day(customer)
    stale, live = add_leads(
        campaign,
        {"lead_type": "stale", "created_at": (T0 - 5 * MINUTE).isoformat()},
        {"lead_type": "live", "created_at": (T0 - 4 * MINUTE).isoformat()},
        now=T0 - MINUTE,
    )
    # Keys not written yet (as before a rescoring): a claim ranks such a lead under the version
    # in force (FIFO: one band for all, then the lower id), not under built-in defaults.
    Lead.objects.filter(pk__in=[stale.pk, live.pk]).update(scored_version=None, priority_key=None)

    preview = build_preview(customer=customer, params=in_force_params(customer), now=T0)

    claim = claim_next_lead(
        contractor_id=ContractorFactory(campaigns=[campaign]).pk, campaign_ids=[campaign.pk], now=T0
    )
    assert claim is not None
    assert preview.current[0].lead.pk == claim.lead.pk == stale.pk


def test_the_draft_column_names_leads_it_lifts_from_below_todays_top() -> None:
    customer = CustomerFactory()
    fresh, older = campaign_calling_all_day(customer), campaign_calling_all_day(customer)
    waited = [(fresh, 50), (fresh, 51), (fresh, 52), (older, 60), (older, 61)]
    leads = [
        add_leads(campaign, {"city": "Goa", "created_at": (T0 - minutes * MINUTE).isoformat()}, now=T0)[0]
        for campaign, minutes in waited
    ]
    pune = add_leads(older, {"city": "Pune", "created_at": (T0 - 59 * MINUTE).isoformat()}, now=T0)[0]
    params = draft_params({**version_values(set_policy(customer)), "city_weights": {"Pune": 50.0}})

    preview = build_preview(customer=customer, params=params, now=T0, top=3)

    # Today: the fresh campaign's three; Pune comes fourth (read with its own campaign's first).
    assert [row.lead.pk for row in preview.current] == [lead.pk for lead in leads[:3]]
    lifted = preview.draft[0]
    assert lifted.lead.pk == pune.pk
    assert (lifted.other_known, lifted.movement, lifted.other_label) == (
        False,
        "new in the top 3",
        "below #3",
    )
    assert [row.other_label for row in preview.current] == ["#2", "#3", "below #3"]


# --- Customers with nothing to rank ------------------------------------------------------------


@pytest.mark.parametrize("world", ["no campaign", "no lead", "paused", "only rescheduled", "only stale"])
def test_the_preview_of_a_customer_with_nothing_or_little_to_call(admin_client: Any, world: str) -> None:
    customer = CustomerFactory()
    set_policy(customer)
    if world != "no campaign":
        campaign = campaign_calling_all_day(customer, active=world != "paused")
        if world in {"paused", "only rescheduled"}:
            leads = queue(campaign, 4, now=T0 - MINUTE)
            if world == "only rescheduled":
                Lead.objects.filter(pk__in=[lead.pk for lead in leads]).update(
                    status=QueueStatus.WAITING, due_at=T0 + dt.timedelta(hours=22)
                )
        if world == "only stale":
            add_leads(campaign, {"lead_type": "stale"}, {"lead_type": "stale"}, now=T0 - MINUTE)
    policy = customer.priority_policy
    url = reverse("admin:prioritization_prioritypolicy_preview", args=[policy.pk])

    with mock.patch.object(admin_preview, "preview_now", return_value=T0):
        response = admin_client.get(url)

    assert response.status_code == 200
    preview = response.context["preview"]
    if world == "only stale":
        assert preview.eligible == 2
        assert [row.band for row in preview.current] == ["stale", "stale"]
    else:
        assert (preview.eligible, preview.current, preview.draft) == (0, [], [])
        assert "No eligible lead to rank." in response.content.decode()


# --- The policy's page: version history and model choices -------------------------------------


def many_versions(customer: Customer, count: int, *, user: Any = None) -> PriorityPolicy:
    policy = PriorityPolicy.objects.create(customer=customer, name=f"Policy of {customer}")
    PolicyVersion.objects.bulk_create(
        PolicyVersion(policy=policy, number=n, created_by=user, note=f"change {n}", stale_every=n % 3)
        for n in range(1, count + 1)
    )
    policy.current_version = PolicyVersion.objects.get(policy=policy, number=count)
    policy.save(update_fields=["current_version"])
    return policy


def test_the_policy_page_lists_its_newest_versions_and_links_to_all_of_them(
    admin_client: Any, admin_user: Any
) -> None:
    policy = many_versions(CustomerFactory(), HISTORY_VERSIONS + 10, user=admin_user)

    content = admin_client.get(
        reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])
    ).content
    page = content.decode()

    shown = re.findall(r'data-version="(\d+)"', page)
    assert [int(number) for number in shown] == list(range(HISTORY_VERSIONS + 10, 10, -1))
    # The oldest shown still says what it changed (compared with the version before it).
    assert "<code>stale_every</code>: 1 &rarr; 2" in page
    assert "first version" not in page
    versions = reverse("admin:prioritization_policyversion_changelist")
    assert f'href="{versions}?policy__id__exact={policy.pk}"' in page


def test_the_version_history_costs_the_same_queries_for_many_versions(
    admin_client: Any, admin_user: Any, django_assert_max_num_queries: Any
) -> None:
    few = many_versions(CustomerFactory(), 2, user=admin_user)
    many = many_versions(CustomerFactory(), 40, user=admin_user)
    model = model_of(many.customer)
    PolicyVersion.objects.filter(policy=many, number__gt=20).update(
        weights_source="learned", learned_model=model
    )
    with CaptureQueriesContext(connection) as baseline:
        admin_client.get(reverse("admin:prioritization_prioritypolicy_change", args=[few.pk]))

    with django_assert_max_num_queries(len(baseline) + 1):  # the model choice listed
        response = admin_client.get(reverse("admin:prioritization_prioritypolicy_change", args=[many.pk]))
    assert response.status_code == 200


def test_the_simulator_form_reads_the_models_it_offers_in_one_query(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    url = reverse("admin:prioritization_simulationrun_add")
    with CaptureQueriesContext(connection) as baseline:
        admin_client.get(url)
    for _ in range(20):
        model_of(CustomerFactory())

    with django_assert_max_num_queries(len(baseline)):
        response = admin_client.get(url)
    assert response.status_code == 200
    assert response.content.decode().count("model v") >= 20


def test_the_versions_in_force_of_more_customers_than_the_cache_holds_are_read_in_one_query(
    monkeypatch: pytest.MonkeyPatch, django_assert_max_num_queries: Any
) -> None:
    """The SLA figures, their rollups and the alerts name every customer's version: with more
    customers having a policy of their own than the cache holds, each call read them one
    query per customer (thousands, on every dashboard load)."""
    monkeypatch.setattr(services, "VERSION_CACHE_SIZE", 3)
    customers = [CustomerFactory() for _ in range(6)]
    in_force = {c.pk: set_policy(c, city_weights={"Pune": 1.0 + i}).pk for i, c in enumerate(customers)}
    services.forget_cached_versions()

    for _ in range(2):  # again: the cache cannot keep them all
        with django_assert_max_num_queries(2):  # which version is in force; the versions
            versions = current_versions([c.pk for c in customers])
        assert {customer: version.pk for customer, version in versions.items()} == in_force


@pytest.fixture
def three_models_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_preview, "LEARNED_MODEL_CHOICES", 3)


def customer_on_an_old_model(customer: Customer) -> tuple[Any, list[Any]]:
    """The customer's policy uses its first model; four newer ones were trained since."""
    in_use, *newer = (model_of(customer) for _ in range(5))  # same trained_at: newest by id
    set_policy(customer, weights_source="learned", learned_model=in_use)
    return in_use, newer


def test_the_preview_offers_the_newest_models_and_the_one_in_use(
    admin_client: Any, three_models_offered: None
) -> None:
    customer = CustomerFactory()
    in_use, newer = customer_on_an_old_model(customer)
    model_of(CustomerFactory())  # another customer's: never offered on this policy's preview
    policy = PriorityPolicy.objects.get(customer=customer)

    form = admin_client.get(reverse("admin:prioritization_prioritypolicy_preview", args=[policy.pk])).context[
        "form"
    ]

    assert list(form.fields["learned_model"].queryset) == [*reversed(newer[1:]), in_use]
    # A new policy's preview: any customer's models, the newest three.
    form = admin_client.get(reverse("admin:prioritization_prioritypolicy_preview_new")).context["form"]
    assert form.fields["learned_model"].queryset.count() == 3
