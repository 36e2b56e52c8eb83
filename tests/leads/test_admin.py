"""The admin of the lead data store: every page loads, lists stay flat, keys can be revoked."""

import datetime as dt
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from leads import admin as lead_admin
from leads.admin import EstimatedCountPaginator
from leads.models import (
    ApiKey,
    ApiScope,
    CloseReason,
    EventKind,
    ImportJob,
    ImportStatus,
    Lead,
    LeadEvent,
    QueueStatus,
)
from leads.services import update_lead
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, LeadFactory, staff_client

LEAD_LIST = reverse("admin:leads_lead_changelist")
CONTRACTOR_LIST = reverse("admin:leads_contractor_changelist")


def populate(count: int) -> dict[str, object]:
    """`count` customers, each with two campaigns, a contractor, a held, a closed and a
    ready lead with history, an ingest key and an import job."""
    made: dict[str, list[object]] = {"leads": [], "events": [], "keys": [], "jobs": []}
    now = timezone.now()
    for _ in range(count):
        customer = CustomerFactory()
        first, second = CampaignFactory(customer=customer), CampaignFactory(customer=customer)
        contractor = ContractorFactory(campaigns=[first, second])
        held = LeadFactory(
            campaign=first,
            status=QueueStatus.HELD,
            holder=contractor,
            lease_expires_at=now + dt.timedelta(minutes=5),
        )
        closed = LeadFactory(
            campaign=second, status=QueueStatus.CLOSED, closed_at=now, closed_reason=CloseReason.CONVERTED
        )
        ready = LeadFactory(campaign=second, city="Pune")
        made["leads"] += [held, closed, ready]
        made["events"].append(
            LeadEvent.objects.create(lead=held, kind=EventKind.CLAIMED, at=now, contractor=contractor)
        )
        made["events"].append(
            LeadEvent.objects.create(
                lead=closed, kind=EventKind.ATTEMPT, at=now, contractor=contractor, disposition="converted"
            )
        )
        key, _ = ApiKey.objects.create_key(
            name=f"ingest {customer.pk}", scope=ApiScope.INGEST, customer=customer
        )
        made["keys"].append(key)
        made["jobs"].append(
            ImportJob.objects.create(
                file="imports/x.csv",
                original_name="x.csv",
                status=ImportStatus.DONE,
                customer=customer,
                campaign=first,
                total_rows=10,
                processed_rows=10,
                created_count=9,
                rejected_count=1,
            )
        )
    made["customer"] = customer
    made["campaign"] = first
    made["contractor"] = contractor
    return made


def list_queries(client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return [query["sql"] for query in captured]


# --- Every page loads --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model", ["customer", "campaign", "contractor", "lead", "leadevent", "apikey", "importjob"]
)
def test_every_changelist_and_change_page_loads_with_data(admin_client, model):
    made = populate(2)
    objects = {
        "customer": made["customer"],
        "campaign": made["campaign"],
        "contractor": made["contractor"],
        "lead": made["leads"][0],
        "leadevent": made["events"][0],
        "apikey": made["keys"][0],
        "importjob": made["jobs"][0],
    }
    target = objects[model]

    listing = admin_client.get(reverse(f"admin:leads_{model}_changelist"))
    assert listing.status_code == 200
    assert len(listing.context["cl"].result_list) >= 2

    page = admin_client.get(reverse(f"admin:leads_{model}_change", args=[quote(target.pk)]), follow=True)
    assert page.status_code == 200
    title = target.original_name if model == "importjob" else str(target)
    assert title in page.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "status"),
    [
        ("customer", 200),
        ("campaign", 200),
        ("contractor", 200),
        ("apikey", 200),
        ("lead", 403),
        ("leadevent", 403),
    ],
)
def test_add_pages_exist_where_adding_by_hand_makes_sense(admin_client, model, status):
    assert admin_client.get(reverse(f"admin:leads_{model}_add")).status_code == status


@pytest.mark.django_db
def test_the_library_api_key_model_is_not_offered_next_to_the_real_one(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:leads_apikey_changelist") in index
    assert "/admin/rest_framework_api_key/" not in index


# --- Lists stay flat at any size --------------------------------------------------------------


@pytest.mark.django_db
def test_the_lead_list_runs_as_many_queries_for_many_leads_as_for_few(admin_client):
    populate(2)
    few = list_queries(admin_client, LEAD_LIST)
    populate(15)  # more leads, customers, campaigns, holders
    many = list_queries(admin_client, LEAD_LIST)

    assert len(many) == len(few)
    for sql in many:
        if "COUNT(" in sql.upper() and "leads_lead" in sql:
            assert "LIMIT" in sql.upper(), f"unbounded count over the lead table: {sql}"


@pytest.mark.django_db
def test_the_unfiltered_lead_list_takes_its_count_from_the_planner_estimate(admin_client, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "exact_count_limit", 3)
    populate(3)  # 9 leads
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_lead")

    queries = list_queries(admin_client, LEAD_LIST)
    page = admin_client.get(LEAD_LIST)

    assert any("pg_class" in sql for sql in queries)
    assert not any("COUNT(" in sql.upper() and "leads_lead" in sql for sql in queries)
    assert page.context["cl"].paginator.count_kind == "estimate"
    assert re.search(r"about 9\s+leads", page.content.decode())


@pytest.mark.django_db
def test_a_filtered_lead_list_counts_no_further_than_the_cap(admin_client, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "exact_count_limit", 3)
    populate(5)  # 5 held leads

    queries = list_queries(admin_client, f"{LEAD_LIST}?status__exact=held")
    page = admin_client.get(f"{LEAD_LIST}?status__exact=held")

    [count] = [sql for sql in queries if "COUNT(" in sql.upper() and "leads_lead" in sql]
    assert "LIMIT 4" in count
    assert re.search(r"more than 3\s+leads", page.content.decode())
    assert len(page.context["cl"].result_list) == 5


@pytest.mark.django_db
def test_a_small_table_is_counted_exactly_even_with_stale_statistics(admin_client):
    populate(1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE leads_lead")
    LeadFactory.create_batch(4)  # the statistics now say 3; there are 7

    page = admin_client.get(LEAD_LIST)

    assert page.context["cl"].result_count == 7
    assert len(page.context["cl"].result_list) == 7
    assert re.search(r"\b7\s+leads", page.content.decode())


@pytest.mark.django_db
def test_the_contractor_list_does_not_query_campaigns_once_per_contractor(admin_client):
    populate(2)
    few = list_queries(admin_client, CONTRACTOR_LIST)
    made = populate(12)
    many = list_queries(admin_client, CONTRACTOR_LIST)

    assert len(many) == len(few)
    contractor = made["contractor"]
    names = ", ".join(campaign.name for campaign in contractor.campaigns.order_by("name"))
    assert names in admin_client.get(CONTRACTOR_LIST).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["campaign", "leadevent", "apikey", "importjob", "customer"])
def test_other_lists_run_as_many_queries_for_many_rows_as_for_few(admin_client, model):
    url = reverse(f"admin:leads_{model}_changelist")
    populate(2)
    few = list_queries(admin_client, url)
    populate(12)
    assert len(list_queries(admin_client, url)) == len(few)


@pytest.mark.django_db
def test_the_contractor_form_offers_campaigns_side_by_side(admin_client):
    made = populate(1)
    page = admin_client.get(reverse("admin:leads_contractor_change", args=[made["contractor"].pk]))
    assert "selectfilter" in page.content.decode().lower()


# --- Search and filters -----------------------------------------------------------------------


@pytest.mark.django_db
def test_leads_are_found_by_exact_external_id_or_id(admin_client):
    made = populate(3)
    lead = made["leads"][4]

    by_external_id = admin_client.get(LEAD_LIST, {"q": lead.external_id}).context["cl"].result_list
    by_id = admin_client.get(LEAD_LIST, {"q": str(lead.pk)}).context["cl"].result_list
    partial = admin_client.get(LEAD_LIST, {"q": lead.external_id[:-1]}).context["cl"].result_list
    huge = admin_client.get(LEAD_LIST, {"q": "9" * 30})

    assert [found.pk for found in by_external_id] == [lead.pk]
    assert [found.pk for found in by_id] == [lead.pk]
    assert lead.pk not in [found.pk for found in partial]
    assert huge.status_code == 200


@pytest.mark.django_db
def test_leads_are_filtered_by_status_type_customer_and_that_customers_campaign(admin_client):
    made = populate(3)
    customer, campaign = made["customer"], made["campaign"]

    held = admin_client.get(LEAD_LIST, {"status__exact": "held"}).context["cl"].result_list
    assert {lead.status for lead in held} == {QueueStatus.HELD}
    assert len(held) == 3

    of_customer = admin_client.get(LEAD_LIST, {"customer__id__exact": customer.pk})
    assert {lead.customer_id for lead in of_customer.context["cl"].result_list} == {customer.pk}
    campaign_choices = next(
        spec
        for spec in of_customer.context["cl"].filter_specs
        if getattr(spec, "parameter_name", "") == "campaign"
    )
    assert {int(value) for value, _ in campaign_choices.lookup_choices} == set(
        customer.campaigns.values_list("pk", flat=True)
    )

    of_campaign = admin_client.get(LEAD_LIST, {"customer__id__exact": customer.pk, "campaign": campaign.pk})
    assert [lead.campaign_id for lead in of_campaign.context["cl"].result_list] == [campaign.pk]

    live = admin_client.get(LEAD_LIST, {"lead_type__exact": "stale"}).context["cl"].result_list
    assert list(live) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "term", "expected"),
    [
        ("customer", lambda made: made["customer"].name, lambda made: made["customer"].pk),
        ("campaign", lambda made: made["customer"].name, lambda made: made["campaign"].pk),
        ("contractor", lambda made: made["contractor"].name, lambda made: made["contractor"].pk),
        ("apikey", lambda made: made["keys"][-1].name, lambda made: made["keys"][-1].pk),
        ("leadevent", lambda made: str(made["events"][-1].lead_id), lambda made: made["events"][-1].pk),
        ("importjob", lambda made: "x.csv", lambda made: made["jobs"][-1].pk),
    ],
)
def test_search_finds_rows_in_every_list(admin_client, model, term, expected):
    made = populate(3)
    results = (
        admin_client.get(reverse(f"admin:leads_{model}_changelist"), {"q": term(made)})
        .context["cl"]
        .result_list
    )
    assert expected(made) in [row.pk for row in results]


@pytest.mark.django_db
def test_a_non_numeric_event_search_finds_nothing_instead_of_failing(admin_client):
    populate(1)
    response = admin_client.get(reverse("admin:leads_leadevent_changelist"), {"q": "abc"})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


@pytest.mark.django_db
def test_api_keys_are_filtered_by_scope_and_revocation(admin_client):
    populate(2)
    _, _ = ApiKey.objects.create_key(name="app", scope=ApiScope.CONTRACT_APP)
    url = reverse("admin:leads_apikey_changelist")

    contract = admin_client.get(url, {"scope__exact": "contract-app"}).context["cl"].result_list
    revoked = admin_client.get(url, {"revoked__exact": "1"}).context["cl"].result_list

    assert [key.name for key in contract] == ["app"]
    assert list(revoked) == []


# --- API keys ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_api_key_created_in_the_admin_is_shown_once_and_works(admin_client):
    response = admin_client.post(
        reverse("admin:leads_apikey_add"),
        {"name": "contract app", "scope": ApiScope.CONTRACT_APP},
        follow=True,
    )

    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "The API key for" in str(m)]
    key = re.search(r"The API key for contract app is: (\S+)\. ", message).group(1)
    stored = ApiKey.objects.get()
    assert stored.scope == ApiScope.CONTRACT_APP
    assert key not in (stored.pk, stored.hashed_key)
    assert ApiKey.objects.is_valid(key)
    assert (
        key
        not in admin_client.get(
            reverse("admin:leads_apikey_change", args=[quote(stored.pk)])
        ).content.decode()
    )


@pytest.mark.django_db
def test_an_ingest_key_needs_a_customer_and_other_keys_refuse_one(admin_client):
    customer = CustomerFactory()
    url = reverse("admin:leads_apikey_add")

    no_customer = admin_client.post(url, {"name": "push", "scope": ApiScope.INGEST})
    admin_with_customer = admin_client.post(
        url, {"name": "root", "scope": ApiScope.ADMIN, "customer": customer.pk}
    )

    assert "An ingest key belongs to exactly one customer" in no_customer.content.decode()
    assert "Only ingest keys belong to a customer" in admin_with_customer.content.decode()
    assert ApiKey.objects.count() == 0

    created = admin_client.post(url, {"name": "push", "scope": ApiScope.INGEST, "customer": customer.pk})
    assert created.status_code == 302
    assert ApiKey.objects.get().customer_id == customer.pk


@pytest.mark.django_db
def test_revoking_keys_from_the_list_locks_their_clients_out(admin_client):
    revoked_key, key = ApiKey.objects.create_key(name="admin key", scope=ApiScope.ADMIN)
    kept, _ = ApiKey.objects.create_key(name="other", scope=ApiScope.ADMIN)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert api.get("/api/v1/customers/").status_code == 200

    response = admin_client.post(
        reverse("admin:leads_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [revoked_key.pk]},
        follow=True,
    )

    assert "Revoked 1 API key(s)." in response.content.decode()
    revoked_key.refresh_from_db()
    kept.refresh_from_db()
    assert (revoked_key.revoked, kept.revoked) == (True, False)
    assert api.get("/api/v1/customers/").status_code == 401


@pytest.mark.django_db
def test_a_key_revoked_on_its_page_stays_revoked(admin_client):
    api_key, key = ApiKey.objects.create_key(name="app", scope=ApiScope.CONTRACT_APP)
    url = reverse("admin:leads_apikey_change", args=[quote(api_key.pk)])

    response = admin_client.post(url, {"name": "app", "revoked": "on"})

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked
    assert not ApiKey.objects.is_valid(key)
    page = admin_client.get(url).content.decode()
    assert 'name="revoked"' not in page  # read-only from now on


# --- A lead's page ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_lead_edited_in_the_admin_goes_through_the_update_service(admin_client):
    lead = LeadFactory(city="Pune", lead_type="live")
    url = reverse("admin:leads_lead_change", args=[lead.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {**{name: form.initial.get(name) or "" for name in form.fields}, "campaign": lead.campaign_id}
    data.update(
        {
            "city": "Goa",
            "status": "closed",  # engine field: not in the form, ignored
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
            "events-MIN_NUM_FORMS": "0",
            "events-MAX_NUM_FORMS": "0",
        }
    )

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    lead.refresh_from_db()
    assert (lead.city, lead.status) == ("Goa", QueueStatus.READY)
    event = LeadEvent.objects.get(lead=lead)
    assert (event.kind, event.detail) == (EventKind.UPDATED, {"city": "Goa"})


def _lead_form_data(client, lead: Lead) -> dict[str, object]:
    form = client.get(reverse("admin:leads_lead_change", args=[lead.pk])).context["adminform"].form
    data: dict[str, object] = {name: form.initial.get(name) or "" for name in form.fields}
    data["campaign"] = lead.campaign_id
    data.update({"events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"})
    data.update({"events-MIN_NUM_FORMS": "0", "events-MAX_NUM_FORMS": "0"})
    return data


@pytest.mark.django_db
def test_a_lead_cannot_be_moved_to_another_customers_campaign(admin_client):
    lead = LeadFactory()
    foreign = CampaignFactory()
    data = {**_lead_form_data(admin_client, lead), "campaign": foreign.pk}

    response = admin_client.post(reverse("admin:leads_lead_change", args=[lead.pk]), data)

    assert response.status_code == 200
    assert "not to this lead" in str(response.context["adminform"].form.errors["campaign"])
    lead.refresh_from_db()
    assert lead.campaign_id != foreign.pk


@pytest.mark.django_db
def test_a_last_activity_in_the_future_is_a_form_error_as_in_a_patch(admin_client):
    lead = LeadFactory(last_activity=None)
    ahead = timezone.now() + dt.timedelta(days=300)
    data = {
        **_lead_form_data(admin_client, lead),
        "last_activity_0": ahead.date().isoformat(),
        "last_activity_1": "10:00:00",
    }

    response = admin_client.post(reverse("admin:leads_lead_change", args=[lead.pk]), data)

    assert response.status_code == 200
    assert "is in the future" in str(response.context["adminform"].form.errors["last_activity"])
    lead.refresh_from_db()
    assert lead.last_activity is None


@pytest.mark.django_db
def test_a_closed_lead_cannot_be_rescheduled_from_the_admin(admin_client):
    lead = LeadFactory(
        status=QueueStatus.CLOSED, closed_at=timezone.now(), closed_reason=CloseReason.CONVERTED
    )
    data = {
        **_lead_form_data(admin_client, lead),
        "rescheduled_at_0": "2030-01-01",
        "rescheduled_at_1": "10:00:00",
    }

    response = admin_client.post(reverse("admin:leads_lead_change", args=[lead.pk]), data)

    assert response.status_code == 200
    assert "cannot be rescheduled" in str(response.context["adminform"].form.errors)
    lead.refresh_from_db()
    assert lead.rescheduled_at is None


@pytest.mark.django_db
def test_a_lead_closed_while_its_form_was_saved_keeps_nothing_and_says_so(admin_client, monkeypatch):
    lead = LeadFactory(city="Pune")
    url = reverse("admin:leads_lead_change", args=[lead.pk])
    data = {
        **_lead_form_data(admin_client, lead),
        "city": "Goa",
        "rescheduled_at_0": "2030-01-01",
        "rescheduled_at_1": "10:00:00",
    }

    def closed_meanwhile(**kwargs):
        # A withdrawal lands between the form's checks and the save.
        Lead.objects.filter(pk=lead.pk).update(
            status=QueueStatus.CLOSED, closed_at=timezone.now(), closed_reason=CloseReason.WITHDRAWN
        )
        return update_lead(**kwargs)

    monkeypatch.setattr(lead_admin, "update_lead", closed_meanwhile)
    response = admin_client.post(url, data, follow=True)

    assert response.redirect_chain == [(url, 302)]
    shown = [str(message) for message in response.context["messages"]]
    assert shown == ["The lead is closed; it cannot be rescheduled. Nothing was saved."]
    lead.refresh_from_db()
    assert (lead.city, lead.rescheduled_at) == ("Pune", None)
    assert not LogEntry.objects.filter(object_id=str(lead.pk)).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "day"), [("rescheduled_at", "9999-12-31"), ("last_activity", "1899-12-31")]
)
def test_a_lead_timestamp_outside_the_supported_years_is_a_form_error(admin_client, field, day):
    lead = LeadFactory(rescheduled_at=None)
    data = {**_lead_form_data(admin_client, lead), f"{field}_0": day, f"{field}_1": "23:00:00"}

    response = admin_client.post(reverse("admin:leads_lead_change", args=[lead.pk]), data)

    assert response.status_code == 200
    assert "years 1900 to 2099" in str(response.context["adminform"].form.errors[field])
    lead.refresh_from_db()
    assert lead.rescheduled_at is None


@pytest.mark.django_db
def test_a_lead_page_shows_its_latest_events_read_only(admin_client):
    lead = LeadFactory()
    contractor = ContractorFactory()
    start = timezone.now() - dt.timedelta(days=1)
    for minute in range(60):
        LeadEvent.objects.create(
            lead=lead, kind=EventKind.ATTEMPT, at=start + dt.timedelta(minutes=minute), contractor=contractor
        )
    url = reverse("admin:leads_lead_change", args=[lead.pk])

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(url)

    [inline] = page.context["inline_admin_formsets"]
    shown = [form.instance for form in inline.formset.forms]
    assert len(shown) == 50
    assert shown[0].at == start + dt.timedelta(minutes=59)  # newest first
    assert not inline.has_change_permission
    assert not inline.has_add_permission
    assert "history (latest 50 events)" in page.content.decode().lower()
    contractor_queries = [q["sql"] for q in captured if 'FROM "leads_contractor"' in q["sql"]]
    assert len(contractor_queries) <= 1  # joined, not fetched per event


@pytest.mark.django_db
def test_events_and_leads_cannot_be_deleted_or_edited_from_the_event_list(admin_client):
    made = populate(1)
    event = made["events"][0]
    page = admin_client.get(reverse("admin:leads_leadevent_change", args=[event.pk]))
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert admin_client.post(reverse("admin:leads_leadevent_delete", args=[event.pk])).status_code == 403


KEY_PERMS = ("leads.add_apikey", "leads.view_apikey", "leads.change_apikey")


@pytest.mark.django_db
def test_staff_who_may_create_keys_but_are_not_superusers_cannot_create_an_admin_key():
    # An admin key is the admin scope through the API, which only superusers have.
    client = staff_client(*KEY_PERMS)
    url = reverse("admin:leads_apikey_add")

    page = client.get(url).content.decode()
    response = client.post(url, {"name": "mine", "scope": ApiScope.ADMIN})

    assert f'value="{ApiScope.ADMIN}"' not in page
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_staff_who_may_create_keys_create_contract_app_and_ingest_keys():
    customer = CustomerFactory()
    client = staff_client(*KEY_PERMS)
    url = reverse("admin:leads_apikey_add")

    assert client.post(url, {"name": "app", "scope": ApiScope.CONTRACT_APP}).status_code == 302
    assert (
        client.post(url, {"name": "crm", "scope": ApiScope.INGEST, "customer": customer.pk}).status_code
        == 302
    )
    assert sorted(ApiKey.objects.values_list("scope", flat=True)) == [ApiScope.CONTRACT_APP, ApiScope.INGEST]


@pytest.mark.django_db
def test_staff_who_are_not_superusers_may_revoke_an_admin_key_but_not_extend_it(admin_client):
    expired = timezone.now() - dt.timedelta(days=1)
    api_key, key = ApiKey.objects.create_key(name="ops", scope=ApiScope.ADMIN, expiry_date=expired)
    url = reverse("admin:leads_apikey_change", args=[quote(api_key.pk)])
    client = staff_client(*KEY_PERMS)

    client.post(url, {"name": "mine now", "expiry_date_0": "2099-01-01", "expiry_date_1": "00:00:00"})

    api_key.refresh_from_db()
    assert (api_key.name, api_key.expiry_date) == ("ops", expired)
    assert not ApiKey.objects.is_valid(key)
    assert client.post(url, {"revoked": "on"}).status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked
    # A superuser may still extend an admin key that is not revoked.
    other, _ = ApiKey.objects.create_key(name="ops 2", scope=ApiScope.ADMIN, expiry_date=expired)
    admin_client.post(
        reverse("admin:leads_apikey_change", args=[quote(other.pk)]),
        {"name": "ops 2", "expiry_date_0": "2099-01-01", "expiry_date_1": "00:00:00"},
    )
    other.refresh_from_db()
    assert other.expiry_date.year == 2099


@pytest.mark.django_db
def test_a_superuser_still_creates_admin_keys(admin_client):
    url = reverse("admin:leads_apikey_add")

    assert f'value="{ApiScope.ADMIN}"' in admin_client.get(url).content.decode()
    assert admin_client.post(url, {"name": "ops", "scope": ApiScope.ADMIN}).status_code == 302
    assert ApiKey.objects.get().scope == ApiScope.ADMIN


def test_the_campaign_filter_of_the_lead_list_opens_with_its_customer(admin_client):
    lead = LeadFactory()
    url = reverse("admin:leads_lead_changelist")

    response = admin_client.get(f"{url}?customer__id__exact={lead.customer_id}&campaign={lead.campaign_id}")

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [lead.pk]
