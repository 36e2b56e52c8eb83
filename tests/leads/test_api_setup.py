"""/api/v1/customers/, /campaigns/, /contractors/: what integrators set up before pushing leads."""

import datetime as dt

import pytest
from django.db.models import F
from django.urls import URLResolver, get_resolver, reverse
from rest_framework.validators import UniqueValidator

from leads.api import ContractorDetailView
from leads.models import Campaign, Contractor, Customer
from leads.pagination import ListPagination
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory

CUSTOMERS_URL = "/api/v1/customers/"
CAMPAIGNS_URL = "/api/v1/campaigns/"
CONTRACTORS_URL = "/api/v1/contractors/"


# --- Customers -------------------------------------------------------------------------------


def test_creating_a_customer_answers_201_with_its_id(admin_api, db):
    response = admin_api.post(CUSTOMERS_URL, {"name": "Acme", "pricing_plan": "enterprise"}, format="json")

    assert response.status_code == 201, response.json()
    customer = Customer.objects.get(pk=response.json()["id"])
    assert (customer.name, customer.pricing_plan) == ("Acme", "enterprise")
    assert response.json()["name"] == "Acme"


def test_a_customer_created_without_a_plan_is_on_starter(admin_api, db):
    response = admin_api.post(CUSTOMERS_URL, {"name": "Acme"}, format="json")

    assert response.status_code == 201
    assert Customer.objects.get(pk=response.json()["id"]).pricing_plan == "starter"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Acme", "pricing_plan": "gold"}, "pricing_plan"),
        ({"pricing_plan": "pro"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
    ],
)
def test_creating_a_customer_with_a_bad_field_is_a_400_naming_it(admin_api, db, body, field):
    response = admin_api.post(CUSTOMERS_URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Customer.objects.exists()


def test_creating_a_second_customer_with_the_same_name_is_a_400(admin_api, db):
    CustomerFactory(name="Acme")

    response = admin_api.post(CUSTOMERS_URL, {"name": "Acme"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert Customer.objects.count() == 1


def test_listing_customers_returns_each_with_its_plan(admin_api, db):
    first = CustomerFactory(pricing_plan="pro")
    second = CustomerFactory(pricing_plan="enterprise")

    response = admin_api.get(CUSTOMERS_URL)

    assert response.status_code == 200
    assert [(c["id"], c["pricing_plan"]) for c in response.json()["results"]] == [
        (first.pk, "pro"),
        (second.pk, "enterprise"),
    ]


def test_getting_a_customer_returns_it(admin_api, customer):
    response = admin_api.get(f"{CUSTOMERS_URL}{customer.pk}/")

    assert response.status_code == 200
    assert response.json()["id"] == customer.pk
    assert response.json()["name"] == customer.name


def test_getting_an_unknown_customer_is_a_404(admin_api, db):
    assert admin_api.get(f"{CUSTOMERS_URL}999999/").status_code == 404


# --- Campaigns -------------------------------------------------------------------------------


def test_creating_a_campaign_answers_201_with_its_id_and_calling_defaults(admin_api, customer):
    response = admin_api.post(CAMPAIGNS_URL, {"customer_id": customer.pk, "name": "Spring"}, format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    campaign = Campaign.objects.get(pk=data["id"])
    assert (campaign.customer_id, campaign.name, campaign.active) == (customer.pk, "Spring", True)
    assert campaign.time_zone == "UTC"
    assert (campaign.calling_hours_start, campaign.calling_hours_end) == (dt.time(8), dt.time(20))
    assert campaign.calling_days == [0, 1, 2, 3, 4]
    assert data["customer_id"] == customer.pk
    assert (data["time_zone"], data["calling_hours_start"], data["calling_hours_end"]) == (
        "UTC",
        "08:00:00",
        "20:00:00",
    )
    assert data["calling_days"] == [0, 1, 2, 3, 4]


def test_creating_a_campaign_stores_its_own_calling_hours_and_zone(admin_api, customer):
    body = {
        "customer_id": customer.pk,
        "name": "Weekend",
        "active": False,
        "time_zone": "Asia/Kolkata",
        "calling_hours_start": "09:30",
        "calling_hours_end": "18:00",
        "calling_days": [6, 5, 5],
    }

    response = admin_api.post(CAMPAIGNS_URL, body, format="json")

    assert response.status_code == 201, response.json()
    campaign = Campaign.objects.get(pk=response.json()["id"])
    assert (campaign.time_zone, campaign.active) == ("Asia/Kolkata", False)
    assert (campaign.calling_hours_start, campaign.calling_hours_end) == (dt.time(9, 30), dt.time(18))
    assert campaign.calling_days == [5, 6]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"time_zone": "x" * 65}, "time_zone"),
        ({"calling_hours_start": "18:00", "calling_hours_end": "09:00"}, "calling_hours_end"),
        ({"calling_hours_start": "09:00", "calling_hours_end": "09:00"}, "calling_hours_end"),
        ({"calling_hours_end": "07:00"}, "calling_hours_end"),
        ({"calling_hours_start": "25:00"}, "calling_hours_start"),
        # Local times of the campaign's zone: an offset would be dropped unsaid.
        ({"calling_hours_start": "08:00+05:00"}, "calling_hours_start"),
        ({"calling_hours_end": "20:00Z"}, "calling_hours_end"),
        ({"calling_days": [1, 7]}, "calling_days"),
        ({"calling_days": [-1]}, "calling_days"),
        ({"calling_days": []}, "calling_days"),
        ({"calling_days": "mon"}, "calling_days"),
        ({"name": ""}, "name"),
        ({"customer_id": 999_999}, "customer_id"),
        ({"customer_id": None}, "customer_id"),
        ({"customer_id": 2**63}, "customer_id"),
        ({"customer_id": -1}, "customer_id"),
        ({"customer_id": True}, "customer_id"),
    ],
)
def test_creating_a_campaign_with_a_bad_field_is_a_400_naming_it(admin_api, customer, fields, field):
    body = {"customer_id": customer.pk, "name": "Spring", **fields}

    response = admin_api.post(CAMPAIGNS_URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Campaign.objects.exists()


# Names the system's zone folder holds that are no place's clock.
ZONES_THAT_ARE_NO_PLACE = [
    (
        "localtime",
        "'localtime' is the clock setting of whichever machine runs leadrank, not a place's time "
        "zone: name one (e.g. Europe/Berlin).",
    ),
    (
        "Factory",
        "'Factory' is tzdata's placeholder for a machine with no zone set, not a place's time "
        "zone: name one (e.g. Europe/Berlin).",
    ),
]


@pytest.mark.parametrize(("zone", "message"), ZONES_THAT_ARE_NO_PLACE)
def test_a_campaign_zone_that_is_no_place_is_a_400_naming_time_zone(admin_api, customer, zone, message):
    body = {"customer_id": customer.pk, "name": "Spring", "time_zone": zone}

    response = admin_api.post(CAMPAIGNS_URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"time_zone": [message]}
    assert not Campaign.objects.exists()


@pytest.mark.parametrize(("zone", "message"), ZONES_THAT_ARE_NO_PLACE)
def test_a_campaign_zone_that_is_no_place_is_a_form_error_in_the_admin(admin_client, customer, zone, message):
    form = {
        "customer": customer.pk,
        "name": "Spring",
        "active": "on",
        "time_zone": zone,
        "calling_hours_start": "08:00",
        "calling_hours_end": "20:00",
        "calling_days": "0,1,2,3,4",
        "created_at_0": "2026-03-02",
        "created_at_1": "12:00:00",
    }

    response = admin_client.post(reverse("admin:leads_campaign_add"), form)

    assert response.status_code == 200  # the form again, not a redirect
    assert response.context["adminform"].form.errors == {"time_zone": [message]}
    assert not Campaign.objects.exists()


def test_a_campaign_name_is_unique_per_customer(admin_api, customer):
    CampaignFactory(customer=customer, name="Spring")

    response = admin_api.post(CAMPAIGNS_URL, {"customer_id": customer.pk, "name": "Spring"}, format="json")

    assert response.status_code == 400
    assert "non_field_errors" in response.json()
    assert Campaign.objects.filter(name="Spring").count() == 1


def test_two_customers_may_have_campaigns_of_the_same_name(admin_api, customer):
    CampaignFactory(name="Spring")

    response = admin_api.post(CAMPAIGNS_URL, {"customer_id": customer.pk, "name": "Spring"}, format="json")

    assert response.status_code == 201
    assert Campaign.objects.filter(name="Spring").count() == 2


def test_listing_campaigns_returns_each_with_its_customer(admin_api, db):
    first = CampaignFactory()
    second = CampaignFactory()

    response = admin_api.get(CAMPAIGNS_URL)

    assert response.status_code == 200
    assert [(c["id"], c["customer_id"]) for c in response.json()["results"]] == [
        (first.pk, first.customer_id),
        (second.pk, second.customer_id),
    ]


def test_getting_a_campaign_returns_it(admin_api, campaign):
    response = admin_api.get(f"{CAMPAIGNS_URL}{campaign.pk}/")

    assert response.status_code == 200
    assert (response.json()["id"], response.json()["name"]) == (campaign.pk, campaign.name)


def test_getting_an_unknown_campaign_is_a_404(admin_api, db):
    assert admin_api.get(f"{CAMPAIGNS_URL}999999/").status_code == 404


# --- Contractors -----------------------------------------------------------------------------


def test_creating_a_contractor_with_qualifications_answers_201_with_its_id(admin_api, db):
    campaigns = [CampaignFactory(), CampaignFactory()]

    response = admin_api.post(
        CONTRACTORS_URL, {"name": "Asha", "campaign_ids": [c.pk for c in campaigns]}, format="json"
    )

    assert response.status_code == 201, response.json()
    contractor = Contractor.objects.get(pk=response.json()["id"])
    assert contractor.name == "Asha"
    assert contractor.active is True
    assert set(contractor.campaigns.values_list("pk", flat=True)) == {c.pk for c in campaigns}
    assert sorted(response.json()["campaign_ids"]) == sorted(c.pk for c in campaigns)


def test_a_contractor_created_without_campaign_ids_has_no_qualifications(admin_api, db):
    response = admin_api.post(CONTRACTORS_URL, {"name": "Asha"}, format="json")

    assert response.status_code == 201
    assert response.json()["campaign_ids"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Asha", "campaign_ids": [999_999]}, "campaign_ids"),
        ({"name": "Asha", "campaign_ids": ["abc"]}, "campaign_ids"),
        ({"name": "Asha", "campaign_ids": 3}, "campaign_ids"),
        ({"name": "Asha", "campaign_ids": [2**63]}, "campaign_ids"),
        ({"name": "Asha", "campaign_ids": ["²"]}, "campaign_ids"),
        ({"name": "Asha", "campaign_ids": [0]}, "campaign_ids"),
        ({"name": ""}, "name"),
        ({}, "name"),
    ],
)
def test_creating_a_contractor_with_a_bad_field_is_a_400_naming_it(admin_api, db, body, field):
    response = admin_api.post(CONTRACTORS_URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Contractor.objects.exists()


def test_a_fractional_id_is_refused_not_rounded_to_another_object(admin_api, customer):
    # The ORM would look 1.7 up as 1: a contractor qualified for, or a campaign created
    # under, an object nobody named.
    campaign = CampaignFactory(customer=customer)

    contractor = admin_api.post(
        CONTRACTORS_URL, {"name": "Asha", "campaign_ids": [campaign.pk + 0.7]}, format="json"
    )
    created = admin_api.post(CAMPAIGNS_URL, {"customer_id": customer.pk + 0.5, "name": "Half"}, format="json")

    assert contractor.status_code == 400
    assert contractor.json() == {"campaign_ids": ["Incorrect type. Expected pk value, received float."]}
    assert created.status_code == 400
    assert created.json() == {"customer_id": ["Incorrect type. Expected pk value, received float."]}
    assert not Contractor.objects.exists()
    assert not Campaign.objects.filter(name="Half").exists()


def test_an_id_given_as_its_digits_is_accepted(admin_api, customer):
    response = admin_api.post(CAMPAIGNS_URL, {"customer_id": str(customer.pk), "name": "Text"}, format="json")

    assert response.status_code == 201, response.json()
    assert Campaign.objects.get(name="Text").customer == customer


@pytest.mark.parametrize("url", [CUSTOMERS_URL, CAMPAIGNS_URL, CONTRACTORS_URL])
def test_a_list_page_holds_at_most_1000_whatever_limit_is_asked(
    admin_api, db, url, django_assert_max_num_queries
):
    CampaignFactory.create_batch(3)
    ContractorFactory.create_batch(3)

    for limit in ("2", "99999999999999999999", str(2**63 - 1)):
        response = admin_api.get(url, {"limit": limit})

        assert response.status_code == 200, (limit, response.json())
        assert len(response.json()["results"]) == min(int(limit), 3)
    assert ListPagination.max_limit == 1000


def test_listing_contractors_includes_their_qualifications(admin_api, db):
    campaign = CampaignFactory()
    qualified = ContractorFactory(campaigns=[campaign])
    unqualified = ContractorFactory()

    response = admin_api.get(CONTRACTORS_URL)

    assert response.status_code == 200
    assert {c["id"]: c["campaign_ids"] for c in response.json()["results"]} == {
        qualified.pk: [campaign.pk],
        unqualified.pk: [],
    }


def test_listing_contractors_takes_a_fixed_number_of_queries(admin_api, db, django_assert_max_num_queries):
    campaigns = [CampaignFactory() for _ in range(3)]
    for _ in range(10):
        ContractorFactory(campaigns=campaigns)

    # Key lookup, page count, page, one prefetch of every qualification.
    with django_assert_max_num_queries(4):
        response = admin_api.get(CONTRACTORS_URL)

    assert len(response.json()["results"]) == 10


def test_getting_a_contractor_returns_its_qualifications(admin_api, db):
    campaign = CampaignFactory()
    contractor = ContractorFactory(campaigns=[campaign])

    response = admin_api.get(f"{CONTRACTORS_URL}{contractor.pk}/")

    assert response.status_code == 200
    assert (response.json()["id"], response.json()["campaign_ids"]) == (contractor.pk, [campaign.pk])


def test_getting_an_unknown_contractor_is_a_404(admin_api, db):
    assert admin_api.get(f"{CONTRACTORS_URL}999999/").status_code == 404


def test_patching_a_contractor_replaces_its_qualifications(contract_api, db):
    old, new = CampaignFactory(), CampaignFactory()
    contractor = ContractorFactory(campaigns=[old])

    response = contract_api.patch(
        f"{CONTRACTORS_URL}{contractor.pk}/", {"campaign_ids": [new.pk]}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["campaign_ids"] == [new.pk]
    assert list(contractor.campaigns.values_list("pk", flat=True)) == [new.pk]


def test_patching_a_contractor_name_and_active_flag_keeps_its_qualifications(contract_api, db):
    campaign = CampaignFactory()
    contractor = ContractorFactory(name="Asha", campaigns=[campaign])

    response = contract_api.patch(
        f"{CONTRACTORS_URL}{contractor.pk}/", {"name": "Asha K.", "active": False}, format="json"
    )

    assert response.status_code == 200, response.json()
    contractor.refresh_from_db()
    assert (contractor.name, contractor.active) == ("Asha K.", False)
    assert list(contractor.campaigns.values_list("pk", flat=True)) == [campaign.pk]


def test_patching_a_contractor_keeps_the_claims_counted_meanwhile(contract_api, db, monkeypatch):
    contractor = ContractorFactory(name="Asha", claims_made=7)
    read = ContractorDetailView.get_object

    def get_object_then_claim(view):
        found = read(view)
        Contractor.objects.filter(pk=found.pk).update(claims_made=F("claims_made") + 2)  # as a claim does
        return found

    monkeypatch.setattr(ContractorDetailView, "get_object", get_object_then_claim)

    response = contract_api.patch(f"{CONTRACTORS_URL}{contractor.pk}/", {"name": "Asha K."}, format="json")

    assert response.status_code == 200, response.json()
    contractor.refresh_from_db()
    assert (contractor.name, contractor.claims_made) == ("Asha K.", 9)


def test_patching_a_contractor_with_an_unknown_campaign_is_a_400_and_changes_nothing(contract_api, db):
    campaign = CampaignFactory()
    contractor = ContractorFactory(campaigns=[campaign])

    response = contract_api.patch(
        f"{CONTRACTORS_URL}{contractor.pk}/", {"campaign_ids": [campaign.pk, 999_999]}, format="json"
    )

    assert response.status_code == 400
    assert "campaign_ids" in response.json()
    assert list(contractor.campaigns.values_list("pk", flat=True)) == [campaign.pk]


def test_a_contractor_cannot_be_replaced_or_deleted_through_the_api(admin_api, db):
    contractor = ContractorFactory()
    url = f"{CONTRACTORS_URL}{contractor.pk}/"

    assert admin_api.put(url, {"name": "X"}, format="json").status_code == 405
    assert admin_api.delete(url).status_code == 405
    assert Contractor.objects.filter(pk=contractor.pk).exists()


def test_a_contractor_answers_head_as_it_answers_get(contract_api, db):
    url = f"{CONTRACTORS_URL}{ContractorFactory().pk}/"

    response = contract_api.head(url)

    assert response.status_code == 200
    assert response.content == b""
    assert response["Content-Type"] == contract_api.get(url)["Content-Type"]


def test_every_class_based_view_that_answers_get_answers_head():
    # Uptime probes and link checkers send HEAD; a view that lists its methods must name it.
    def callbacks(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from callbacks(pattern.url_patterns)
            else:
                yield pattern.callback

    missing = []
    for callback in callbacks(get_resolver().url_patterns):
        view_class = getattr(callback, "view_class", None)
        if view_class is None:
            continue
        methods = callback.view_initkwargs.get("http_method_names", view_class.http_method_names)
        if "get" in methods and "head" not in methods:
            missing.append(view_class.__qualname__)
    assert missing == []


@pytest.mark.parametrize("url", [CUSTOMERS_URL, CAMPAIGNS_URL, CONTRACTORS_URL])
def test_a_malformed_json_body_on_a_setup_endpoint_is_a_400(admin_api, db, url):
    response = admin_api.post(url, '{"name": ', content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_name_written_by_a_concurrent_request_is_a_409_not_a_500(admin_api, monkeypatch):
    # The race: both requests pass the uniqueness check before either inserts. Skipping the
    # check stands for the other request having inserted "Acme" right after it.
    CustomerFactory(name="Acme")
    monkeypatch.setattr(UniqueValidator, "__call__", lambda self, value, serializer_field: None)

    response = admin_api.post(CUSTOMERS_URL, {"name": "Acme"}, format="json")

    assert response.status_code == 409
    assert "retry" in response.json()["detail"]
    assert Customer.objects.filter(name="Acme").count() == 1
