"""Review of the lead data store's admin: bad input and deletions are messages, never a 500
or an inconsistent row; lists and delete pages stay cheap on large tables."""

import datetime as dt

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from leads.admin import EstimatedCountPaginator, LeadAdmin, LeadEventAdmin
from leads.models import Campaign, Contractor, Customer, EventKind, Lead, LeadEvent, QueueStatus
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, LeadFactory


def campaign_form(campaign: Campaign, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "customer": campaign.customer_id,
        "name": campaign.name,
        "active": "on",
        "time_zone": campaign.time_zone,
        "calling_hours_start": "08:00",
        "calling_hours_end": "20:00",
        "calling_days": "0,1,2,3,4",
        "created_at_0": "2026-01-05",
        "created_at_1": "09:00:00",
    }
    data.update(changes)
    return data


# --- Campaigns -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_campaign_stays_with_its_customer_and_its_leads(admin_client):
    lead = LeadFactory()
    campaign = lead.campaign
    other = CustomerFactory()
    url = reverse("admin:leads_campaign_change", args=[campaign.pk])

    page = admin_client.get(url).content.decode()
    response = admin_client.post(url, campaign_form(campaign, customer=other.pk, name="Renamed"))

    assert 'name="customer"' not in page
    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.name, campaign.customer_id) == ("Renamed", lead.customer_id)
    assert Lead.objects.get().customer_id == campaign.customer_id


@pytest.mark.django_db
def test_a_new_campaign_still_chooses_its_customer(admin_client):
    customer = CustomerFactory()
    template = CampaignFactory.build(customer=customer, name="Spring")

    response = admin_client.post(reverse("admin:leads_campaign_add"), campaign_form(template))

    assert response.status_code == 302
    assert Campaign.objects.get(name="Spring").customer == customer


# --- Customers -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_webhook_url_with_an_uppercase_scheme_is_saved_in_lowercase(admin_client):
    data = {"name": "Acme", "pricing_plan": "pro", "created_at_0": "2026-01-05", "created_at_1": "09:00:00"}

    response = admin_client.post(
        reverse("admin:leads_customer_add"), {**data, "alert_webhook_url": "HTTPS://Hooks.example.com/A"}
    )

    assert response.status_code == 302
    assert Customer.objects.get().alert_webhook_url == "https://Hooks.example.com/A"


# --- Deleting what leads and their history name ---------------------------------------------------

# Tables of millions of rows that a delete page must not read whole to say "no".
LARGE_TABLES = ('"leads_lead"', '"leads_leadevent"', '"prioritization_decision"')


def unbounded_reads_of_large_tables(captured: CaptureQueriesContext) -> list[str]:
    return [
        query["sql"]
        for query in captured
        if query["sql"].startswith("SELECT")
        and any(f"FROM {table}" in query["sql"] for table in LARGE_TABLES)
        and "LIMIT" not in query["sql"]
    ]


def held_lead_with_history() -> Lead:
    contractor = ContractorFactory()
    lead = LeadFactory(
        status=QueueStatus.HELD, holder=contractor, lease_expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    for minute in range(3):
        LeadEvent.objects.create(
            lead=lead,
            kind=EventKind.CLAIMED,
            at=timezone.now() - dt.timedelta(minutes=minute),
            contractor=contractor,
        )
    return lead


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["customer", "campaign", "contractor"])
def test_deleting_what_leads_name_says_no_without_reading_the_leads(admin_client, model):
    lead = held_lead_with_history()
    LeadFactory.create_batch(3, campaign=lead.campaign)
    target = {"customer": lead.customer, "campaign": lead.campaign, "contractor": lead.holder}[model]
    url = reverse(f"admin:leads_{model}_delete", args=[target.pk])

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(url)
    posted = admin_client.post(url, {"post": "yes"})

    assert page.status_code == 200
    assert unbounded_reads_of_large_tables(captured) == []
    assert "protected related objects" in page.content.decode()
    assert str(target) in page.content.decode()
    assert posted.status_code == 200  # the same page again, nothing deleted
    assert type(target).objects.filter(pk=target.pk).exists()
    assert Lead.objects.count() == 4


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["customer", "campaign", "contractor"])
def test_the_delete_action_on_what_leads_name_says_no_without_reading_the_leads(admin_client, model):
    lead = held_lead_with_history()
    target = {"customer": lead.customer, "campaign": lead.campaign, "contractor": lead.holder}[model]
    url = reverse(f"admin:leads_{model}_changelist")
    action = {"action": "delete_selected", ACTION_CHECKBOX_NAME: [target.pk]}

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.post(url, action)
    posted = admin_client.post(url, {**action, "post": "yes"})

    assert unbounded_reads_of_large_tables(captured) == []
    assert "protected related objects" in page.content.decode()
    assert posted.status_code == 200
    assert type(target).objects.filter(pk=target.pk).exists()


@pytest.mark.django_db
def test_a_contractor_with_call_history_only_is_kept_and_told_to_be_deactivated(admin_client):
    lead = LeadFactory()
    contractor = ContractorFactory()
    LeadEvent.objects.create(lead=lead, kind=EventKind.ATTEMPT, at=timezone.now(), contractor=contractor)
    url = reverse("admin:leads_contractor_delete", args=[contractor.pk])

    page = admin_client.get(url).content.decode()
    admin_client.post(url, {"post": "yes"})

    assert "has call history: deactivate the contractor instead" in page
    assert Contractor.objects.filter(pk=contractor.pk).exists()


@pytest.mark.django_db
def test_what_no_lead_names_is_still_deleted(admin_client):
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    contractor = ContractorFactory(campaigns=[campaign])

    for model, target in (("contractor", contractor), ("campaign", campaign), ("customer", customer)):
        url = reverse(f"admin:leads_{model}_delete", args=[target.pk])
        assert admin_client.post(url, {"post": "yes"}).status_code == 302

    assert not Customer.objects.exists()
    assert not Campaign.objects.exists()
    assert not Contractor.objects.exists()


# --- Contractors --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_editing_a_contractor_keeps_the_claims_counted_meanwhile(admin_client):
    campaign = CampaignFactory()
    contractor = ContractorFactory(campaigns=[campaign], claims_made=7)
    url = reverse("admin:leads_contractor_change", args=[contractor.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form.initial.get(name) for name in form.fields}
    data.update({"created_at_0": "2026-01-05", "created_at_1": "09:00:00", "campaigns": [campaign.pk]})
    # Claims while the page is open, counted as the engine counts them.
    Contractor.objects.filter(pk=contractor.pk).update(claims_made=F("claims_made") + 2)

    response = admin_client.post(url, {**data, "name": "Renamed", "active": "", "claims_made": "0"})

    assert response.status_code == 302
    contractor.refresh_from_db()
    assert (contractor.name, contractor.active, contractor.claims_made) == ("Renamed", False, 9)
    assert list(contractor.campaigns.all()) == [campaign]


# --- Lead search --------------------------------------------------------------------------------


def index_conditions(sql: str) -> list[str]:
    """The Index Cond lines of the plan PostgreSQL takes for the query."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return [row[0].strip() for row in cursor.fetchall() if "Index Cond" in row[0]]


@pytest.mark.django_db
@pytest.mark.parametrize("numeric", [False, True])
def test_a_lead_is_searched_by_external_id_through_an_index_not_a_scan(admin_client, numeric):
    # Enough leads, analyzed, for the planner to weigh a scan against the unique index.
    campaigns = [CampaignFactory() for _ in range(3)]
    LeadFactory.create_batch(3, campaign=campaigns[0])
    template = Lead.objects.values().first()
    Lead.objects.bulk_create(
        Lead(
            **{
                **template,
                "id": None,
                "campaign_id": campaign.pk,
                "customer_id": campaign.customer_id,
                "external_id": f"bulk-{campaign.pk}-{n}",
            }
        )
        for campaign in campaigns
        for n in range(2000)
    )
    lead = LeadFactory(campaign=campaigns[1], external_id="77" if numeric else "crm-77")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_lead")
        cursor.execute("ANALYZE leads_customer")

    with CaptureQueriesContext(connection) as captured:
        found = admin_client.get(reverse("admin:leads_lead_changelist"), {"q": lead.external_id})

    assert [row.pk for row in found.context["cl"].result_list] == [lead.pk]
    by_external_id = [query["sql"] for query in captured if '"leads_lead"."external_id" =' in query["sql"]]
    assert by_external_id
    for sql in by_external_id:
        conditions = index_conditions(sql)
        assert any("external_id" in line and "customer_id" in line for line in conditions), conditions


# --- Who sees lead data ---------------------------------------------------------------------------


def staff_with(*codenames: str) -> Client:
    user = User.objects.create_user("clerk", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="leads", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_history_of_leads_is_hidden_from_staff_who_may_not_see_leads():
    lead = LeadFactory(external_id="crm-secret-1")
    event = LeadEvent.objects.create(
        lead=lead, kind=EventKind.UPDATED, at=timezone.now(), detail={"city": "Goa"}
    )
    client = staff_with("view_leadevent")

    listing = client.get(reverse("admin:leads_leadevent_changelist"))
    page = client.get(reverse("admin:leads_leadevent_change", args=[event.pk]))
    index = client.get(reverse("admin:index"))

    assert listing.status_code == 403
    assert page.status_code == 403
    assert "crm-secret-1" not in index.content.decode()
    assert reverse("admin:leads_leadevent_changelist") not in index.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("lead_perm", ["view_lead", "change_lead"])
def test_the_history_of_leads_is_shown_to_staff_who_may_see_leads(lead_perm):
    lead = LeadFactory(external_id="crm-visible-1")
    LeadEvent.objects.create(lead=lead, kind=EventKind.UPDATED, at=timezone.now())
    client = staff_with("view_leadevent", lead_perm)

    listing = client.get(reverse("admin:leads_leadevent_changelist"))

    assert listing.status_code == 200
    assert "crm-visible-1" in listing.content.decode()


# --- Paging large lists ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["lead", "leadevent"])
def test_a_large_list_pages_through_its_newest_rows_only(admin_client, monkeypatch, model):
    # At scale: 10,000 rows in pages of 100 among millions; here 4 rows in pages of 2 among 12.
    monkeypatch.setattr(EstimatedCountPaginator, "exact_count_limit", 4)
    monkeypatch.setattr(LeadAdmin if model == "lead" else LeadEventAdmin, "list_per_page", 2)
    leads = LeadFactory.create_batch(12)
    for lead in leads:
        LeadEvent.objects.create(lead=lead, kind=EventKind.CLAIMED, at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE leads_{model}")
    url = reverse(f"admin:leads_{model}_changelist")

    first = admin_client.get(url)
    with CaptureQueriesContext(connection) as captured:
        deep = admin_client.get(url, {"p": "6"})  # page 6 of 12 rows: offered before

    assert first.context["cl"].paginator.count_kind == "estimate"
    assert list(first.context["cl"].paginator.page_range) == [1, 2]
    assert deep.status_code == 200
    newest = type(first.context["cl"].result_list[0]).objects.order_by("-id")
    assert [row.pk for row in deep.context["cl"].result_list] == [row.pk for row in newest[2:4]]
    assert not [query["sql"] for query in captured if "OFFSET 10" in query["sql"]]
