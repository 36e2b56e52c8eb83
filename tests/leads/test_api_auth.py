"""API keys: 401 without a valid one, 403 outside its scope, an ingest key sees one customer."""

import datetime as dt
import io

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core.management import CommandError, ManagementUtility, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from leads.models import ApiKey, ApiScope, Campaign, Contractor, Customer, Lead
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, LeadFactory, lead_body

LEADS_URL = "/api/v1/leads/"


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


# --- 401 -------------------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/v1/leads/"),
    ("post", "/api/v1/leads/"),
    ("get", "/api/v1/leads/1/"),
    ("patch", "/api/v1/leads/1/"),
    ("get", "/api/v1/customers/"),
    ("post", "/api/v1/customers/"),
    ("get", "/api/v1/customers/1/"),
    ("get", "/api/v1/campaigns/"),
    ("post", "/api/v1/campaigns/"),
    ("get", "/api/v1/campaigns/1/"),
    ("get", "/api/v1/contractors/"),
    ("post", "/api/v1/contractors/"),
    ("get", "/api/v1/contractors/1/"),
    ("patch", "/api/v1/contractors/1/"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_every_endpoint_answers_401_without_a_key(db, method, url):
    response = getattr(client_with(None), method)(url, {}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(
    "authorization",
    [
        "Api-Key nonsense",
        "Api-Key abcdefgh.0123456789abcdef0123456789abcdef",
        "Api-Key ",
        "Bearer abc.def",
        "Api-Key",
    ],
)
def test_a_wrong_or_malformed_key_is_a_401(db, authorization):
    response = client_with(authorization).get(LEADS_URL)

    assert response.status_code == 401


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_a_401(db):
    _, key = ApiKey.objects.create_key(name="real", scope=ApiScope.ADMIN)
    prefix, _, secret = key.partition(".")

    response = client_with(f"Api-Key {prefix}.{secret[::-1]}").get(LEADS_URL)

    assert response.status_code == 401
    assert client_with(f"Api-Key {key}").get(LEADS_URL).status_code == 200


def test_a_revoked_key_is_a_401(db):
    api_key, key = ApiKey.objects.create_key(name="old", scope=ApiScope.ADMIN)
    api_key.revoked = True
    api_key.save()

    response = client_with(f"Api-Key {key}").get(LEADS_URL)

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked API key."


def test_an_expired_key_is_a_401(db):
    _, key = ApiKey.objects.create_key(
        name="old", scope=ApiScope.ADMIN, expiry_date=timezone.now() - dt.timedelta(seconds=1)
    )

    response = client_with(f"Api-Key {key}").get(LEADS_URL)

    assert response.status_code == 401
    assert response.json()["detail"] == "This API key has expired."


def test_a_key_that_expires_later_is_accepted(db):
    _, key = ApiKey.objects.create_key(
        name="new", scope=ApiScope.ADMIN, expiry_date=timezone.now() + dt.timedelta(days=1)
    )

    assert client_with(f"Api-Key {key}").get(LEADS_URL).status_code == 200


def test_the_key_keyword_is_case_insensitive(db):
    _, key = ApiKey.objects.create_key(name="k", scope=ApiScope.ADMIN)

    assert client_with(f"api-key {key}").get(LEADS_URL).status_code == 200


# --- 403 by scope ----------------------------------------------------------------------------


@pytest.fixture
def objects(customer, campaign):
    """One object of each kind behind every detail URL, owned by the ingest key's customer."""
    return {
        "lead": LeadFactory(campaign=campaign),
        "contractor": ContractorFactory(campaigns=[campaign]),
    }


def call(client, method: str, url: str, objects, customer, campaign):
    url = url.format(
        lead=objects["lead"].pk,
        customer=customer.pk,
        campaign=campaign.pk,
        contractor=objects["contractor"].pk,
    )
    bodies = {
        "/api/v1/leads/": lead_body(campaign, external_id="NEW"),
        f"/api/v1/leads/{objects['lead'].pk}/": {"lead_type": "stale"},
        "/api/v1/customers/": {"name": "New customer"},
        "/api/v1/campaigns/": {"customer_id": customer.pk, "name": "New campaign"},
        "/api/v1/contractors/": {"name": "New contractor"},
        f"/api/v1/contractors/{objects['contractor'].pk}/": {"active": False},
    }
    return getattr(client, method)(url, bodies.get(url, {}), format="json")


SCOPE_MATRIX = [
    # method, url, admin, contract-app, ingest
    ("get", "/api/v1/leads/", 200, 200, 200),
    ("post", "/api/v1/leads/", 201, 403, 201),
    ("get", "/api/v1/leads/{lead}/", 200, 200, 200),
    ("patch", "/api/v1/leads/{lead}/", 200, 200, 403),
    ("get", "/api/v1/customers/", 200, 403, 200),
    ("post", "/api/v1/customers/", 201, 403, 403),
    ("get", "/api/v1/customers/{customer}/", 200, 403, 200),
    ("get", "/api/v1/campaigns/", 200, 200, 200),
    ("post", "/api/v1/campaigns/", 201, 403, 201),
    ("get", "/api/v1/campaigns/{campaign}/", 200, 200, 200),
    ("get", "/api/v1/contractors/", 200, 200, 403),
    ("post", "/api/v1/contractors/", 201, 201, 403),
    ("get", "/api/v1/contractors/{contractor}/", 200, 200, 403),
    ("patch", "/api/v1/contractors/{contractor}/", 200, 200, 403),
]


@pytest.mark.parametrize(("method", "url", "admin", "contract_app", "ingest"), SCOPE_MATRIX)
@pytest.mark.parametrize("scope", [ApiScope.ADMIN, ApiScope.CONTRACT_APP, ApiScope.INGEST])
def test_each_scope_reaches_exactly_its_endpoints(
    make_client, customer, campaign, objects, scope, method, url, admin, contract_app, ingest
):
    expected = {ApiScope.ADMIN: admin, ApiScope.CONTRACT_APP: contract_app, ApiScope.INGEST: ingest}[scope]
    client = make_client(scope, customer)

    response = call(client, method, url, objects, customer, campaign)

    assert response.status_code == expected, response.json()
    if expected == 403:
        assert response.json() == {"detail": "This API key's scope does not allow this operation."}


def test_a_refused_write_stores_nothing(contract_api, campaign):
    contract_api.post(LEADS_URL, lead_body(campaign), format="json")
    contract_api.post("/api/v1/customers/", {"name": "Sneaky"}, format="json")

    assert not Lead.objects.exists()
    assert not Customer.objects.filter(name="Sneaky").exists()


# --- An ingest key sees one customer ---------------------------------------------------------


@pytest.fixture
def other_campaign(db) -> Campaign:
    return CampaignFactory(customer=CustomerFactory())


def test_an_ingest_key_gets_404_for_a_lead_of_another_customer(ingest_api, other_campaign):
    foreign = LeadFactory(campaign=other_campaign)

    assert ingest_api.get(f"/api/v1/leads/{foreign.pk}/").status_code == 404


def test_an_ingest_key_lists_only_its_customer_leads(ingest_api, campaign, other_campaign):
    own = LeadFactory(campaign=campaign)
    LeadFactory(campaign=other_campaign)

    everything = ingest_api.get(LEADS_URL).json()["results"]
    asked_for_other = ingest_api.get(f"{LEADS_URL}?customer_id={other_campaign.customer_id}").json()[
        "results"
    ]

    assert [lead["id"] for lead in everything] == [own.pk]
    assert asked_for_other == []


def test_an_ingest_key_posting_a_lead_of_another_customer_gets_a_field_error(
    ingest_api, customer, other_campaign
):
    response = ingest_api.post(LEADS_URL, lead_body(other_campaign), format="json")

    assert response.status_code == 400
    assert response.json()["customer_id"] == [f"This API key may only send leads of customer {customer.pk}."]
    assert not Lead.objects.exists()


def test_an_ingest_key_posting_into_another_customers_campaign_learns_nothing_about_its_owner(
    ingest_api, customer, other_campaign
):
    response = ingest_api.post(LEADS_URL, lead_body(other_campaign, customer_id=customer.pk), format="json")

    assert response.status_code == 400
    assert response.json() == {"campaign_id": [f"Unknown campaign {other_campaign.pk}."]}
    assert not Lead.objects.exists()


def test_an_ingest_batch_stores_its_customer_leads_and_rejects_the_others(
    ingest_api, campaign, other_campaign
):
    items = [lead_body(campaign, external_id="OWN"), lead_body(other_campaign, external_id="FOREIGN")]

    response = ingest_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["created", "rejected"]
    assert set(response.json()["results"][1]["errors"]) == {"customer_id", "campaign_id"}
    assert list(Lead.objects.values_list("external_id", flat=True)) == ["OWN"]


def test_an_ingest_key_cannot_overwrite_another_customers_lead_with_the_same_external_id(
    ingest_api, campaign, other_campaign
):
    foreign = LeadFactory(campaign=other_campaign, external_id="A-1", city="Berlin")

    ingest_api.post(LEADS_URL, lead_body(campaign, city="Pune"), format="json")

    foreign.refresh_from_db()
    assert foreign.city == "Berlin"


def test_an_ingest_key_sees_only_its_customer(ingest_api, customer, other_campaign):
    listed = ingest_api.get("/api/v1/customers/").json()["results"]

    assert [c["id"] for c in listed] == [customer.pk]
    assert ingest_api.get(f"/api/v1/customers/{other_campaign.customer_id}/").status_code == 404


def test_an_ingest_key_sees_only_its_customer_campaigns(ingest_api, campaign, other_campaign):
    listed = ingest_api.get("/api/v1/campaigns/").json()["results"]

    assert [c["id"] for c in listed] == [campaign.pk]
    assert ingest_api.get(f"/api/v1/campaigns/{other_campaign.pk}/").status_code == 404


def test_an_ingest_key_creating_a_campaign_for_another_customer_learns_nothing_about_it(
    ingest_api, customer, other_campaign
):
    # Another customer's id and one that does not exist get the same answer.
    answers = [
        ingest_api.post("/api/v1/campaigns/", {"customer_id": customer_id, "name": "Hijack"}, format="json")
        for customer_id in (other_campaign.customer_id, other_campaign.customer_id + 1000)
    ]

    for response in answers:
        assert response.status_code == 400
        assert response.json() == {
            "customer_id": [f"This API key may only manage campaigns of customer {customer.pk}."]
        }
    assert not Campaign.objects.filter(name="Hijack").exists()


def test_an_ingest_key_creates_campaigns_for_its_own_customer(ingest_api, customer):
    response = ingest_api.post(
        "/api/v1/campaigns/", {"customer_id": customer.pk, "name": "Own"}, format="json"
    )

    assert response.status_code == 201
    assert Campaign.objects.get(pk=response.json()["id"]).customer_id == customer.pk


def test_an_ingest_key_cannot_touch_contractors(ingest_api, db):
    contractor = ContractorFactory()

    assert ingest_api.get("/api/v1/contractors/").status_code == 403
    assert ingest_api.post("/api/v1/contractors/", {"name": "X"}, format="json").status_code == 403
    assert (
        ingest_api.patch(f"/api/v1/contractors/{contractor.pk}/", {"name": "X"}, format="json").status_code
        == 403
    )
    assert list(Contractor.objects.values_list("name", flat=True)) == [contractor.name]


def test_the_contract_app_and_admin_see_every_customers_leads(
    contract_api, admin_api, campaign, other_campaign
):
    leads = {LeadFactory(campaign=campaign).pk, LeadFactory(campaign=other_campaign).pk}

    for client in (contract_api, admin_api):
        assert {lead["id"] for lead in client.get(LEADS_URL).json()["results"]} == leads


def test_an_admin_key_posts_leads_of_any_customer(admin_api, campaign, other_campaign):
    items = [lead_body(campaign), lead_body(other_campaign)]

    response = admin_api.post(LEADS_URL, {"leads": items}, format="json")

    assert response.json()["created"] == 2


def staff_client(django_user_model, *permissions: str, superuser: bool = False) -> APIClient:
    """A client signed in to the admin as a staff user with these ``leads`` permissions."""
    staff = django_user_model.objects.create_user(
        "staff", password="pw", is_staff=True, is_superuser=superuser
    )
    staff.user_permissions.set(
        Permission.objects.filter(content_type__app_label="leads", codename__in=permissions)
    )
    client = APIClient()
    client.force_login(staff)
    return client


def test_a_signed_in_superuser_has_the_admin_scope(db, django_user_model, campaign):
    client = staff_client(django_user_model, superuser=True)

    assert client.get(LEADS_URL).status_code == 200
    response = client.post(LEADS_URL, {"leads": [lead_body(campaign, external_id="s-1")]}, format="json")
    assert response.status_code == 200, response.content
    assert Lead.objects.filter(external_id="s-1").exists()


@pytest.mark.parametrize("permission", ["view_lead", "change_lead"])
def test_staff_who_may_view_leads_in_the_admin_read_through_the_api(
    db, django_user_model, campaign, permission
):
    client = staff_client(django_user_model, permission)

    assert client.get(LEADS_URL).status_code == 200
    assert client.get("/api/v1/stats/sla/").status_code == 200


def test_staff_without_permission_to_view_leads_read_nothing_but_the_docs(db, django_user_model, campaign):
    client = staff_client(django_user_model, "view_customer")

    assert client.get(LEADS_URL).status_code == 403
    assert client.get("/api/v1/stats/sla/").status_code == 403
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.parametrize("permission", ["view_lead", "change_lead", "add_lead"])
def test_staff_who_are_not_superusers_never_write_through_the_api(
    db, django_user_model, campaign, permission
):
    # The admin is where their permissions are enforced, field by field; the API has none of
    # its own, so a session writing would let staff shown leads read-only push or claim them.
    client = staff_client(django_user_model, "view_lead", permission)
    lead = LeadFactory(campaign=campaign)
    contractor = ContractorFactory(campaigns=[campaign])

    pushed = client.post(LEADS_URL, {"leads": [lead_body(campaign, external_id="s-1")]}, format="json")
    claimed = client.post(
        "/api/v1/next-lead/", {"campaign_ids": [campaign.pk], "contractor_id": contractor.pk}, format="json"
    )
    withdrawn = client.post(f"/api/v1/leads/{lead.pk}/withdraw/")
    patched = client.patch(f"{LEADS_URL}{lead.pk}/", {"city": "Elsewhere"}, format="json")

    assert [pushed.status_code, claimed.status_code, withdrawn.status_code, patched.status_code] == [403] * 4
    assert not Lead.objects.filter(external_id="s-1").exists()
    city = lead.city
    lead.refresh_from_db()
    assert (lead.status, lead.holder_id, lead.city) == ("ready", None, city)


def test_an_inactive_staff_user_reads_nothing(db, django_user_model, campaign):
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True, is_superuser=True)
    client = APIClient()
    client.force_login(staff)
    staff.is_active = False
    staff.save()

    assert client.get(LEADS_URL).status_code in (401, 403)


def test_a_signed_in_user_who_is_not_staff_is_refused(db, django_user_model):
    user = django_user_model.objects.create_user("user", password="pw")
    client = APIClient()
    client.force_login(user)

    assert client.get(LEADS_URL).status_code == 403


# --- create_api_key --------------------------------------------------------------------------


def run_create_api_key(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_api_key_prints_a_working_key_alone_on_its_last_line(db):
    out, _ = run_create_api_key("contract app", "--scope", "contract-app")

    key = out.strip().splitlines()[-1]
    assert key == key.strip()
    assert " " not in key
    assert client_with(f"Api-Key {key}").get(LEADS_URL).status_code == 200
    stored = ApiKey.objects.get()
    assert (stored.name, stored.scope, stored.customer_id) == ("contract app", "contract-app", None)


def test_create_api_key_stores_only_a_hash_of_the_key(db):
    out, _ = run_create_api_key("crm", "--scope", "admin")
    key = out.strip().splitlines()[-1]
    _, _, secret = key.partition(".")

    stored = ApiKey.objects.get()
    for value in (stored.pk, stored.hashed_key, stored.prefix, stored.name):
        assert key not in value
        assert secret not in value
    assert stored.hashed_key.startswith("sha512$$")


def test_create_api_key_binds_an_ingest_key_to_its_customer(db, customer, campaign, other_campaign):
    out, _ = run_create_api_key("crm", "--scope", "ingest", "--customer-id", str(customer.pk))
    key = out.strip().splitlines()[-1]

    assert ApiKey.objects.get().customer_id == customer.pk
    client = client_with(f"Api-Key {key}")
    assert client.post(LEADS_URL, lead_body(campaign), format="json").status_code == 201
    assert client.post(LEADS_URL, lead_body(other_campaign), format="json").status_code == 400


def test_create_api_key_refuses_an_ingest_key_without_a_customer(db):
    with pytest.raises(CommandError, match="--customer-id"):
        run_create_api_key("crm", "--scope", "ingest")

    assert not ApiKey.objects.exists()


def test_create_api_key_refuses_an_unknown_customer_with_a_readable_message(db):
    with pytest.raises(CommandError, match=r"There is no customer 999999\."):
        run_create_api_key("crm", "--scope", "ingest", "--customer-id", "999999")

    assert not ApiKey.objects.exists()


def test_create_api_key_refuses_a_customer_for_a_scope_that_covers_every_customer(db, customer):
    with pytest.raises(CommandError, match="only goes with --scope ingest"):
        run_create_api_key("crm", "--scope", "admin", "--customer-id", str(customer.pk))


@pytest.mark.parametrize(
    "args", [("crm", "--scope", "root"), ("crm",), ("", "--scope", "admin"), ("x" * 51, "--scope", "admin")]
)
def test_create_api_key_refuses_bad_arguments(db, args):
    with pytest.raises(CommandError):
        run_create_api_key(*args)

    assert not ApiKey.objects.exists()


def test_create_api_key_run_as_a_program_exits_non_zero_with_one_readable_line(db, capsys):
    utility = ManagementUtility(
        ["manage.py", "create_api_key", "crm", "--scope", "ingest", "--customer-id", "999999"]
    )
    with pytest.raises(SystemExit) as exit_info:
        utility.execute()

    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.strip() == "CommandError: There is no customer 999999."
    assert "Traceback" not in err


def test_a_verified_key_is_remembered_so_the_next_request_runs_no_key_query(db):
    _, key = ApiKey.objects.create_key(name="app", scope=ApiScope.ADMIN)
    client = client_with(f"Api-Key {key}")
    with CaptureQueriesContext(connection) as first:
        assert client.get(LEADS_URL).status_code == 200
    with CaptureQueriesContext(connection) as second:
        assert client.get(LEADS_URL).status_code == 200

    assert any("leads_apikey" in query["sql"] for query in first.captured_queries)
    assert not any("leads_apikey" in query["sql"] for query in second.captured_queries)


def test_a_revoked_key_is_refused_once_its_remembered_verification_is_older_than_the_cache_time(db, settings):
    settings.LEADRANK_API_KEY_CACHE_SECONDS = 30
    api_key, key = ApiKey.objects.create_key(name="app", scope=ApiScope.ADMIN)
    client = client_with(f"Api-Key {key}")
    assert client.get(LEADS_URL).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True)

    assert client.get(LEADS_URL).status_code == 200  # still trusted by this process
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=31), tick=False):
        response = client.get(LEADS_URL)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or revoked API key."


def test_with_the_cache_off_a_revoked_key_is_refused_at_once(db, settings):
    settings.LEADRANK_API_KEY_CACHE_SECONDS = 0
    api_key, key = ApiKey.objects.create_key(name="app", scope=ApiScope.ADMIN)
    client = client_with(f"Api-Key {key}")
    assert client.get(LEADS_URL).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True)

    assert client.get(LEADS_URL).status_code == 401


def test_a_remembered_key_is_refused_from_the_moment_it_expires(db):
    expiry = timezone.now() + dt.timedelta(minutes=5)
    _, key = ApiKey.objects.create_key(name="app", scope=ApiScope.ADMIN, expiry_date=expiry)
    client = client_with(f"Api-Key {key}")
    assert client.get(LEADS_URL).status_code == 200

    with time_machine.travel(expiry + dt.timedelta(seconds=1), tick=False):
        response = client.get(LEADS_URL)
    assert response.status_code == 401
    assert response.json()["detail"] == "This API key has expired."
