"""The engine's admin under review: who may see the decision log, what its and the other
lists accept as query parameters, and what a list costs when its table is large."""

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from leads.admin import EstimatedCountPaginator
from leads.models import ImportJob
from prioritization.models import Alert, AlertKind, Decision, SimulationRun
from tests.factories import CampaignFactory, CustomerFactory, staff_client
from tests.prioritization.conftest import model_of
from tests.prioritization.test_admin_robustness import customer_with_history

pytestmark = pytest.mark.django_db

DECISION_LIST = reverse("admin:prioritization_decision_changelist")
ALERT_LIST = reverse("admin:prioritization_alert_changelist")
MODEL_LIST = reverse("admin:prioritization_modelversion_changelist")


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


# --- Query parameters of the lists (one rule for every list: leads.admin_widgets.BaseAdmin) ------

LISTS = [
    "prioritization_decision",
    "prioritization_policyversion",
    "prioritization_prioritypolicy",
    "prioritization_alert",
    "prioritization_modelversion",
    "prioritization_simulationrun",
    "leads_customer",
    "leads_campaign",
    "leads_contractor",
    "leads_lead",
    "leads_leadevent",
    "leads_apikey",
    "leads_importjob",
]


@pytest.fixture
def a_row_of_each(decision: Decision) -> None:
    SimulationRun.objects.create(customer=customer_with_history())
    ImportJob.objects.create(original_name="leads.csv")


@pytest.mark.usefixtures("a_row_of_each")
@pytest.mark.parametrize("model", LISTS)
def test_every_filter_choice_of_a_list_opens_it(admin_client: Client, model: str) -> None:
    url = reverse(f"admin:{model}_changelist")
    changelist = admin_client.get(url).context["cl"]
    queries = [
        choice["query_string"] for spec in changelist.filter_specs for choice in spec.choices(changelist)
    ]
    assert len(queries) >= (0 if model == "prioritization_prioritypolicy" else 2)

    for query in queries:
        response = admin_client.get(url + query)
        assert response.status_code == 200, query  # not ?e=1 (a 302) nor a 400


@pytest.mark.usefixtures("a_row_of_each")
@pytest.mark.parametrize(
    ("model", "query"),
    [
        ("prioritization_decision", "band__regex=("),
        ("prioritization_decision", "decided_at__year=99999"),
        ("prioritization_decision", "campaign_ids=abc"),
        ("prioritization_decision", "campaign_ids__contains=abc"),
        ("prioritization_decision", "reasons__0=x"),  # no 500, but a read of the whole log
        ("prioritization_policyversion", "note__regex=("),
        ("prioritization_prioritypolicy", "name__regex=("),
        ("prioritization_alert", "kind__regex=("),
        ("prioritization_alert", "opened_at__year=99999"),
        ("prioritization_modelversion", "trained_at__year=99999"),
        ("prioritization_simulationrun", "created_at__year=99999"),
        ("leads_lead", "external_id__regex=("),
        ("leads_lead", "created_at__year=99999"),
        ("leads_lead", "city=Pune"),  # no 500, but no index serves it either
        ("leads_leadevent", "kind__regex=("),
        ("leads_customer", "name__regex=("),
        ("leads_campaign", "id__in=abc"),
        ("leads_contractor", "claims_made__gt=abc"),
        ("leads_apikey", "name__regex=("),
        ("leads_importjob", "status__regex=("),
    ],
)
def test_a_lookup_that_is_no_filter_of_the_list_is_a_bad_request(
    admin_client: Client, model: str, query: str
) -> None:
    admin_client.raise_request_exception = False

    response = admin_client.get(f"{reverse(f'admin:{model}_changelist')}?{query}")

    assert response.status_code == 400


# --- Lists of large tables -----------------------------------------------------------------------


def list_queries(client: Client, url: str, table: str) -> list[str]:
    """The SQL of the list's queries of ``table`` (not the admin banner's: open alerts)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return [
        q["sql"]
        for q in captured.captured_queries
        if f'FROM "{table}"' in q["sql"] and '"closed_at" IS NULL' not in q["sql"]
    ]


def assert_neither_counted_nor_sorted_whole(queries: list[str], table: str) -> None:
    counts = [sql for sql in queries if sql.startswith("SELECT COUNT(*)")]
    assert counts, queries
    for sql in counts:
        # Capped (a LIMIT subquery) or the planner's estimate, never the whole table.
        assert "LIMIT" in sql, sql
    (rows,) = [sql for sql in queries if not sql.startswith("SELECT COUNT(*)")]
    # Read backwards along the primary key, the one index that gives this order (a plan on
    # a few rows would sort them: cheaper).
    assert re.search(rf'ORDER BY "{table}"."id" DESC( LIMIT \d+)?$', rows), rows


def add_alerts(count: int) -> None:
    """``count`` closed alerts, each opened as it is written (as the evaluation does)."""
    for n in range(count):
        campaign = CampaignFactory()
        now = timezone.now()
        Alert.objects.create(
            kind=AlertKind.EMPTY_QUEUE,
            customer=campaign.customer,
            campaign=campaign,
            opened_at=now,
            closed_at=now,
            checked_at=now,
            message=f"queue {n} empty",
        )


def test_the_alert_list_neither_counts_nor_sorts_the_whole_table(admin_client: Client) -> None:
    add_alerts(3)

    queries = list_queries(admin_client, ALERT_LIST, "prioritization_alert")

    assert_neither_counted_nor_sorted_whole(queries, "prioritization_alert")


def test_the_alert_list_shows_the_newest_first_in_as_many_queries_for_more_rows(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    add_alerts(1)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(ALERT_LIST)
    add_alerts(5)

    with django_assert_max_num_queries(len(one.captured_queries)):
        response = admin_client.get(ALERT_LIST)

    listed = list(response.context["cl"].result_list)
    assert listed == sorted(listed, key=lambda alert: alert.opened_at, reverse=True)
    assert len(listed) == 6


def add_models(count: int) -> None:
    customer = CustomerFactory()
    for _ in range(count):
        model_of(customer)


def test_the_model_version_list_neither_counts_nor_sorts_the_whole_table(admin_client: Client) -> None:
    add_models(3)

    queries = list_queries(admin_client, MODEL_LIST, "prioritization_modelversion")

    assert_neither_counted_nor_sorted_whole(queries, "prioritization_modelversion")
    listed = list(admin_client.get(MODEL_LIST).context["cl"].result_list)
    assert [version.number for version in listed] == [3, 2, 1]


def test_a_capped_count_of_the_decision_log_reads_more_than(
    admin_client: Client, decision: Decision, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "exact_count_limit", 0)

    page = admin_client.get(DECISION_LIST, {"band": decision.band}).content.decode()

    assert re.search(r"more than 0\s+decisions", page), page
