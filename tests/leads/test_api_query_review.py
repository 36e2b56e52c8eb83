"""Review of the query strings of GET /api/v1/leads/ and GET /api/v1/stats/sla/: a parameter
sent empty, given twice or written in another script's digits is a 400 naming it, never a
filter dropped (every customer's figures for the one asked) or a value the client did not mean."""

import pytest
from rest_framework.test import APIClient

from leads.api import QueryStringSerializer
from tests.factories import CampaignFactory, CustomerFactory, LeadFactory

LEADS_URL = "/api/v1/leads/"
SLA_URL = "/api/v1/stats/sla/"

ARABIC_INDIC_THREE = "\u0663"
FULLWIDTH_DAY = "\uff12026-11-25"  # "2026-11-25" with a fullwidth 2


@pytest.fixture
def two_customers_leads(db: None) -> None:
    for _ in range(2):
        LeadFactory(campaign=CampaignFactory(customer=CustomerFactory()))


@pytest.mark.parametrize(
    ("url", "parameter", "message"),
    [
        (LEADS_URL, "customer_id", "A valid integer is required."),
        (LEADS_URL, "campaign_id", "A valid integer is required."),
        (LEADS_URL, "external_id", "This field may not be blank."),
        (LEADS_URL, "status", '"" is not a valid choice.'),
        (LEADS_URL, "lead_type", '"" is not a valid choice.'),
        (SLA_URL, "customer_id", "A valid integer is required."),
        (SLA_URL, "campaign_id", "A valid integer is required."),
        (SLA_URL, "from", "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."),
        (SLA_URL, "to", "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."),
        (SLA_URL, "at_risk_minutes", "A valid number is required."),
        (SLA_URL, "active_minutes", "A valid integer is required."),
    ],
)
def test_a_parameter_sent_empty_is_a_400_naming_it_not_every_customers_leads_or_figures(
    admin_api: APIClient, two_customers_leads: None, url: str, parameter: str, message: str
) -> None:
    response = admin_api.get(f"{url}?{parameter}=")

    assert response.status_code == 400
    assert response.json() == {parameter: [message]}


def test_a_lead_filter_sent_empty_reads_as_a_blank_one_does(
    admin_api: APIClient, two_customers_leads: None
) -> None:
    empty = admin_api.get(f"{LEADS_URL}?external_id=")
    blank = admin_api.get(f"{LEADS_URL}?external_id=%20%20")

    assert (empty.status_code, empty.json()) == (blank.status_code, blank.json())


def test_a_lead_filter_sent_empty_then_with_a_value_is_a_parameter_given_twice(
    admin_api: APIClient, two_customers_leads: None
) -> None:
    customer = CustomerFactory()

    response = admin_api.get(f"{LEADS_URL}?customer_id=&customer_id={customer.pk}")

    assert response.status_code == 400
    assert response.json() == {"customer_id": ["Give this parameter once."]}


def test_the_pages_own_parameters_sent_empty_still_mean_the_first_page_of_the_default_size(
    admin_api: APIClient, two_customers_leads: None
) -> None:
    # Not filters: empty, they narrow nothing and widen nothing.
    response = admin_api.get(f"{LEADS_URL}?limit=&cursor=")

    assert response.status_code == 200, response.json()
    assert len(response.json()["results"]) == 2


def test_an_sla_parameter_given_twice_is_a_400_rather_than_its_last_value(
    admin_api: APIClient, db: None
) -> None:
    first, second = CustomerFactory(), CustomerFactory()

    response = admin_api.get(f"{SLA_URL}?customer_id={first.pk}&customer_id={second.pk}")

    assert response.status_code == 400
    assert response.json() == {"customer_id": ["Give this parameter once."]}


@pytest.mark.parametrize(
    ("url", "parameter", "value"),
    [
        (LEADS_URL, "customer_id", ARABIC_INDIC_THREE),
        (LEADS_URL, "campaign_id", ARABIC_INDIC_THREE),
        (SLA_URL, "customer_id", ARABIC_INDIC_THREE),
        (SLA_URL, "campaign_id", ARABIC_INDIC_THREE),
        (SLA_URL, "at_risk_minutes", ARABIC_INDIC_THREE),
        (SLA_URL, "active_minutes", ARABIC_INDIC_THREE),
        (SLA_URL, "from", FULLWIDTH_DAY),
        (SLA_URL, "to", FULLWIDTH_DAY),
    ],
)
def test_numbers_and_days_in_another_scripts_digits_are_refused_by_both_endpoints(
    admin_api: APIClient, db: None, url: str, parameter: str, value: str
) -> None:
    response = admin_api.get(url, {parameter: value})

    assert response.status_code == 400
    assert response.json() == {parameter: ["Use ASCII digits (0-9)."]}


def test_the_same_sla_parameters_in_ascii_digits_are_read(admin_api: APIClient, db: None) -> None:
    response = admin_api.get(
        SLA_URL, {"from": "2026-11-25", "to": "2026-11-25", "at_risk_minutes": "3", "active_minutes": "3"}
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["from"], body["to"], body["at_risk_minutes"], body["active_minutes"]) == (
        "2026-11-25",
        "2026-11-25",
        3.0,
        3.0,
    )


def test_a_query_string_serializer_given_a_plain_dict_says_so_rather_than_reading_it_loosely() -> None:
    # A dict has no repeated values to refuse; only request.query_params is read.
    with pytest.raises(TypeError, match="reads a QueryDict"):
        QueryStringSerializer(data={"a": "1"}).is_valid()


CUSTOMERS_URL = "/api/v1/customers/"


@pytest.mark.parametrize(
    ("url", "parameter", "value", "message"),
    [
        (LEADS_URL, "limit", "abc", "A whole number, at least 1."),
        (LEADS_URL, "limit", "0", "A whole number, at least 1."),
        (LEADS_URL, "limit", "-5", "A whole number, at least 1."),
        (LEADS_URL, "limit", ARABIC_INDIC_THREE, "A whole number, at least 1."),
        (LEADS_URL, "limit", "1e3", "A whole number, at least 1."),
        (CUSTOMERS_URL, "limit", "1.5", "A whole number, at least 1."),
        (CUSTOMERS_URL, "limit", "0", "A whole number, at least 1."),
        (CUSTOMERS_URL, "offset", "-1", "A whole number, at least 0."),
        (CUSTOMERS_URL, "offset", "x", "A whole number, at least 0."),
        (CUSTOMERS_URL, "offset", str(2**63), f"A whole number, at most {2**63 - 1}."),
        (CUSTOMERS_URL, "offset", "9" * 5000, f"A whole number, at most {2**63 - 1}."),
    ],
)
def test_a_page_parameter_that_is_no_whole_number_is_a_400_not_the_default_page(
    admin_api: APIClient, two_customers_leads: None, url: str, parameter: str, value: str, message: str
) -> None:
    response = admin_api.get(url, {parameter: value})

    assert response.status_code == 400
    assert response.json() == {parameter: [message]}


def test_a_page_parameter_given_twice_is_a_400(admin_api: APIClient, two_customers_leads: None) -> None:
    response = admin_api.get(f"{CUSTOMERS_URL}?limit=1&limit=2")

    assert response.status_code == 400
    assert response.json() == {"limit": ["Give this parameter once."]}


@pytest.mark.parametrize("url", [LEADS_URL, CUSTOMERS_URL])
def test_a_limit_is_read_and_one_past_the_maximum_is_cut_to_it(
    admin_api: APIClient, two_customers_leads: None, url: str
) -> None:
    one = admin_api.get(url, {"limit": "1"})
    many = admin_api.get(url, {"limit": "9" * 5000})

    assert (one.status_code, many.status_code) == (200, 200)
    assert len(one.json()["results"]) == 1
    assert len(many.json()["results"]) == 2


def test_an_offset_pages_the_customers(admin_api: APIClient, two_customers_leads: None) -> None:
    everyone = [row["id"] for row in admin_api.get(CUSTOMERS_URL).json()["results"]]

    response = admin_api.get(CUSTOMERS_URL, {"limit": "1", "offset": "1"})

    assert [row["id"] for row in response.json()["results"]] == everyone[1:2]
