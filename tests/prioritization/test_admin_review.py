"""The engine's admin under review: who may see the decision log, what its and the other
lists accept as query parameters, and what a list costs when its table is large."""

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from leads.models import Campaign
from prioritization.models import Decision, SimulationRun
from prioritization.services import claim_next_lead
from tests.prioritization.conftest import add_lead
from tests.prioritization.test_admin_robustness import customer_with_history

pytestmark = pytest.mark.django_db

DECISION_LIST = reverse("admin:prioritization_decision_changelist")


def staff_client(*perms: str, name: str = "clerk") -> Client:
    """A logged-in staff user holding exactly ``perms`` ("app_label.codename")."""
    user = User.objects.create_user(name, is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def decision(all_day_campaign: Campaign, make_contractor: Callable[..., Any]) -> Decision:
    add_lead(all_day_campaign)
    claim = claim_next_lead(
        contractor_id=make_contractor(all_day_campaign).pk, campaign_ids=[all_day_campaign.pk]
    )
    assert claim is not None
    return claim.decision


# --- Who may read the decision log ---------------------------------------------------------------


def test_the_decision_log_is_not_shown_to_staff_who_may_not_view_leads(decision: Decision) -> None:
    client = staff_client("prioritization.view_decision")
    page = reverse("admin:prioritization_decision_change", args=[decision.pk])

    assert client.get(DECISION_LIST).status_code == 403
    assert client.get(page).status_code == 403
    assert DECISION_LIST not in client.get(reverse("admin:index")).content.decode()


@pytest.mark.parametrize("lead_perm", ["leads.view_lead", "leads.change_lead"])
def test_the_decision_log_is_shown_to_staff_who_may_view_leads(decision: Decision, lead_perm: str) -> None:
    client = staff_client("prioritization.view_decision", lead_perm)

    listed = client.get(DECISION_LIST)
    assert listed.status_code == 200
    assert [row.pk for row in listed.context["cl"].result_list] == [decision.pk]
    assert client.get(reverse("admin:prioritization_decision_change", args=[decision.pk])).status_code == 200


# --- Query parameters of the lists ---------------------------------------------------------------

LISTS = ["decision", "policyversion", "prioritypolicy", "alert", "modelversion", "simulationrun"]


@pytest.fixture
def a_row_of_each(decision: Decision) -> None:
    SimulationRun.objects.create(customer=customer_with_history())


@pytest.mark.usefixtures("a_row_of_each")
@pytest.mark.parametrize("model", LISTS)
def test_every_filter_choice_of_a_list_opens_it(admin_client: Client, model: str) -> None:
    url = reverse(f"admin:prioritization_{model}_changelist")
    changelist = admin_client.get(url).context["cl"]
    queries = [
        choice["query_string"] for spec in changelist.filter_specs for choice in spec.choices(changelist)
    ]
    assert len(queries) >= (0 if model == "prioritypolicy" else 2)

    for query in queries:
        response = admin_client.get(url + query)
        assert response.status_code == 200, query  # not ?e=1 (a 302) nor a 400


@pytest.mark.usefixtures("a_row_of_each")
@pytest.mark.parametrize(
    ("model", "query"),
    [
        ("decision", "band__regex=("),
        ("decision", "decided_at__year=99999"),
        ("decision", "campaign_ids=abc"),
        ("decision", "campaign_ids__contains=abc"),
        ("decision", "reasons__0=x"),  # no 500, but a read of the whole log
        ("policyversion", "note__regex=("),
        ("prioritypolicy", "name__regex=("),
        ("alert", "kind__regex=("),
        ("alert", "opened_at__year=99999"),
        ("modelversion", "trained_at__year=99999"),
        ("simulationrun", "created_at__year=99999"),
    ],
)
def test_a_lookup_that_is_no_filter_of_the_list_is_a_bad_request(
    admin_client: Client, model: str, query: str
) -> None:
    admin_client.raise_request_exception = False

    response = admin_client.get(f"{reverse(f'admin:prioritization_{model}_changelist')}?{query}")

    assert response.status_code == 400
