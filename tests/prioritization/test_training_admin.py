"""The learned models in the admin: versions with metrics, "Train now", learned policies."""

import json
from typing import Any
from unittest import mock

import psycopg
import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.urls import reverse
from kombu.exceptions import OperationalError

from leads.models import Customer
from prioritization import admin_preview, tasks
from prioritization.models import (
    ModelVersion,
    PolicyVersion,
    PriorityPolicy,
    TrainingTrigger,
    WeightsSource,
    version_values,
)
from prioritization.services import ensure_default_policy, save_policy_settings
from prioritization.training import TRAINING_LOCK_KEY, train_models
from tests.factories import CampaignFactory, CustomerFactory
from tests.prioritization.conftest import T0, model_of
from tests.prioritization.test_training import DAY, add_outcomes

pytestmark = pytest.mark.django_db

MODEL_LIST = reverse("admin:prioritization_modelversion_changelist")
TRAIN_NOW = reverse("admin:prioritization_modelversion_train")


def trained(customer: Customer) -> ModelVersion:
    """A model of the customer's 400 outcomes over 10 days: Referral converts, Google rarely."""
    campaign = CampaignFactory(customer=customer)
    for day in range(10):
        start = T0 - (20 - day) * DAY
        add_outcomes(campaign, source="Referral", converted=12, not_converted=8, start=start)
        add_outcomes(campaign, source="Google", converted=2, not_converted=18, start=start + 0.5 * DAY)
    train_models(now=T0)
    return ModelVersion.objects.get(customer=customer)


def test_model_versions_are_listed_with_their_holdout_auc_in_few_queries(
    admin_client: Any, django_assert_max_num_queries: Any
) -> None:
    trained(CustomerFactory(name="Acme"))
    train_models(now=T0)
    train_models(now=T0)

    with django_assert_max_num_queries(8):
        response = admin_client.get(MODEL_LIST)

    assert response.status_code == 200
    content = response.content.decode()
    assert "pooled model v3" in content
    assert "Acme model v3" in content
    assert response.context["cl"].result_count == 6
    pooled = ModelVersion.objects.filter(customer=None).first()
    assert pooled is not None
    auc = next(m["auc"] for m in pooled.metrics["holdout"] if m["name"] == "learned")
    assert f"{auc:.3f}" in content


def test_a_model_versions_page_shows_comparison_reliability_multipliers_and_users(admin_client: Any) -> None:
    customer = CustomerFactory(name="Acme")
    model = trained(customer)
    policy = PriorityPolicy.objects.create(customer=customer, name="Acme learned")
    save_policy_settings(
        policy=policy,
        values={
            **version_values(PolicyVersion()),
            "weights_source": WeightsSource.LEARNED,
            "learned_model": model,
        },
        note="",
        user=None,
    )
    pooled = ModelVersion.objects.get(customer=None)

    page = admin_client.get(reverse("admin:prioritization_modelversion_change", args=[pooled.pk]))

    assert page.status_code == 200
    content = page.content.decode()
    for name in ("learned", "gradient_boosting", "pooled", "manual"):
        assert f'data-model="{name}"' in content
    assert 'id="model-reliability"' in content
    assert 'data-feature="source"' in content
    assert "Referral" in content
    assert "No policy version uses this model." in content
    own = admin_client.get(
        reverse("admin:prioritization_modelversion_change", args=[model.pk])
    ).content.decode()
    assert "Acme learned v1" in own


def test_model_versions_are_read_only(admin_client: Any) -> None:
    model = trained(CustomerFactory())
    assert admin_client.get(reverse("admin:prioritization_modelversion_add")).status_code == 403
    assert (
        admin_client.post(reverse("admin:prioritization_modelversion_delete", args=[model.pk])).status_code
        == 403
    )
    page = admin_client.get(reverse("admin:prioritization_modelversion_change", args=[model.pk]))
    assert 'name="_save"' not in page.content.decode()


def test_train_now_starts_a_training_run_in_the_background(admin_client: Any, admin_user: User) -> None:
    assert 'class="train-now"' in admin_client.get(MODEL_LIST).content.decode()
    with mock.patch.object(tasks.train_models, "delay") as delay, time_machine.travel(T0, tick=False):
        response = admin_client.post(TRAIN_NOW, follow=True)

    delay.assert_called_once_with(
        trigger=TrainingTrigger.ADMIN, user_id=admin_user.pk, requested_at=T0.isoformat()
    )
    assert response.redirect_chain[-1][0] == MODEL_LIST
    assert "Training started in the background" in response.content.decode()


def test_train_now_with_the_queue_down_says_so_instead_of_failing(admin_client: Any) -> None:
    with mock.patch.object(tasks.train_models, "delay", side_effect=OperationalError("broker down")):
        response = admin_client.post(TRAIN_NOW, follow=True)
    assert response.status_code == 200
    assert (
        "Training could not be started: the task queue is unreachable (broker down)"
        in response.content.decode()
    )


def test_train_now_while_a_run_is_in_progress_says_so_and_starts_nothing(admin_client: Any) -> None:
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [TRAINING_LOCK_KEY])  # a run under way
        with mock.patch.object(tasks.train_models, "delay") as delay:
            response = admin_client.post(TRAIN_NOW, follow=True)

        delay.assert_not_called()
        assert response.redirect_chain[-1][0] == MODEL_LIST
        assert "A training run is already in progress" in response.content.decode()
        other.execute("SELECT pg_advisory_unlock(%s)", [TRAINING_LOCK_KEY])
    with mock.patch.object(tasks.train_models, "delay") as delay:
        admin_client.post(TRAIN_NOW)
    delay.assert_called_once()


def test_train_now_pressed_twice_before_a_worker_takes_it_trains_once(admin_client: Any) -> None:
    customer = CustomerFactory()
    campaign = CampaignFactory(customer=customer)
    add_outcomes(campaign, source="Referral", converted=60, not_converted=40, start=T0 - 3 * DAY)
    add_outcomes(campaign, source="Google", converted=10, not_converted=90, start=T0 - 2 * DAY)
    with mock.patch.object(tasks.train_models, "delay") as delay, time_machine.travel(T0, tick=False):
        admin_client.post(TRAIN_NOW)
        admin_client.post(TRAIN_NOW)  # a double click: both sent, the worker busy meanwhile
        first, second = (tasks.train_models(**call.kwargs) for call in delay.call_args_list)

    assert not first["skipped"]
    assert len(first["model_version_ids"]) == 2
    assert second["skipped"]
    assert "after this run was asked for" in second["reason"]
    assert ModelVersion.objects.filter(customer=customer).count() == 1
    # A press after that run trains again.
    with mock.patch.object(tasks.train_models, "delay") as delay, time_machine.travel(T0 + DAY, tick=False):
        admin_client.post(TRAIN_NOW)
        assert not tasks.train_models(**delay.call_args.kwargs)["skipped"]
    assert ModelVersion.objects.filter(customer=customer).count() == 2


def test_train_now_is_a_post_for_staff_allowed_to_add_models(client: Any, admin_client: Any) -> None:
    assert admin_client.get(TRAIN_NOW).status_code == 405
    staff = User.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    client.force_login(staff)
    assert 'class="train-now"' not in client.get(MODEL_LIST).content.decode()
    with mock.patch.object(tasks.train_models, "delay") as delay:
        assert client.post(TRAIN_NOW).status_code == 403
    delay.assert_not_called()


# --- Policies that use learned models -------------------------------------------------------------


def policy_form(policy: PriorityPolicy, **changes: Any) -> dict[str, Any]:
    version = policy.current_version
    assert version is not None
    data: dict[str, Any] = {"name": policy.name, "note": "", "base_version": version.number}
    for name, value in version_values(version).items():
        if isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, ModelVersion):
            value = value.pk
        data[name] = "" if value is None else value
    data.update(changes)
    return data


def test_switching_a_policy_to_learned_in_the_admin_picks_the_customers_newest_model(
    admin_client: Any,
) -> None:
    ensure_default_policy()
    customer = CustomerFactory()
    model = trained(customer)
    policy = PriorityPolicy.objects.create(customer=customer, name="Acme")
    policy.current_version = PolicyVersion.objects.create(policy=policy, number=1)
    policy.save()
    url = reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])

    form = admin_client.get(url).context["adminform"].form
    choices = list(form.fields["learned_model"].queryset)
    assert model in choices
    assert all(choice.customer_id in (None, customer.pk) for choice in choices)

    response = admin_client.post(url, policy_form(policy, weights_source=WeightsSource.LEARNED, note="learn"))

    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.current_version is not None
    assert policy.current_version.weights_source == WeightsSource.LEARNED
    assert policy.current_version.learned_model == model
    assert policy.current_version.params().base_rate == pytest.approx(model.base_rate)


def test_the_learned_model_list_offers_the_newest_models_and_the_one_in_use(
    admin_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_preview, "LEARNED_MODEL_CHOICES", 3)
    ensure_default_policy()
    customer = CustomerFactory()
    in_use, older, *newest = (model_of(customer) for _ in range(5))  # same trained_at: by id
    policy = PriorityPolicy.objects.create(customer=customer, name="Acme")
    policy.current_version = PolicyVersion.objects.create(
        policy=policy, number=1, weights_source=WeightsSource.LEARNED, learned_model=in_use
    )
    policy.save()
    url = reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])

    form = admin_client.get(url).context["adminform"].form
    assert set(form.fields["learned_model"].queryset) == {in_use, *newest}
    assert "The newest 3 models are offered, and the one in use." in form.fields["learned_model"].help_text
    response = admin_client.post(url, policy_form(policy, learned_model=older.pk, note="older"))
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()


def test_a_learned_share_outside_0_to_1_is_a_form_error(admin_client: Any) -> None:
    policy = PriorityPolicy.objects.select_related("current_version").get(
        pk=ensure_default_policy().policy_id
    )
    url = reverse("admin:prioritization_prioritypolicy_change", args=[policy.pk])

    response = admin_client.post(
        url, policy_form(policy, weights_source=WeightsSource.BLEND, learned_share="1.5")
    )

    assert response.status_code == 200
    assert "The learned share is between 0 (manual only) and 1 (learned only)." in response.content.decode()
