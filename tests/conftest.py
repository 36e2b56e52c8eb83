import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from psycopg import sql
from rest_framework.test import APIClient

from leads.authentication import forget_verified_keys
from leads.models import ApiKey, ApiScope, Customer
from tests.factories import CustomerFactory, campaign_calling_all_day


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """One test database per test run, so that concurrent runs on one server never collide."""
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_leadrank_{os.getpid()}"


@pytest.fixture(autouse=True)
def _fresh_api_key_cache() -> None:
    """Each test starts with no remembered API keys (they are per process)."""
    forget_verified_keys()


@pytest.fixture
def customer() -> Customer:
    return CustomerFactory(pricing_plan="pro")


@pytest.fixture
def campaign(customer: Customer):
    # Calling around the clock: tests that claim on the real clock must not depend on the
    # hour or the weekday they run at (a campaign outside its calling hours hands out nothing).
    return campaign_calling_all_day(customer)


@pytest.fixture
def make_client(db: None) -> Callable[..., APIClient]:
    """An API client authenticated with a fresh key of the given scope."""

    def make(scope: str = ApiScope.ADMIN, customer: Customer | None = None) -> APIClient:
        _, key = ApiKey.objects.create_key(
            name=f"test {scope}", scope=scope, customer=customer if scope == ApiScope.INGEST else None
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        return client

    return make


@pytest.fixture
def admin_api(make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(ApiScope.ADMIN)


@pytest.fixture
def contract_api(make_client: Callable[..., APIClient]) -> APIClient:
    return make_client(ApiScope.CONTRACT_APP)


@pytest.fixture
def ingest_api(make_client: Callable[..., APIClient], customer: Customer) -> APIClient:
    return make_client(ApiScope.INGEST, customer)


def plan(sql: str, params: Mapping[str, object] | Sequence[object] = ()) -> str:
    """The plan PostgreSQL picks when a scan of the whole table is ruled out: on a test's few
    rows it shows which index can serve the query (at scale the planner picks it by cost)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        text = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    return text


def generic_plan_nodes(query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the generic plan of an engine statement (``%(name)s`` placeholders),
    as the engine's connections run it (settings force generic plans)."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", query)))
    numbered = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", query)
    values = ", ".join(sql.Literal(params[name]).as_string(connection.connection) for name in names)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # The tables are small here; in production a sequential scan is never the cheapest.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"PREPARE engine_statement AS {numbered}")
        try:
            cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE engine_statement ({values})")
            plan = cursor.fetchone()[0][0]["Plan"]
        finally:
            cursor.execute("DEALLOCATE engine_statement")
    nodes, todo = [], [plan]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def manage_py(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` with these arguments in a process of its own, as from a shell: the test
    run's database and a production-like environment, with ``variables`` over it."""
    env = {
        **os.environ,
        "DJANGO_DEBUG": "false",
        "SECRET_KEY": "x",
        "DATABASE_URL": settings.DATABASE_URL,
        **variables,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
