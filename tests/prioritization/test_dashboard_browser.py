"""The SLA dashboard in a real browser: Debian's Chromium, headless, driven by Playwright
against pytest-django's live server. Saves var/screenshots/sla_dashboard.png."""

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from tests.factories import CustomerFactory, campaign_calling_all_day
from tests.prioritization.sla_world import MINUTE, call_at, live_lead

# The live server serves from another thread and only sees committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = os.environ.get("LEADRANK_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(settings.VAR_DIR) / "screenshots" / "sla_dashboard.png"
PASSWORD = "a-long-test-password"


@pytest.fixture
def chromium() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set LEADRANK_CHROMIUM)."
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def world(make_contractor) -> tuple[object, object]:
    """Two customers with a week of calls each; Globex often misses its window."""
    now = timezone.now()
    # Calling around the clock: the calls are at any hour of the week before now.
    acme = campaign_calling_all_day(CustomerFactory(name="Acme"), name="Acme inbound")
    globex = campaign_calling_all_day(CustomerFactory(name="Globex"), name="Globex renewals")
    contractor = make_contractor(acme, globex)
    for day in range(7, 0, -1):
        for hour in range(4):
            created = now - day * dt.timedelta(days=1) + hour * dt.timedelta(hours=1)
            call_at(contractor, live_lead(acme, created), created + (3 + 4 * hour) * MINUTE)
            call_at(contractor, live_lead(globex, created), created + (10 + 15 * hour) * MINUTE)
    for minutes in (1, 5, 28):
        live_lead(acme, now - minutes * MINUTE)
    live_lead(globex, now - 2 * MINUTE, lead_type="stale")
    User.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    return acme, globex


# `world` comes before `chromium`: Playwright's sync API switches greenlets, and an ORM
# call made once it runs gets a connection of its own that pytest-django never closes (the
# test database could then not be dropped). So all data is written first, and the test body
# makes no query.
def test_the_dashboard_renders_its_charts_and_follows_the_filters(live_server, world, chromium) -> None:
    _, globex = world
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.click("#sla-dashboard-link")

    assert page.inner_text("#sla-scope").startswith("All customers:")
    sizes = page.eval_on_selector_all(
        ".sla-chart img", "images => images.map(i => [i.id, i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert {s[0] for s in sizes} == {"chart-attainment", "chart-tat", "chart-queue"}
    assert all(complete and width > 300 and height > 100 for _, complete, width, height in sizes), sizes
    assert page.locator("#sla-customers tbody tr").count() == 2
    assert page.locator("#sla-at-risk tbody tr").count() == 1  # the lead 28 minutes old
    before = page.get_attribute("#chart-attainment", "src")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Choosing a customer reloads the page for that customer (no button press).
    with page.expect_navigation():
        page.select_option("#id_customer", str(globex.customer_id))  # type: ignore[attr-defined]
    assert page.inner_text("#sla-scope").startswith("Globex:")
    assert page.locator("#sla-customers tbody tr").count() == 1
    assert page.locator("#sla-campaigns tbody tr").count() == 1
    assert page.get_attribute("#chart-attainment", "src") != before
    assert page.eval_on_selector("#chart-attainment", "i => i.complete && i.naturalWidth > 300")
    assert page.locator("#id_campaign option").all_inner_texts() == [
        "All campaigns",
        "Globex / Globex renewals",
    ]

    # A range typed in and shown.
    page.fill("#id_from", (timezone.now() - dt.timedelta(days=2)).date().isoformat())
    with page.expect_navigation():
        page.click("#sla-show")
    assert "to" in page.inner_text("#sla-scope")
    assert page.locator(".sla-tile").count() == 7
    assert SCREENSHOT.stat().st_size > 10_000
