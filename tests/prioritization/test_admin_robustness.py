"""The admin under odd input and narrow permissions: Unicode digits and other non-ids in
query parameters, list filter values that are no choice, deletions that take read-only
records along, and what staff with some permissions but not others may see."""

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from leads.ids import MAX_ID, parse_id
from leads.models import ApiKey, ApiScope, Campaign, Customer, ImportJob, Lead
from prioritization.models import (
    Alert,
    AlertKind,
    Decision,
    ModelVersion,
    PolicyVersion,
    PriorityPolicy,
    SimulationRun,
)
from tests.factories import CampaignFactory, CustomerFactory, LeadFactory, staff_client
from tests.prioritization.conftest import add_lead, model_of

# --- Ids in query parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("007", 7),
        (str(MAX_ID), MAX_ID),
        (str(MAX_ID + 1), None),
        ("0", None),
        ("-1", None),
        (" 1", None),
        ("1.5", None),
        ("²", None),  # isdigit(), but int() refuses it
        ("٣", None),  # Arabic-Indic three: int() would read 3
        ("1\x00", None),
        ("9" * 5000, None),  # more digits than int() converts
        ("", None),
        (None, None),
    ],
)
def test_only_ascii_digits_within_bigint_spell_an_id(text: str | None, expected: int | None) -> None:
    assert parse_id(text) == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url_name", "params"),
    [
        ("admin:leads_lead_changelist", {"q": "²"}),
        ("admin:leads_lead_changelist", {"q": "9" * 5000}),
        ("admin:leads_lead_changelist", {"customer__id__exact": "²"}),
        ("admin:leads_lead_changelist", {"campaign": "²"}),
        ("admin:leads_leadevent_changelist", {"q": "²"}),
        ("admin:prioritization_decision_changelist", {"q": "²"}),
        ("admin:prioritization_prioritypolicy_preview_new", {"customer": "²"}),
        ("admin:prioritization_simulationrun_add", {"customer": "²"}),
        ("sla-dashboard", {"customer": "²"}),
    ],
)
def test_a_unicode_digit_where_an_id_is_expected_is_no_server_error(
    admin_client: Client, url_name: str, params: dict[str, str]
) -> None:
    LeadFactory()
    response = admin_client.get(reverse(url_name), params)
    assert response.status_code < 500


@pytest.mark.django_db
def test_a_lead_search_by_a_non_ascii_digit_finds_no_lead_by_id(admin_client: Client) -> None:
    lead = LeadFactory(external_id="x")
    url = reverse("admin:leads_lead_changelist")
    found = admin_client.get(url, {"q": str(lead.pk)}).context["cl"].result_list
    assert [row.pk for row in found] == [lead.pk]
    arabic = str(lead.pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert list(admin_client.get(url, {"q": arabic}).context["cl"].result_list) == []


@pytest.mark.django_db
def test_the_campaign_filter_lists_the_chosen_customers_campaigns(admin_client: Client) -> None:
    campaign = CampaignFactory(name="Inbound")
    LeadFactory(campaign=campaign)
    response = admin_client.get(
        reverse("admin:leads_lead_changelist"), {"customer__id__exact": campaign.customer_id}
    )
    assert response.status_code == 200
    assert "Inbound" in response.content.decode()


@pytest.mark.django_db
def test_the_dashboard_reports_a_customer_that_is_no_id_as_a_filter_error(admin_client: Client) -> None:
    response = admin_client.get(reverse("sla-dashboard"), {"customer": "²"})
    assert response.status_code == 400
    assert "Check the filters." in response.content.decode()


# --- List filter values ------------------------------------------------------------------------


@pytest.mark.django_db
# (A NUL never reaches the filter: config.middleware answers 400, tests/test_middleware.py.)
@pytest.mark.parametrize("band", ["bogus", "LIVE", "live "])
def test_a_band_filter_value_that_is_no_band_is_ignored(
    admin_client: Client, decision: Decision, band: str
) -> None:
    response = admin_client.get(reverse("admin:prioritization_decision_changelist"), {"band": band})
    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [decision.pk]


@pytest.mark.django_db
def test_the_band_filter_still_filters_by_band(admin_client: Client, decision: Decision) -> None:
    url = reverse("admin:prioritization_decision_changelist")
    other = "stale" if decision.band != "stale" else "live"
    assert [row.pk for row in admin_client.get(url, {"band": decision.band}).context["cl"].result_list] == [
        decision.pk
    ]
    assert list(admin_client.get(url, {"band": other}).context["cl"].result_list) == []


# --- Deleting what takes read-only records along ------------------------------------------------


def open_alert(customer: Customer, campaign: Campaign | None = None, message: str = "queue empty") -> Alert:
    now = timezone.now()
    return Alert.objects.create(
        kind=AlertKind.EMPTY_QUEUE if campaign is not None else AlertKind.SLA_AT_RISK,
        customer=customer,
        campaign=campaign,
        opened_at=now,
        checked_at=now,
        message=message,
    )


def customer_with_history() -> Customer:
    """A customer with its own policy (one version), a learned model and an open alert."""
    customer = CustomerFactory()
    policy = PriorityPolicy.objects.create(customer=customer, name="Own")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()
    model_of(customer)
    open_alert(customer, message="SLA at risk")
    return customer


@pytest.mark.django_db
def test_a_superuser_deletes_a_customer_with_its_policy_model_and_alerts(admin_client: Client) -> None:
    customer = customer_with_history()
    url = reverse("admin:leads_customer_delete", args=[customer.pk])

    page = admin_client.get(url)
    assert page.status_code == 200
    assert not page.context["perms_lacking"]
    response = admin_client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Customer.objects.filter(pk=customer.pk).exists()
    assert not PolicyVersion.objects.filter(policy__customer_id=customer.pk).exists()
    assert not ModelVersion.objects.filter(customer_id=customer.pk).exists()
    assert not Alert.objects.filter(customer_id=customer.pk).exists()


@pytest.mark.django_db
def test_a_superuser_deletes_a_campaign_with_alerts_also_in_bulk(admin_client: Client) -> None:
    one, two = CampaignFactory(), CampaignFactory()
    open_alert(one.customer, one)
    open_alert(two.customer, two)

    response = admin_client.post(reverse("admin:leads_campaign_delete", args=[one.pk]), {"post": "yes"})
    assert response.status_code == 302
    admin_client.post(
        reverse("admin:leads_campaign_changelist"),
        {"action": "delete_selected", "_selected_action": [two.pk], "post": "yes"},
    )

    assert not Campaign.objects.filter(pk__in=[one.pk, two.pk]).exists()
    assert not Alert.objects.exists()


@pytest.mark.django_db
def test_leads_are_withdrawn_not_deleted_even_by_a_superuser(
    admin_client: Client, decision: Decision
) -> None:
    # Deleting a lead would take its history and the decision log that explains it.
    lead_id = decision.lead_id

    response = admin_client.post(reverse("admin:leads_lead_delete", args=[lead_id]), {"post": "yes"})

    assert response.status_code == 403
    assert Lead.objects.filter(pk=lead_id).exists()
    assert Decision.objects.filter(lead_id=lead_id).exists()
    changelist = admin_client.get(reverse("admin:leads_lead_changelist"))
    assert b"delete_selected" not in changelist.content


@pytest.mark.django_db
def test_staff_who_may_delete_campaigns_delete_one_with_alerts() -> None:
    campaign = CampaignFactory()
    open_alert(campaign.customer, campaign)
    client = staff_client("leads.view_campaign", "leads.delete_campaign")

    response = client.post(reverse("admin:leads_campaign_delete", args=[campaign.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Campaign.objects.filter(pk=campaign.pk).exists()


@pytest.mark.django_db
def test_staff_who_may_not_delete_customers_are_still_refused() -> None:
    customer = customer_with_history()
    campaign = CampaignFactory()
    open_alert(campaign.customer, campaign)
    client = staff_client("leads.view_customer", "leads.view_campaign")

    delete_customer = reverse("admin:leads_customer_delete", args=[customer.pk])
    delete_campaign = reverse("admin:leads_campaign_delete", args=[campaign.pk])

    assert client.get(delete_customer).status_code == 403
    assert client.post(delete_customer, {"post": "yes"}).status_code == 403
    assert client.post(delete_campaign, {"post": "yes"}).status_code == 403
    assert Customer.objects.filter(pk=customer.pk).exists()
    assert Campaign.objects.filter(pk=campaign.pk).exists()


@pytest.mark.django_db
def test_deleting_a_customer_still_takes_the_permission_to_delete_its_policy() -> None:
    customer = customer_with_history()
    client = staff_client("leads.view_customer", "leads.delete_customer")
    url = reverse("admin:leads_customer_delete", args=[customer.pk])

    page = client.get(url)
    client.post(url, {"post": "yes"})

    assert set(page.context["perms_lacking"]) == {"priority policy"}  # not its records
    assert Customer.objects.filter(pk=customer.pk).exists()


# --- What staff with some permissions see ------------------------------------------------------


@pytest.mark.django_db
def test_the_alert_banner_is_for_staff_who_may_view_alerts() -> None:
    open_alert(CustomerFactory(), message="Acme is missing its SLA")
    without = staff_client()
    with_alerts = staff_client("prioritization.view_alert", name="watcher")

    assert "Acme is missing its SLA" not in without.get(reverse("admin:index")).content.decode()
    assert "Acme is missing its SLA" in with_alerts.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("lead_perm", "status"), [(None, 403), ("leads.view_lead", 200), ("leads.change_lead", 200)]
)
def test_the_policy_preview_shows_leads_only_to_staff_who_may_view_leads(
    all_day_campaign: Campaign, lead_perm: str | None, status: int
) -> None:
    add_lead(all_day_campaign, city="Pune")
    perms = ["prioritization.view_prioritypolicy", *([lead_perm] if lead_perm else [])]
    client = staff_client(*perms)

    response = client.get(
        reverse("admin:prioritization_prioritypolicy_preview_new"), {"customer": all_day_campaign.customer_id}
    )

    assert response.status_code == status
    assert ("Pune" in response.content.decode()) == (status == 200)
    # The policy's page offers the preview only to those it would answer.
    policy = PriorityPolicy.objects.get(customer__isnull=True)
    page = client.get(
        reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])
    ).content.decode()
    assert ("policy-preview-link" in page) == (status == 200)
    assert ('name="_preview"' in page) == (status == 200)


@pytest.mark.django_db
def test_staff_who_may_change_leads_may_open_the_sla_dashboard() -> None:
    assert staff_client("leads.change_lead").get(reverse("sla-dashboard")).status_code == 200


# --- Autocomplete fields posted with no id ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["abc", "1.5", "²"])
def test_a_campaign_posted_with_a_customer_that_is_no_id_is_a_form_error(
    admin_client: Client, value: str
) -> None:
    response = admin_client.post(
        reverse("admin:leads_campaign_add"),
        {
            "name": "Inbound",
            "customer": value,
            "time_zone": "UTC",
            "calling_hours_start": "08:00",
            "calling_hours_end": "20:00",
            "calling_days": "0,1",
        },
    )
    assert response.status_code == 200
    assert "customer" in response.context["adminform"].form.errors
    assert not Campaign.objects.filter(name="Inbound").exists()


@pytest.mark.django_db
def test_a_valid_customer_is_still_shown_selected_when_the_form_is_redisplayed(admin_client: Client) -> None:
    customer = CustomerFactory(name="Acme")
    response = admin_client.post(reverse("admin:leads_campaign_add"), {"name": "", "customer": customer.pk})
    assert response.status_code == 200
    assert f'<option value="{customer.pk}" selected>Acme</option>' in response.content.decode()


@pytest.mark.django_db
def test_a_lead_posted_with_a_campaign_that_is_no_id_is_a_form_error(admin_client: Client) -> None:
    lead = LeadFactory()
    response = admin_client.post(
        reverse("admin:leads_lead_change", args=[lead.pk]), {"campaign": "abc", "lead_type": "live"}
    )
    assert response.status_code == 200
    assert "campaign" in response.context["adminform"].form.errors


@pytest.mark.django_db
def test_an_api_key_posted_with_a_customer_that_is_no_id_is_a_form_error(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:leads_apikey_add"), {"name": "Acme", "scope": ApiScope.INGEST, "customer": "abc"}
    )
    assert response.status_code == 200
    assert "customer" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_a_policy_posted_with_a_customer_that_is_no_id_is_a_form_error(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:prioritization_prioritypolicy_add"), {"name": "Acme policy", "customer": "abc"}
    )
    assert response.status_code == 200
    assert "customer" in response.context["adminform"].form.errors
    assert not PriorityPolicy.objects.filter(name="Acme policy").exists()


@pytest.mark.django_db
def test_an_import_posted_with_a_customer_that_is_no_id_is_a_form_error(admin_client: Client) -> None:
    upload = SimpleUploadedFile("l.csv", b"external_id,lead_type\nA,live\n")
    response = admin_client.post(
        reverse("admin:leads_importjob_upload"), {"file": upload, "customer": "abc", "campaign": "1.5"}
    )
    assert response.status_code == 200
    assert {"customer", "campaign"} <= set(response.context["form"].errors)
    assert not ImportJob.objects.exists()


@pytest.mark.django_db
def test_staff_who_may_change_leads_see_the_dashboard_link_on_the_admin_index() -> None:
    page = staff_client("leads.change_lead").get(reverse("admin:index")).content.decode()
    assert 'id="sla-dashboard-link"' in page
    assert (
        'id="sla-dashboard-link"'
        not in staff_client(name="nobody").get(reverse("admin:index")).content.decode()
    )


@pytest.mark.django_db
def test_staff_who_may_only_view_policies_see_the_settings_in_force() -> None:
    # The edit form's fields are a version's: Django's read-only rendering of them failed.
    policy = PriorityPolicy.objects.get(customer__isnull=True)
    client = staff_client("prioritization.view_prioritypolicy")

    response = client.get(reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="policy-settings"' in page
    assert "sla window minutes" in page.lower()
    assert 'name="sla_window_minutes"' not in page  # nothing to edit


def a_row_of_every_model() -> None:
    """With the ``decision`` fixture (a customer, campaign, contractor, lead, its events, the
    default policy), a row of every model leadrank's admin shows."""
    customer = customer_with_history()
    ImportJob.objects.create(original_name="leads.csv", customer=customer)
    SimulationRun.objects.create(customer=customer)
    ApiKey.objects.create_key(name="Acme CRM", scope=ApiScope.INGEST, customer=customer)


@pytest.mark.django_db
def test_every_admin_list_and_page_opens_for_staff_who_may_only_view_it(decision: Decision) -> None:
    a_row_of_every_model()
    failures = []
    ours = [model for model in admin.site._registry if model._meta.app_label in ("leads", "prioritization")]
    assert len(ours) >= 12
    for model in ours:
        opts = model._meta
        obj = model._default_manager.first()
        if obj is None:
            failures.append(f"{opts.label}: no row to open")
            continue
        client = staff_client(f"{opts.app_label}.view_{opts.model_name}", name=f"viewer-{opts.model_name}")
        client.raise_request_exception = False
        for url in (
            reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]),
        ):
            status = client.get(url).status_code
            if status >= 500:
                failures.append(f"{url}: {status}")
    assert failures == [], "\n".join(failures)


@pytest.mark.django_db
def test_every_admin_list_add_and_change_page_opens_for_a_superuser(
    admin_client: Client, decision: Decision
) -> None:
    a_row_of_every_model()
    admin_client.raise_request_exception = False
    failures = []
    for model in [m for m in admin.site._registry if m._meta.app_label in ("leads", "prioritization")]:
        opts = model._meta
        prefix = f"admin:{opts.app_label}_{opts.model_name}"
        obj = model._default_manager.first()
        assert obj is not None, opts.label
        for url in (
            reverse(f"{prefix}_changelist"),
            reverse(f"{prefix}_add"),
            reverse(f"{prefix}_change", args=[obj.pk]),
            reverse(f"{prefix}_history", args=[obj.pk]),
        ):
            status = admin_client.get(url).status_code
            if status >= 500:
                failures.append(f"{url}: {status}")
        # A bulk action posted with rows that are no ids (a tampered form).
        changelist = reverse(f"{prefix}_changelist")
        for action in ("delete_selected", *(name for name, _ in _actions_of(model))):
            for bad in ("abc", "\x00", "1.5", "9" * 30):
                posted = {"action": action, "_selected_action": [bad], "index": "0"}
                status = admin_client.post(changelist, posted).status_code
                if status >= 500:
                    failures.append(f"{changelist} action {action} on {bad!r}: {status}")
    assert failures == [], "\n".join(failures)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["admin:prioritization_prioritypolicy_add", "admin:prioritization_simulationrun_add"]
)
def test_weights_nested_too_deeply_are_a_form_error(admin_client: Client, url: str) -> None:
    # Django's JSON form field lets the decoder's RecursionError out.
    response = admin_client.post(reverse(url), {"name": "Deep", "city_weights": "[" * 100_000})

    assert response.status_code == 200
    form = response.context["adminform"].form if "adminform" in response.context else response.context["form"]
    assert "nested too deeply" in str(form.errors["city_weights"])


def _actions_of(model: type[Any]) -> list[tuple[str, str]]:
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/")
    request.user = User.objects.filter(is_superuser=True).first()
    return [(name, str(label)) for name, label in model_admin.get_action_choices(request)[1:]]
