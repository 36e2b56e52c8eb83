"""GET /healthz without a key; the OpenAPI schema and docs with any valid key."""

import json
import re

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from leads import health
from leads.models import ApiScope

# --- /healthz --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_broker_status():
    health.forget_broker_status()
    yield
    health.forget_broker_status()


def test_healthz_answers_200_with_database_and_broker_status_without_a_key(db):
    response = APIClient().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_answers_503_when_the_database_is_unreachable(db, monkeypatch):
    def unreachable():
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(connection, "cursor", unreachable)
        response = APIClient().get("/healthz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["database"] == "unreachable"


def test_healthz_reports_a_broker_outage_without_failing(db, monkeypatch):
    monkeypatch.setattr(health, "_broker_ok", lambda: False)

    response = APIClient().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "unreachable"}


def test_healthz_reports_an_unreachable_broker_url_within_its_timeout(db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    response = APIClient().get("/healthz")

    assert response.status_code == 200
    assert response.json()["broker"] == "unreachable"


def test_healthz_checks_the_broker_once_per_period_not_on_every_request(db, monkeypatch):
    # /healthz needs no key: with the broker down, a check on every request would hold a web
    # worker for up to its timeouts each time.
    checks = []
    monkeypatch.setattr(health, "_broker_reachable", lambda: checks.append(1) or False)

    for _ in range(5):
        assert APIClient().get("/healthz").json()["broker"] == "unreachable"
    assert len(checks) == 1

    monkeypatch.setattr(health, "BROKER_STATUS_SECONDS", 0.0)
    APIClient().get("/healthz")
    assert len(checks) == 2


def test_healthz_answers_head_as_uptime_probes_send_it(db):
    response = APIClient().head("/healthz")

    assert response.status_code == 200
    assert response.content == b""


def test_healthz_answers_head_with_503_when_the_database_is_unreachable(db, monkeypatch):
    monkeypatch.setattr(health, "_database_ok", lambda: False)

    assert APIClient().head("/healthz").status_code == 503


def test_healthz_refuses_writes(db):
    assert APIClient().post("/healthz").status_code == 405


# --- OpenAPI ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [ApiScope.ADMIN, ApiScope.CONTRACT_APP, ApiScope.INGEST])
def test_the_openapi_schema_is_readable_with_a_key_of_any_scope(make_client, customer, scope):
    response = make_client(scope, customer).get("/api/schema/?format=json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/v1/leads/",
        "/api/v1/leads/{lead_id}/",
        "/api/v1/customers/",
        "/api/v1/campaigns/",
        "/api/v1/contractors/",
        "/api/v1/contractors/{contractor_id}/",
    ):
        assert path in schema["paths"]
    assert set(schema["paths"]["/api/v1/leads/{lead_id}/"]) >= {"get", "patch"}
    assert "ApiKey" in schema["components"]["securitySchemes"]


def test_the_openapi_schema_documents_the_lead_object(admin_api):
    schema = admin_api.get("/api/schema/?format=json").json()

    lead_fields = set(schema["components"]["schemas"]["LeadInput"]["properties"])
    assert lead_fields == {
        "external_id",
        "customer_id",
        "campaign_id",
        "lead_type",
        "city",
        "source",
        "last_activity",
        "stage",
        "pricing_plan",
        "rescheduled_at",
        "created_at",
    }


def test_the_openapi_schema_documents_what_the_lead_endpoints_answer(admin_api):
    schema = admin_api.get("/api/schema/?format=json").json()
    components, paths = schema["components"]["schemas"], schema["paths"]

    # The list is cursor-paginated, as served.
    listing = paths["/api/v1/leads/"]["get"]
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(components[page]["properties"]) == {"next", "previous", "results"}
    assert {"cursor", "limit"} <= {parameter["name"] for parameter in listing["parameters"]}
    # An open lead's closed_reason is "".
    closed_reason = components["LeadOutput"]["properties"]["closed_reason"]["oneOf"]
    assert {"$ref": "#/components/schemas/BlankEnum"} in closed_reason
    # The errors the Contract app must handle, with their shapes.
    next_lead = paths["/api/v1/next-lead/"]["post"]["responses"]
    assert {"200", "204", "400", "401", "403", "404", "429", "503"} == set(next_lead)
    assert next_lead["429"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    assert {"400", "404", "409"} <= set(paths["/api/v1/leads/{lead_id}/outcome/"]["post"]["responses"])
    single_or_batch = paths["/api/v1/leads/"]["post"]["responses"]["400"]["content"]["application/json"]
    assert len(single_or_batch["schema"]["oneOf"]) == 2
    # A single lead updated answers 200 with the lead, a batch with the batch result.
    stored = paths["/api/v1/leads/"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert components[stored["$ref"].rsplit("/", 1)[1]]["oneOf"] == [
        {"$ref": "#/components/schemas/LeadOutput"},
        {"$ref": "#/components/schemas/LeadBatchResult"},
    ]
    # Every reference names a component the schema holds.
    text = json.dumps(schema)
    assert set(re.findall(r'"#/components/schemas/([^"]+)"', text)) <= set(components)


@pytest.mark.parametrize("scope", [ApiScope.ADMIN, ApiScope.CONTRACT_APP, ApiScope.INGEST])
def test_the_interactive_docs_are_readable_with_a_key_of_any_scope(make_client, customer, scope):
    response = make_client(scope, customer).get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


@pytest.mark.parametrize("url", ["/api/schema/?format=json", "/api/schema/", "/api/docs/"])
def test_the_schema_and_docs_answer_401_without_a_key(db, url):
    response = APIClient().get(url)

    assert response.status_code == 401


@pytest.mark.parametrize("url", ["/api/schema/?format=json", "/api/docs/"])
def test_the_schema_and_docs_answer_401_with_a_wrong_key(db, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key abcdefgh.wrong")

    assert client.get(url).status_code == 401


def test_the_openapi_schema_generates_without_warnings(db, tmp_path):
    # --fail-on-warn raises when drf-spectacular could not describe a view, a serializer or
    # the key authentication, i.e. when the published docs would be incomplete.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))

    assert "/api/v1/leads/" in (tmp_path / "schema.yaml").read_text()


def test_every_operation_documents_the_errors_it_answers(admin_api):
    # Customers, campaigns, contractors and the SLA figures documented their success only.
    paths = admin_api.get("/api/schema/?format=json").json()["paths"]

    for path, operations in paths.items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "patch", "delete"):
                continue
            codes = set(operation["responses"])
            assert {"401", "503"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method in ("post", "patch") and operation.get("requestBody"):
                assert "400" in codes, (method, path)
