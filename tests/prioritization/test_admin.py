"""The engine's admin: versioned policy edits, validation as form errors, preview, read-only logs."""

import datetime as dt
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from leads.models import Customer, Lead
from leads.services import ingest_lead_batch
from prioritization import tasks
from prioritization.admin import enqueue_rescoring
from prioritization.models import (
    Decision,
    PolicyVersion,
    PriorityPolicy,
    version_field_names,
    version_values,
)
from prioritization.services import claim_next_lead
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import default_policy, form_data

pytestmark = pytest.mark.django_db

POLICY_LIST = reverse("admin:prioritization_prioritypolicy_changelist")
POLICY_ADD = reverse("admin:prioritization_prioritypolicy_add")
VERSION_LIST = reverse("admin:prioritization_policyversion_changelist")
DECISION_LIST = reverse("admin:prioritization_decision_changelist")


def change_url(policy: PriorityPolicy) -> str:
    return reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])


def preview_url(policy: PriorityPolicy) -> str:
    return reverse("admin:prioritization_prioritypolicy_preview", args=[policy.pk])


@pytest.fixture
def delay() -> Any:
    with mock.patch.object(tasks.rescore_leads, "delay") as patched:
        yield patched


def ingest(customer: Customer, campaign_id: int, leads: list[dict[str, Any]]) -> list[Lead]:
    items = [
        {"customer_id": customer.pk, "campaign_id": campaign_id, "lead_type": "live", **lead}
        for lead in leads
    ]
    results = ingest_lead_batch(items, allowed_customer_id=None)
    assert all(result.status != "rejected" for result in results), results
    return list(Lead.objects.filter(customer=customer).order_by("created_at"))


# --- Policies: list and pages --------------------------------------------------------------------


def test_policy_list_shows_default_and_customer_policies_with_their_versions(admin_client: Any) -> None:
    default = default_policy()
    customer = CustomerFactory(name="Acme Loans")
    policy = PriorityPolicy.objects.create(customer=customer, name="Acme policy")
    version = PolicyVersion.objects.create(policy=policy, number=1, note="first")
    policy.current_version = version
    policy.save()

    response = admin_client.get(POLICY_LIST)

    assert response.status_code == 200
    content = response.content.decode()
    assert default.name in content
    assert "Acme policy" in content
    assert "Acme Loans" in content
    assert ">default<" in content

    found = admin_client.get(POLICY_LIST, {"q": "Acme"})
    assert list(found.context["cl"].result_list) == [policy]


def test_policy_pages_load(admin_client: Any) -> None:
    default = default_policy()
    page = admin_client.get(change_url(default))
    assert page.status_code == 200
    assert f'formaction="{preview_url(default)}"' in page.content.decode()  # "Preview these values"
    assert admin_client.get(POLICY_ADD).status_code == 200
    assert admin_client.get(preview_url(default)).status_code == 200


# --- Policies: saving makes versions -------------------------------------------------------------


def test_saving_a_change_creates_the_next_version_and_enqueues_a_rescoring(
    admin_client: Any,
    admin_user: User,
    django_capture_on_commit_callbacks: Any,
    delay: mock.MagicMock,
) -> None:
    policy = default_policy()
    first = policy.current_version
    assert first is not None
    before = version_values(first)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            change_url(policy),
            form_data(policy, sla_window_minutes=45, city_weights='{"Pune": 1.5}', note="Pune converts"),
        )

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    policy.refresh_from_db()
    second = policy.current_version
    assert second is not None
    assert second.pk != first.pk
    assert second.number == first.number + 1
    assert second.created_by == admin_user
    assert second.note == "Pune converts"
    assert second.sla_window_minutes == 45
    assert second.city_weights == {"Pune": 1.5}
    first.refresh_from_db()
    assert version_values(first) == before  # the old version is untouched
    assert enqueue_rescoring in callbacks
    delay.assert_called_once_with()


def test_saving_without_changes_creates_no_version_and_enqueues_nothing(
    admin_client: Any, django_capture_on_commit_callbacks: Any, delay: mock.MagicMock
) -> None:
    policy = default_policy()
    versions = PolicyVersion.objects.count()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(change_url(policy), form_data(policy, note="nothing really"))

    assert response.status_code == 302
    assert PolicyVersion.objects.count() == versions
    assert callbacks == []
    delay.assert_not_called()


def test_a_broker_that_is_down_does_not_undo_the_saved_version(
    admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from kombu.exceptions import OperationalError

    policy = default_policy()
    with (
        mock.patch.object(tasks.rescore_leads, "delay", side_effect=OperationalError("broker down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(change_url(policy), form_data(policy, lease_seconds=900))

    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.current_version is not None
    assert policy.current_version.lease_seconds == 900


def test_version_history_lists_who_when_and_what_changed(
    admin_client: Any, django_capture_on_commit_callbacks: Any, delay: mock.MagicMock
) -> None:
    policy = default_policy()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(change_url(policy), form_data(policy, stale_every=4, note="feed stale leads"))

    content = admin_client.get(change_url(policy)).content.decode()

    assert 'id="policy-history"' in content
    assert "feed stale leads" in content
    assert "<code>stale_every</code>: 0 &rarr; 4" in content
    assert "admin" in content  # who


def test_an_edit_based_on_an_outdated_version_is_refused(
    admin_client: Any, django_capture_on_commit_callbacks: Any, delay: mock.MagicMock
) -> None:
    policy = default_policy()
    stale_form = form_data(policy, lease_seconds=700)
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(change_url(policy), form_data(policy, lease_seconds=800)).status_code == 302
    versions = PolicyVersion.objects.count()

    response = admin_client.post(change_url(policy), stale_form)

    assert response.status_code == 200
    assert "changed while you edited it" in str(response.context["adminform"].form.non_field_errors())
    assert PolicyVersion.objects.count() == versions


def test_a_customer_policy_starts_from_the_default_values(
    admin_client: Any,
    admin_user: User,
    django_capture_on_commit_callbacks: Any,
    delay: mock.MagicMock,
) -> None:
    default = default_policy()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(change_url(default), form_data(default, sla_window_minutes=40))
    default.refresh_from_db()
    customer = CustomerFactory()

    page = admin_client.get(POLICY_ADD)
    assert page.context["adminform"].form.initial["sla_window_minutes"] == 40

    data = form_data(default, name="Custom", customer=customer.pk, note="own policy")
    data.pop("base_version")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(POLICY_ADD, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    policy = PriorityPolicy.objects.get(customer=customer)
    assert policy.current_version is not None
    assert policy.current_version.number == 1
    assert policy.current_version.sla_window_minutes == 40
    assert policy.current_version.created_by == admin_user
    assert enqueue_rescoring in callbacks


def test_a_new_policy_needs_a_customer(admin_client: Any) -> None:
    data = form_data(name="Second default")
    data.pop("base_version")
    policies = PriorityPolicy.objects.count()

    response = admin_client.post(POLICY_ADD, data)

    assert response.status_code == 200
    assert "customer" in response.context["adminform"].form.errors
    assert PriorityPolicy.objects.count() == policies


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sla_window_minutes": -5}, "sla_window_minutes"),
        ({"sla_target": 1.5}, "sla_target"),
        ({"sla_target": 0}, "sla_target"),
        ({"city_weights": '{"Pune": 0}'}, "city_weights"),
        ({"source_weights": '{"web": "abc"}'}, "source_weights"),
        ({"stage_weights": "[1, 2]"}, "stage_weights"),
        ({"plan_weights": '{"platinum": 2}'}, "plan_weights"),
        ({"reschedule_min_hours": 22, "reschedule_max_hours": 10}, "reschedule_max_hours"),
        ({"city_weights": '{"Pune": 1.2'}, "city_weights"),
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"stale_every": -1}, "stale_every"),
        ({"live_decay_minutes": "abc"}, "live_decay_minutes"),
    ],
)
def test_invalid_values_are_form_errors_and_create_nothing(
    admin_client: Any, changes: dict[str, Any], field: str
) -> None:
    policy = default_policy()
    versions = PolicyVersion.objects.count()
    current = policy.current_version_id

    response = admin_client.post(change_url(policy), form_data(policy, **changes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert PolicyVersion.objects.count() == versions
    policy.refresh_from_db()
    assert policy.current_version_id == current


def test_the_default_policy_cannot_be_deleted(admin_client: Any) -> None:
    policy = default_policy()
    response = admin_client.get(reverse("admin:prioritization_prioritypolicy_delete", args=[policy.pk]))
    assert response.status_code == 403

    refused = admin_client.post(
        POLICY_LIST, {"action": "delete_selected", "_selected_action": [policy.pk], "post": "yes"}
    )
    assert PriorityPolicy.objects.filter(pk=policy.pk).exists()
    # Why, rather than "your account doesn't have permission" (to a superuser).
    page = refused.content.decode()
    assert f"{policy}: every customer without a policy of its own follows it." in page
    assert "permission" not in page


def test_a_customer_policy_can_be_deleted(
    admin_client: Any, django_capture_on_commit_callbacks: Any, delay: mock.MagicMock
) -> None:
    customer = CustomerFactory()
    policy = PriorityPolicy.objects.create(customer=customer, name="Own")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            reverse("admin:prioritization_prioritypolicy_delete", args=[policy.pk]), {"post": "yes"}
        )

    assert response.status_code == 302
    assert not PriorityPolicy.objects.filter(pk=policy.pk).exists()
    assert enqueue_rescoring in callbacks  # its leads go back to the default policy


def test_a_policy_whose_versions_the_decision_log_names_is_kept(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    decisions = make_decisions(3)
    customer = decisions[0].lead.customer
    policy = PriorityPolicy.objects.create(customer=customer, name="Own")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()
    Decision.objects.filter(pk__in=[d.pk for d in decisions]).update(policy_version=policy.current_version)
    url = reverse("admin:prioritization_prioritypolicy_delete", args=[policy.pk])

    # Not Django's collector, which read every decision (and its lead) to list it.
    with django_assert_max_num_queries(12):
        response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 200  # the "cannot delete: protected" page, not a 500
    assert response.context["protected"] == [
        f"{policy}: the decision log names its versions, and decisions are kept."
    ]
    assert not response.context["perms_lacking"]
    assert PriorityPolicy.objects.filter(pk=policy.pk).exists()


# --- Preview -----------------------------------------------------------------------------------


@pytest.fixture
def three_leads(customer: Customer) -> tuple[Customer, list[Lead]]:
    """Three fresh live leads; the Pune one waited longest, so it is last today."""
    campaign = CampaignFactory(customer=customer)
    now = timezone.now()
    leads = ingest(
        customer,
        campaign.pk,
        [
            {
                "external_id": "pune",
                "city": "Pune",
                "created_at": (now - dt.timedelta(minutes=5)).isoformat(),
            },
            {
                "external_id": "delhi",
                "city": "Delhi",
                "created_at": (now - dt.timedelta(minutes=3)).isoformat(),
            },
            {"external_id": "goa", "city": "Goa", "created_at": (now - dt.timedelta(minutes=1)).isoformat()},
        ],
    )
    assert all(lead.priority_key is not None for lead in leads)
    return customer, leads


def test_preview_shows_how_a_draft_weight_moves_a_lead_up_and_saves_nothing(
    admin_client: Any, three_leads: tuple[Customer, list[Lead]]
) -> None:
    customer, leads = three_leads
    policy = default_policy()
    keys = {lead.pk: lead.priority_key for lead in leads}
    versions = PolicyVersion.objects.count()

    response = admin_client.post(
        preview_url(policy),
        form_data(policy, preview_customer=customer.pk, city_weights='{"Pune": 5}'),
    )

    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview is not None, response.context["form"].errors
    assert [row.lead.external_id for row in preview.current] == ["goa", "delhi", "pune"]
    assert [row.lead.external_id for row in preview.draft] == ["pune", "goa", "delhi"]
    pune = preview.draft[0]
    assert (pune.position, pune.other_position, pune.movement) == (1, 3, "up 2")
    assert any("city = Pune" in reason for reason in pune.reasons)
    assert [row.movement for row in preview.draft[1:]] == ["down 1", "down 1"]
    content = response.content.decode()
    assert "up 2 (was #3)" in content
    assert 'id="preview-draft"' in content
    # Nothing saved: no version, no key rewritten.
    assert PolicyVersion.objects.count() == versions
    assert {lead.pk: lead.priority_key for lead in Lead.objects.filter(customer=customer)} == keys


def test_preview_of_the_default_policy_asks_for_a_customer(admin_client: Any) -> None:
    policy = default_policy()
    response = admin_client.post(preview_url(policy), form_data(policy))
    assert response.status_code == 200
    assert response.context["preview"] is None
    assert "preview_customer" in response.context["form"].errors


def test_preview_of_a_customer_policy_ranks_its_customer_on_opening(
    admin_client: Any, three_leads: tuple[Customer, list[Lead]]
) -> None:
    customer, _ = three_leads
    policy = PriorityPolicy.objects.create(customer=customer, name="Own")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()

    response = admin_client.get(preview_url(policy))

    assert response.status_code == 200
    preview = response.context["preview"]
    assert preview.customer == customer
    assert preview.eligible == 3
    assert all(row.moved == 0 for row in preview.draft)


def test_preview_with_invalid_draft_values_shows_errors(
    admin_client: Any, three_leads: tuple[Customer, list[Lead]]
) -> None:
    customer, _ = three_leads
    policy = default_policy()
    response = admin_client.post(
        preview_url(policy), form_data(policy, preview_customer=customer.pk, sla_target=1.5)
    )
    assert response.status_code == 200
    assert response.context["preview"] is None
    assert "sla_target" in response.context["form"].errors


def test_preview_from_the_add_form_uses_the_chosen_customer(
    admin_client: Any, three_leads: tuple[Customer, list[Lead]]
) -> None:
    customer, _ = three_leads
    data = form_data(name="New", customer=customer.pk, city_weights='{"Pune": 5}')
    response = admin_client.post(reverse("admin:prioritization_prioritypolicy_preview_new"), data)
    assert response.status_code == 200
    assert response.context["preview"].draft[0].lead.external_id == "pune"
    assert not PriorityPolicy.objects.filter(customer=customer).exists()


# --- Versions -----------------------------------------------------------------------------------


def test_versions_are_listed_by_policy_and_read_only(admin_client: Any) -> None:
    policy = default_policy()
    version = policy.current_version
    assert version is not None

    listed = admin_client.get(VERSION_LIST, {"policy__id__exact": policy.pk})
    assert listed.status_code == 200
    assert version in listed.context["cl"].result_list

    assert admin_client.get(reverse("admin:prioritization_policyversion_add")).status_code == 403
    change = reverse("admin:prioritization_policyversion_change", args=[version.pk])
    assert admin_client.get(change).status_code == 200  # view only
    assert admin_client.post(change, {"note": "edited"}).status_code == 403
    delete = reverse("admin:prioritization_policyversion_delete", args=[version.pk])
    assert admin_client.get(delete).status_code == 403
    version.refresh_from_db()
    assert version.note != "edited"


# --- Decisions -----------------------------------------------------------------------------------


def make_decisions(count: int) -> list[Decision]:
    customer = CustomerFactory()
    campaign = campaign_calling_all_day(customer)  # claimed on the real clock, at any hour
    now = timezone.now()
    ingest(
        customer,
        campaign.pk,
        [
            {
                "external_id": f"d{i}",
                "city": "Pune",
                "created_at": (now - dt.timedelta(minutes=i)).isoformat(),
            }
            for i in range(count)
        ],
    )
    decisions = []
    for _ in range(count):
        contractor = ContractorFactory(campaigns=[campaign])
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk])
        assert claim is not None
        decisions.append(claim.decision)
    return decisions


def test_decision_log_lists_a_claim_and_shows_its_reasons(admin_client: Any) -> None:
    (decision,) = make_decisions(1)

    listed = admin_client.get(DECISION_LIST)
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [decision]
    assert reverse("admin:leads_lead_change", args=[decision.lead_id]) in listed.content.decode()

    by_lead = admin_client.get(DECISION_LIST, {"q": str(decision.lead_id)})
    assert decision in by_lead.context["cl"].result_list
    by_contractor = admin_client.get(DECISION_LIST, {"q": str(decision.contractor_id)})
    assert decision in by_contractor.context["cl"].result_list
    assert list(admin_client.get(DECISION_LIST, {"q": "nope"}).context["cl"].result_list) == []
    live = admin_client.get(DECISION_LIST, {"band": "live"})
    assert decision in live.context["cl"].result_list
    assert list(admin_client.get(DECISION_LIST, {"band": "stale"}).context["cl"].result_list) == []

    detail = admin_client.get(reverse("admin:prioritization_decision_change", args=[decision.pk]))
    assert detail.status_code == 200
    content = detail.content.decode()
    assert 'class="decision-reasons"' in content
    assert decision.reasons
    for reason in decision.reasons:
        assert f"<li>{reason}</li>" in content


def test_decision_log_is_read_only(admin_client: Any) -> None:
    (decision,) = make_decisions(1)
    assert admin_client.get(reverse("admin:prioritization_decision_add")).status_code == 403
    change = reverse("admin:prioritization_decision_change", args=[decision.pk])
    assert admin_client.post(change, {"band": "stale"}).status_code == 403
    delete = reverse("admin:prioritization_decision_delete", args=[decision.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Decision.objects.filter(pk=decision.pk, band=decision.band).exists()


def test_decision_list_runs_no_query_per_row(admin_client: Any, django_assert_max_num_queries: Any) -> None:
    make_decisions(1)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(DECISION_LIST)
    make_decisions(6)

    with django_assert_max_num_queries(len(one.captured_queries)):
        response = admin_client.get(DECISION_LIST)

    assert len(response.context["cl"].result_list) == 7


def test_policy_list_runs_no_query_per_row(admin_client: Any, django_assert_max_num_queries: Any) -> None:
    default_policy()
    with CaptureQueriesContext(connection) as one:
        admin_client.get(POLICY_LIST)
    for _ in range(5):
        policy = PriorityPolicy.objects.create(customer=CustomerFactory(), name="Own")
        policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
        policy.save()

    with django_assert_max_num_queries(len(one.captured_queries)):
        admin_client.get(POLICY_LIST)


def test_every_version_field_is_on_the_policy_page(admin_client: Any) -> None:
    form = admin_client.get(change_url(default_policy())).context["adminform"].form
    assert set(version_field_names()) <= set(form.fields)
