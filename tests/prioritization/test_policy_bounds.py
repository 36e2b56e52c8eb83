"""A saved policy never breaks the engine: bounded numbers (clean() and CheckConstraints,
and the migration that brings old versions within them), weight names PostgreSQL can store,
learned models of the policy's own customer, and no concurrent edit silently undone."""

import datetime as dt
import importlib
import json
import math
import threading
from typing import Any
from unittest import mock

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.urls import reverse

from leads.models import Campaign, QueueStatus
from prioritization import tasks
from prioritization.admin import PriorityPolicyAdmin
from prioritization.models import (
    PolicyVersion,
    PriorityPolicy,
    WeightsSource,
    version_values,
)
from prioritization.services import (
    ClaimRefused,
    PolicyChangedMeanwhile,
    claim_next_lead,
    record_outcome,
    rescore_leads,
    save_policy_settings,
)
from tests.factories import ContractorFactory, CustomerFactory
from tests.prioritization.conftest import (
    T0,
    add_leads,
    as_form,
    change_url,
    default_policy,
    form_data,
    model_of,
)

pytestmark = pytest.mark.django_db

POLICY_ADD = reverse("admin:prioritization_prioritypolicy_add")
SIMULATION_ADD = reverse("admin:prioritization_simulationrun_add")
CHANGED_MEANWHILE = "This policy changed while you edited it"

# Every bounded number at its lowest and at its highest allowed value.
LOWEST: dict[str, Any] = {
    "sla_window_minutes": 1.0,
    "sla_protect_minutes": 0.0,
    "live_decay_minutes": 0.01,
    "live_activity_decay_hours": 0.01,
    "stale_activity_decay_days": 0.01,
    "reschedule_min_hours": 0.01,
    "reschedule_max_hours": 0.01,
    "lease_seconds": 30,
    "claims_per_hour_cap": 1,
    "claims_per_day_cap": 1,
}
HIGHEST: dict[str, Any] = {
    "sla_window_minutes": 1440.0,
    "sla_protect_minutes": 1440.0,
    "live_decay_minutes": 1e6,
    "live_activity_decay_hours": 1e6,
    "stale_activity_decay_days": 1e6,
    "reschedule_min_hours": 720.0,
    "reschedule_max_hours": 720.0,
    "lease_seconds": 86_400,
    "claims_per_hour_cap": None,
    "claims_per_day_cap": None,
}

# (changes, field with the error, constraint the database refuses them with)
BEYOND: list[tuple[dict[str, Any], str, str]] = [
    ({"sla_window_minutes": 1e10}, "sla_window_minutes", "policy_sla_window_in_range"),
    ({"sla_window_minutes": 1440.5}, "sla_window_minutes", "policy_sla_window_in_range"),
    (
        {"sla_window_minutes": 0.5, "sla_protect_minutes": 0.0},
        "sla_window_minutes",
        "policy_sla_window_in_range",
    ),
    ({"sla_window_minutes": math.nan}, "sla_window_minutes", "policy_sla_window_in_range"),
    ({"sla_protect_minutes": 1e10}, "sla_protect_minutes", "policy_protect_within_window"),
    (
        {"sla_window_minutes": 30.0, "sla_protect_minutes": 31.0},
        "sla_protect_minutes",
        "policy_protect_within_window",
    ),
    ({"live_decay_minutes": 1e-320}, "live_decay_minutes", "policy_live_decay_in_range"),
    ({"live_decay_minutes": 1.5e6}, "live_decay_minutes", "policy_live_decay_in_range"),
    ({"live_decay_minutes": math.inf}, "live_decay_minutes", "policy_live_decay_in_range"),
    (
        {"live_activity_decay_hours": 1e-320},
        "live_activity_decay_hours",
        "policy_activity_decay_off_or_in_range",
    ),
    (
        {"live_activity_decay_hours": -1.0},
        "live_activity_decay_hours",
        "policy_activity_decay_off_or_in_range",
    ),
    ({"stale_activity_decay_days": 1e-320}, "stale_activity_decay_days", "policy_stale_decay_in_range"),
    ({"stale_activity_decay_days": 2e6}, "stale_activity_decay_days", "policy_stale_decay_in_range"),
    ({"reschedule_min_hours": 0.001}, "reschedule_min_hours", "policy_reschedule_window_in_range"),
    (
        {"reschedule_min_hours": 1e9, "reschedule_max_hours": 1e9},
        "reschedule_max_hours",
        "policy_reschedule_window_in_range",
    ),
    ({"reschedule_max_hours": 721.0}, "reschedule_max_hours", "policy_reschedule_window_in_range"),
    ({"lease_seconds": 29}, "lease_seconds", "policy_lease_in_range"),
    ({"lease_seconds": 86_401}, "lease_seconds", "policy_lease_in_range"),
    ({"claims_per_hour_cap": 0}, "claims_per_hour_cap", "policy_hour_cap_positive"),
    ({"claims_per_day_cap": 0}, "claims_per_day_cap", "policy_day_cap_positive"),
]
BEYOND_IDS = [f"{field}={changes[field]}" for changes, field, _ in BEYOND]


@pytest.fixture(autouse=True)
def no_broker() -> Any:
    """Policy saves enqueue a rescoring on commit; these tests call rescore_leads directly."""
    with mock.patch.object(tasks.rescore_leads, "delay") as patched:
        yield patched


def refused_by(constraint: str, **fields: Any) -> None:
    """Insert a version with ``fields`` and assert the database refuses it with ``constraint``."""
    policy = default_policy()
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        PolicyVersion.objects.create(policy=policy, number=1000, **fields)
    assert refused.value.__cause__.diag.constraint_name == constraint  # type: ignore[union-attr]


# --- Numbers: the engine works at the bounds, nothing beyond them is saved ----------------------


@pytest.mark.parametrize("extreme", [LOWEST, HIGHEST], ids=["lowest", "highest"])
def test_a_policy_at_its_bounds_lets_ingest_claims_rescoring_and_outcomes_work(
    all_day_campaign: Campaign, extreme: dict[str, Any]
) -> None:
    customer = all_day_campaign.customer
    policy = PriorityPolicy.objects.create(customer=customer, name="Extreme")
    version = save_policy_settings(
        policy=policy, values={**version_values(PolicyVersion()), **extreme}, note="", user=None
    )
    assert version is not None
    contractor = ContractorFactory(campaigns=[all_day_campaign])
    with time_machine.travel(T0, tick=False):
        live, stale = add_leads(
            all_day_campaign,
            {"created_at": T0 - dt.timedelta(minutes=3), "last_activity": T0 - dt.timedelta(days=400)},
            {"lead_type": "stale", "last_activity": T0 - dt.timedelta(days=400)},
            now=T0,
        )
    for lead in (live, stale):
        assert lead.scored_version == version.pk
        assert lead.priority_key is not None
        assert math.isfinite(lead.priority_key)
    assert live.sla_deadline == live.created_at + dt.timedelta(minutes=extreme["sla_window_minutes"])

    later = T0 + dt.timedelta(days=3)
    with time_machine.travel(later, tick=False):
        rescore_leads()
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk], now=later)
    assert claim is not None
    assert claim.lead.pk == live.pk  # live leads first, however long they waited
    assert math.isfinite(claim.decision.score)
    assert math.isfinite(claim.decision.log_score)
    assert claim.decision.lease_expires_at == later + dt.timedelta(seconds=extreme["lease_seconds"])

    outcome = record_outcome(lead_id=live.pk, contractor_id=contractor.pk, disposition="no_answer", now=later)
    assert outcome.lead.status == QueueStatus.WAITING
    assert outcome.lead.due_at == later + dt.timedelta(hours=extreme["reschedule_min_hours"])
    assert outcome.lead.priority_key is not None
    assert math.isfinite(outcome.lead.priority_key)
    if extreme["claims_per_hour_cap"] == 1:  # the lowest cap lets one claim an hour through
        with pytest.raises(ClaimRefused) as refused:
            claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk], now=later)
        assert refused.value.status == 429
    else:
        again = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[all_day_campaign.pk], now=later)
        assert again is not None
        assert again.lead.pk == stale.pk


@pytest.mark.parametrize(("changes", "field", "constraint"), BEYOND, ids=BEYOND_IDS)
def test_a_number_beyond_its_bound_is_refused_by_clean_and_by_the_database(
    changes: dict[str, Any], field: str, constraint: str
) -> None:
    with pytest.raises(ValidationError) as invalid:
        PolicyVersion(**changes).clean()
    assert field in invalid.value.message_dict, invalid.value.message_dict
    refused_by(constraint, **changes)


@pytest.mark.parametrize(("changes", "field", "constraint"), BEYOND, ids=BEYOND_IDS)
def test_the_service_refuses_a_number_beyond_its_bound(
    changes: dict[str, Any], field: str, constraint: str
) -> None:
    policy = default_policy()
    versions = PolicyVersion.objects.count()
    with pytest.raises(ValidationError) as invalid:
        save_policy_settings(
            policy=policy, values={**version_values(policy.current_version), **changes}, note="", user=None
        )
    assert field in invalid.value.message_dict
    assert PolicyVersion.objects.count() == versions


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"sla_window_minutes": "1e10"}, "sla_window_minutes", "Must be between 1 and 1,440 minutes."),
        (
            {"sla_protect_minutes": "45"},
            "sla_protect_minutes",
            "Must be between 0 (off) and the SLA window (30 minutes).",
        ),
        (
            {"live_decay_minutes": "1e-320"},
            "live_decay_minutes",
            "Must be between 0.01 and 1,000,000 minutes.",
        ),
        (
            {"live_activity_decay_hours": "1e-320"},
            "live_activity_decay_hours",
            "0 turns it off; else between 0.01 and 1,000,000 hours.",
        ),
        (
            {"stale_activity_decay_days": "1e-320"},
            "stale_activity_decay_days",
            "Must be between 0.01 and 1,000,000 days.",
        ),
        (
            {"reschedule_min_hours": "1e9", "reschedule_max_hours": "1e9"},
            "reschedule_max_hours",
            "Must be between 0.01 and 720 hours.",
        ),
        ({"lease_seconds": "86401"}, "lease_seconds", "Must be between 30 and 86,400 seconds."),
        ({"claims_per_hour_cap": "0"}, "claims_per_hour_cap", "A cap is at least 1 claim"),
        # Whole numbers too large for their columns (were 500s).
        ({"stale_every": "40000"}, "stale_every", "less than or equal to 32767"),
        ({"reschedule_limit": "40000"}, "reschedule_limit", "less than or equal to 32767"),
        ({"claims_per_hour_cap": "3000000000"}, "claims_per_hour_cap", "less than or equal to 2147483647"),
        ({"claims_per_day_cap": "3000000000"}, "claims_per_day_cap", "less than or equal to 2147483647"),
    ],
)
def test_the_policy_page_shows_a_number_beyond_its_bound_as_a_field_error(
    admin_client: Client, changes: dict[str, Any], field: str, message: str
) -> None:
    policy = default_policy()
    versions = PolicyVersion.objects.count()

    response = admin_client.post(change_url(policy), form_data(policy, **changes))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(message in error for error in errors.get(field, [])), errors
    assert PolicyVersion.objects.count() == versions


def test_the_migration_brings_old_versions_within_the_bounds_and_leaves_the_others_alone() -> None:
    migration = importlib.import_module("prioritization.migrations.0009_policy_bounds")
    policy = default_policy()
    added = [
        c for c in PolicyVersion._meta.constraints if c.name.startswith("policy_") and "unique" not in c.name
    ]
    with connection.cursor() as cursor:  # the database before the migration: no bounds
        for constraint in added:
            cursor.execute(f'ALTER TABLE prioritization_policyversion DROP CONSTRAINT "{constraint.name}"')
    broken = PolicyVersion.objects.create(
        policy=policy,
        number=50,
        note="typo",
        sla_window_minutes=1e10,
        sla_protect_minutes=1e10,
        live_decay_minutes=1e-320,
        live_activity_decay_hours=math.nan,
        stale_activity_decay_days=math.inf,
        reschedule_min_hours=1e9,
        reschedule_max_hours=5.0,
        lease_seconds=10**9,
        claims_per_hour_cap=0,
        claims_per_day_cap=None,
    )
    tiny = PolicyVersion.objects.create(
        policy=policy, number=51, note="x" * 500, sla_window_minutes=0.5, sla_protect_minutes=0.4
    )
    fine = PolicyVersion.objects.create(policy=policy, number=52, note="fine", claims_per_day_cap=40)

    with connection.cursor() as cursor:
        # The inserts' deferred foreign-key checks now: ALTER TABLE refuses pending ones.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(migration.CLAMP_SQL)
    with connection.schema_editor() as editor:  # fails if a row is still out of bounds
        for constraint in added:
            editor.add_constraint(PolicyVersion, constraint)

    broken.refresh_from_db()
    assert (broken.sla_window_minutes, broken.sla_protect_minutes) == (1440.0, 1440.0)
    assert (broken.live_decay_minutes, broken.live_activity_decay_hours) == (0.01, 1e6)
    assert broken.stale_activity_decay_days == 1e6
    assert (broken.reschedule_min_hours, broken.reschedule_max_hours) == (720.0, 720.0)
    assert broken.lease_seconds == 86_400
    assert (broken.claims_per_hour_cap, broken.claims_per_day_cap) == (1, None)
    assert broken.note == "typo [settings brought within bounds by migration 0009]"
    tiny.refresh_from_db()
    assert (tiny.sla_window_minutes, tiny.sla_protect_minutes) == (1.0, 0.4)
    assert len(tiny.note) == 500
    assert tiny.note.endswith("migration 0009]")
    fine.refresh_from_db()
    assert (fine.note, fine.claims_per_day_cap, fine.claims_per_hour_cap) == ("fine", 40, None)


# --- Weight names PostgreSQL can store -----------------------------------------------------------


@pytest.mark.parametrize("field", ["city_weights", "source_weights", "stage_weights"])
@pytest.mark.parametrize(
    "name", ["Pu\u0000ne", "\ud800", "ok\udfff"], ids=["nul", "high-surrogate", "low-surrogate"]
)
def test_a_weight_name_postgresql_cannot_store_is_a_field_error(
    admin_client: Client, field: str, name: str
) -> None:
    policy = default_policy()
    versions = PolicyVersion.objects.count()
    # As typed in the text area: escapes, which the JSON parser turns into the characters.
    posted = json.dumps({name: 1.5})

    response = admin_client.post(change_url(policy), form_data(policy, **{field: posted}))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "cannot be stored" in errors[field][0], errors
    assert PolicyVersion.objects.count() == versions
    with pytest.raises(ValidationError) as invalid:
        PolicyVersion(**{field: {name: 1.5}}).clean()
    assert field in invalid.value.message_dict


def test_a_huge_integer_weight_is_a_field_error_not_an_overflow(admin_client: Client) -> None:
    policy = default_policy()
    response = admin_client.post(
        change_url(policy), form_data(policy, city_weights='{"Pune": 1' + "0" * 400 + "}")
    )
    assert response.status_code == 200
    assert "city_weights" in response.context["adminform"].form.errors


@pytest.mark.parametrize("name", ["\u0000", "\ud800"], ids=["nul", "surrogate"])
def test_the_simulator_refuses_a_weight_name_postgresql_cannot_store(admin_client: Client, name: str) -> None:
    customer = CustomerFactory()
    data: dict[str, Any] = {
        "customer": customer.pk,
        "contractors": 3,
        "start": "2026-02-09 08:00",
        "days": 0.1,
    }
    data.update(as_form(version_values(PolicyVersion())))
    data.update(seed=1, city_weights=json.dumps({name: 1.5}))

    response = admin_client.post(SIMULATION_ADD, data)

    assert response.status_code == 200
    assert "city_weights" in response.context["form"].errors


# --- Learned models: the policy's own customer's or pooled ---------------------------------------


def test_a_new_policy_cannot_use_another_customers_model(admin_client: Client) -> None:
    owner, other = CustomerFactory(), CustomerFactory()
    theirs = model_of(owner)
    data = {"name": "Other's policy", "customer": other.pk, "note": ""}
    data.update(as_form(version_values(default_policy().current_version)))
    data.update(weights_source=WeightsSource.LEARNED, learned_model=theirs.pk)

    response = admin_client.post(POLICY_ADD, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "belongs to another customer" in errors["learned_model"][0], errors
    assert not PriorityPolicy.objects.filter(customer=other).exists()


@pytest.mark.parametrize("owner", ["own", "pooled"])
def test_a_new_policy_may_use_its_customers_model_or_a_pooled_one(admin_client: Client, owner: str) -> None:
    customer = CustomerFactory()
    model = model_of(customer if owner == "own" else None)
    data = {"name": "Learned", "customer": customer.pk, "note": ""}
    data.update(as_form(version_values(default_policy().current_version)))
    data.update(weights_source=WeightsSource.LEARNED, learned_model=model.pk)

    response = admin_client.post(POLICY_ADD, data)

    assert response.status_code == 302
    policy = PriorityPolicy.objects.select_related("current_version").get(customer=customer)
    assert policy.current_version is not None
    assert policy.current_version.learned_model_id == model.pk


def test_clean_and_the_service_refuse_another_customers_model() -> None:
    owner, other = CustomerFactory(), CustomerFactory()
    theirs = model_of(owner)
    policy = PriorityPolicy.objects.create(customer=other, name="Other")
    with pytest.raises(ValidationError) as invalid:
        PolicyVersion(
            policy=policy, number=1, weights_source=WeightsSource.LEARNED, learned_model=theirs
        ).clean()
    assert "learned_model" in invalid.value.message_dict
    default = default_policy()
    with pytest.raises(ValidationError):  # the default policy: pooled models only
        save_policy_settings(
            policy=default,
            values={**version_values(default.current_version), "learned_model": theirs},
            note="",
            user=None,
        )
    assert default.versions.count() == 1


# --- Concurrent edits --------------------------------------------------------------------------


def test_a_save_from_an_old_base_version_is_refused_and_keeps_the_other_change() -> None:
    policy = default_policy()
    base = policy.current_version
    assert base is not None
    other = save_policy_settings(
        policy=policy,
        values={**version_values(base), "sla_window_minutes": 45.0},
        note="other",
        user=None,
        base_version=base.number,
    )
    assert other is not None

    with pytest.raises(PolicyChangedMeanwhile) as changed:
        save_policy_settings(
            policy=policy,
            values={**version_values(base), "lease_seconds": 900},
            note="mine",
            user=None,
            base_version=base.number,
        )

    assert changed.value.current == other
    policy.refresh_from_db()
    assert policy.current_version == other
    assert policy.versions.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_save_landing_after_the_form_was_validated_is_not_undone(admin_client: Client) -> None:
    policy = default_policy()
    base = policy.current_version
    assert base is not None
    real_save_form = PriorityPolicyAdmin.save_form

    def other_editor_saves() -> None:  # on a connection of its own, committed
        try:
            save_policy_settings(
                policy=PriorityPolicy.objects.get(pk=policy.pk),
                values={**version_values(base), "sla_window_minutes": 45.0},
                note="other",
                user=None,
                base_version=base.number,
            )
        finally:
            connection.close()

    def save_form_after_another_save(self: PriorityPolicyAdmin, request: Any, form: Any, change: bool) -> Any:
        # Between the form's base check (no lock) and save_model; only on the first pass.
        if not PolicyVersion.objects.filter(note="other").exists():
            other = threading.Thread(target=other_editor_saves)
            other.start()
            other.join()
        return real_save_form(self, request, form, change)

    with mock.patch.object(PriorityPolicyAdmin, "save_form", save_form_after_another_save):
        response = admin_client.post(change_url(policy), form_data(policy, name="Renamed", lease_seconds=900))

    assert response.status_code == 200
    assert CHANGED_MEANWHILE in str(response.context["adminform"].form.non_field_errors())
    policy.refresh_from_db()
    current = policy.current_version
    assert current is not None
    assert (current.note, current.sla_window_minutes, current.lease_seconds) == ("other", 45.0, 600)
    assert policy.name == "Default policy"  # nothing of the refused save is kept
    assert policy.versions.count() == 2


def test_the_policy_page_saves_as_before_when_nobody_else_did(admin_client: Client) -> None:
    policy = default_policy()

    response = admin_client.post(change_url(policy), form_data(policy, name="Renamed", lease_seconds=900))

    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.name == "Renamed"
    assert policy.current_version is not None
    assert (policy.current_version.number, policy.current_version.lease_seconds) == (2, 900)


@pytest.mark.django_db(transaction=True)
def test_of_two_concurrent_saves_from_one_base_version_one_is_refused() -> None:
    policy = default_policy()
    base = policy.current_version
    assert base is not None
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def save(name: str, changes: dict[str, Any]) -> None:
        try:
            start.wait()
            save_policy_settings(
                policy=PriorityPolicy.objects.get(pk=policy.pk),
                values={**version_values(base), **changes},
                note=name,
                user=None,
                base_version=base.number,
            )
            outcomes[name] = "saved"
        except PolicyChangedMeanwhile:
            outcomes[name] = "refused"
        finally:
            connection.close()

    threads = [
        threading.Thread(target=save, args=("window", {"sla_window_minutes": 45.0})),
        threading.Thread(target=save, args=("lease", {"lease_seconds": 900})),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values()) == ["refused", "saved"], outcomes
    saved = next(name for name, outcome in outcomes.items() if outcome == "saved")
    policy.refresh_from_db()
    assert policy.current_version is not None
    assert policy.current_version.note == saved
    assert policy.versions.count() == 2
