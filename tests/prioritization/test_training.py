"""Training from the database: the signal, the beat task, stored versions, learned policies."""

import datetime as dt
import itertools
import math
import threading
from typing import Any

import psycopg
import pytest
import time_machine
from django.db import connection

from leads.models import Campaign, CloseReason, Lead, QueueStatus
from prioritization import services as services_module
from prioritization import tasks, training
from prioritization.learning import BOOSTED, LEARNED, MANUAL, POOLED
from prioritization.models import (
    ModelVersion,
    PolicyVersion,
    PriorityPolicy,
    TrainingTrigger,
    WeightsSource,
    version_values,
)
from prioritization.schedules import SCHEDULES
from prioritization.scoring import UNKNOWN_VALUE
from prioritization.services import (
    claim_next_lead,
    ranked_leads_at,
    record_outcome,
    rescore_leads,
    save_policy_settings,
)
from prioritization.training import (
    TRAINING_LOCK_KEY,
    TrainingDataError,
    evaluate_customer,
    gather_training_data,
    train_models,
)
from tests.factories import CampaignFactory, ContractorFactory, CustomerFactory, campaign_calling_all_day
from tests.prioritization.conftest import T0, add_lead, set_policy

_ids = itertools.count(1)
DAY = dt.timedelta(days=1)


def add_outcomes(
    campaign: Campaign,
    *,
    source: str,
    converted: int,
    not_converted: int,
    start: dt.datetime,
    city: str = "Pune",
    yes: str = CloseReason.CONVERTED,
    no: str = CloseReason.NOT_INTERESTED,
    last_activity_before: dt.timedelta | None = None,
) -> None:
    """Closed leads of the campaign, one a minute from ``start``, converted ones first."""
    leads = []
    for i in range(converted + not_converted):
        created = start + i * dt.timedelta(minutes=1)
        leads.append(
            Lead(
                customer_id=campaign.customer_id,
                campaign=campaign,
                external_id=f"o-{next(_ids)}",
                lead_type="live",
                city=city,
                source=source,
                pricing_plan="starter",
                created_at=created,
                due_at=created,
                last_activity=None if last_activity_before is None else created - last_activity_before,
                status=QueueStatus.CLOSED,
                closed_reason=yes if i < converted else no,
                closed_at=created,
            )
        )
    Lead.objects.bulk_create(leads)


def referral_converts(campaign: Campaign, *, start: dt.datetime = T0 - 30 * DAY) -> None:
    """Referral leads convert 60%, Google leads 10%."""
    add_outcomes(campaign, source="Referral", converted=120, not_converted=80, start=start)
    add_outcomes(campaign, source="Google", converted=20, not_converted=180, start=start + DAY)


# --- The training signal ----------------------------------------------------------------------


@pytest.mark.django_db
def test_outcomes_recorded_by_the_contract_app_are_the_signal_and_no_answers_are_left_out(customer):
    campaign = campaign_calling_all_day(customer)
    contractor = ContractorFactory(campaigns=[campaign])
    dispositions = ["converted", "not_interested", "do_not_call", "wrong_number", "no_answer", "busy"]
    for index, disposition in enumerate(dispositions):
        lead = add_lead(campaign, now=T0, source=f"s{index}", created_at=T0.isoformat())
        claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=T0)
        assert claim is not None
        assert claim.lead.pk == lead.pk
        record_outcome(lead_id=lead.pk, contractor_id=contractor.pk, disposition=disposition, now=T0)
    withdrawn = add_lead(campaign, now=T0, source="s-withdrawn", created_at=T0.isoformat())
    Lead.objects.filter(pk=withdrawn.pk).update(
        status=QueueStatus.CLOSED, closed_reason=CloseReason.WITHDRAWN, closed_at=T0
    )

    data = gather_training_data(start=T0 - DAY, end=T0 + DAY, holdout_share=0.2)

    labels = dict(zip(data.sources, data.dataset.labels.tolist(), strict=True))
    assert labels == {"s0": 1.0, "s1": 0.0, "s2": 0.0}


@pytest.mark.django_db
def test_imported_past_outcomes_count_and_the_window_bounds_them(campaign):
    add_outcomes(
        campaign,
        source="Referral",
        converted=3,
        not_converted=2,
        start=T0 - 10 * DAY,
        yes=CloseReason.PAST_CONVERTED,
        no=CloseReason.PAST_NOT_CONVERTED,
    )
    add_outcomes(campaign, source="Old", converted=1, not_converted=1, start=T0 - 400 * DAY)

    data = gather_training_data(start=T0 - 365 * DAY, end=T0, holdout_share=0.2)

    assert (data.outcomes, data.count(None, positive=True)) == (5, 3)
    assert data.window_start == T0 - 10 * DAY
    assert data.window_end == T0 - 10 * DAY + 4 * dt.timedelta(minutes=1)


@pytest.mark.django_db
def test_the_holdout_is_the_newest_fifth_of_outcomes_across_customers(campaign):
    other = CampaignFactory()
    add_outcomes(campaign, source="old", converted=10, not_converted=30, start=T0 - 20 * DAY)
    add_outcomes(other, source="new", converted=4, not_converted=6, start=T0 - 2 * DAY)

    data = gather_training_data(start=T0 - 365 * DAY, end=T0, holdout_share=0.2)

    held = {source for source, h in zip(data.sources, data.holdout.tolist(), strict=True) if h}
    assert held == {"new"}
    assert data.count(None, holdout=True) == 10


@pytest.mark.django_db
def test_recency_and_empty_values_become_the_scoring_paths_bins(campaign):
    add_outcomes(
        campaign,
        source="",
        converted=1,
        not_converted=1,
        start=T0 - DAY,
        last_activity_before=dt.timedelta(hours=3),
    )
    add_outcomes(campaign, source="web", converted=1, not_converted=1, start=T0 - DAY)

    data = gather_training_data(start=T0 - 365 * DAY, end=T0, holdout_share=0.2)

    source, recency = data.dataset.columns[1].tolist(), data.dataset.columns[3].tolist()
    assert sorted(zip(source, recency, strict=True)) == sorted(
        [(UNKNOWN_VALUE, "1-24 h"), (UNKNOWN_VALUE, "1-24 h"), ("web", UNKNOWN_VALUE), ("web", UNKNOWN_VALUE)]
    )


# --- Training runs ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_beat_task_trains_and_stores_versions_with_window_counts_and_metrics():
    first, second = campaign_calling_all_day(CustomerFactory()), campaign_calling_all_day(CustomerFactory())
    referral_converts(first)
    add_outcomes(second, source="Google", converted=50, not_converted=50, start=T0 - 20 * DAY)
    add_outcomes(second, source="Referral", converted=10, not_converted=90, start=T0 - 19 * DAY)

    with time_machine.travel(T0, tick=False):
        result = tasks.train_models()

    assert result["outcomes"] == 600
    assert len(result["model_version_ids"]) == 3
    pooled = ModelVersion.objects.get(customer=None)
    mine = ModelVersion.objects.get(customer=first.customer)
    assert (pooled.number, mine.number) == (1, 1)
    assert pooled.trigger == TrainingTrigger.SCHEDULE
    assert pooled.trained_at == T0
    assert (pooled.training_rows, pooled.all_rows, mine.training_rows) == (600, 600, 400)
    assert (mine.positive_rows, mine.holdout_rows) == (140, 0)  # the newest fifth is the second's
    assert pooled.holdout_rows == 120
    assert pooled.window_start == T0 - 30 * DAY
    assert mine.base_rate == pytest.approx(140 / 400)
    assert [m["name"] for m in pooled.metrics["holdout"]] == [LEARNED, BOOSTED, POOLED, MANUAL]
    assert pooled.metrics["holdout"][0]["rows"] == 120
    assert pooled.metrics["holdout"][0]["auc"] > 0.5
    assert mine.multipliers["source"]["Referral"] > 3 * mine.multipliers["source"]["Google"]
    assert set(mine.multipliers) == {"city", "source", "stage", "recency"}
    assert result["seconds"]["total"] >= 0

    with time_machine.travel(T0 + DAY, tick=False):
        tasks.train_models(trigger=TrainingTrigger.ADMIN)
    assert list(ModelVersion.objects.filter(customer=first.customer).values_list("number", flat=True)) == [
        2,
        1,
    ]


@pytest.mark.django_db
def test_train_now_records_who_asked_unless_they_are_gone(campaign, admin_user):
    referral_converts(campaign)

    train_models(now=T0, trigger=TrainingTrigger.ADMIN, user_id=admin_user.pk)
    train_models(now=T0, trigger=TrainingTrigger.ADMIN, user_id=admin_user.pk + 1000)

    assert list(ModelVersion.objects.filter(customer=None).values_list("number", "created_by")) == [
        (2, None),
        (1, admin_user.pk),
    ]


@pytest.mark.django_db
def test_the_training_task_runs_daily_from_beat():
    (schedule,) = [s for s in SCHEDULES if s.task == "prioritization.tasks.train_models"]
    assert schedule.every_seconds == 24 * 3600


@pytest.mark.django_db
def test_without_both_outcomes_nothing_is_stored_and_the_summary_says_why(campaign):
    add_outcomes(campaign, source="web", converted=0, not_converted=30, start=T0 - DAY)

    summary = train_models(now=T0)

    assert "only one outcome" in summary.reason
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_a_second_training_run_while_one_runs_returns_at_once(campaign):
    referral_converts(campaign)
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [TRAINING_LOCK_KEY])
        summary = train_models(now=T0)
    assert summary.skipped
    assert summary.reason == "Skipped: a training run is already in progress."
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_training_runs_at_once_store_one_version_per_model(monkeypatch):
    # Beat's run and an admin's "train now" on two workers: the second returns at once while
    # the first trains, rather than storing a second version of every model.
    campaign = campaign_calling_all_day(CustomerFactory())
    referral_converts(campaign)
    gathering, second_returned = threading.Event(), threading.Event()
    gather = training.gather_training_data

    def gather_until_the_second_returned(**kwargs: Any) -> Any:
        if threading.current_thread().name == "first-run":
            gathering.set()
            assert second_returned.wait(timeout=30)
        return gather(**kwargs)

    monkeypatch.setattr(training, "gather_training_data", gather_until_the_second_returned)
    summaries: dict[str, training.TrainingSummary] = {}

    def first_run() -> None:
        try:
            summaries["first"] = train_models(now=T0)
        finally:
            connection.close()

    first = threading.Thread(target=first_run, name="first-run")
    first.start()
    try:
        assert gathering.wait(timeout=30)
        summaries["second"] = train_models(now=T0, trigger=TrainingTrigger.ADMIN)
    finally:
        second_returned.set()
        first.join()

    assert summaries["second"].skipped
    assert summaries["second"].model_version_ids == []
    assert not summaries["first"].skipped
    assert ModelVersion.objects.filter(customer=campaign.customer).count() == 1
    assert ModelVersion.objects.filter(customer=None).count() == 1


@pytest.mark.django_db
def test_a_learned_policy_without_outcomes_of_its_own_gets_the_pooled_multipliers():
    trained = campaign_calling_all_day(CustomerFactory())
    referral_converts(trained)
    newcomer = CustomerFactory()
    policy = PriorityPolicy.objects.create(customer=newcomer, name="Newcomer")
    save_policy_settings(
        policy=policy,
        values={**_defaults(), "weights_source": WeightsSource.LEARNED},
        note="learn",
        user=None,
    )

    train_models(now=T0)

    own = ModelVersion.objects.get(customer=newcomer)
    pooled = ModelVersion.objects.get(customer=None)
    assert own.training_rows == 0
    assert own.multipliers == pooled.multipliers
    assert own.base_rate == pooled.base_rate
    policy.refresh_from_db()
    assert policy.current_version is not None
    assert policy.current_version.learned_model == own
    assert policy.current_version.note == "learned model v1 trained"


@pytest.mark.django_db
def test_a_retraining_that_learns_nothing_new_leaves_learned_policies_alone(customer):
    referral_converts(campaign_calling_all_day(customer))
    policy = PriorityPolicy.objects.create(customer=customer, name="Learned")
    save_policy_settings(
        policy=policy, values={**_defaults(), "weights_source": WeightsSource.LEARNED}, note="", user=None
    )

    first = train_models(now=T0)
    second = train_models(now=T0 + dt.timedelta(hours=1))

    assert len(first.policy_version_ids) == 1
    assert second.policy_version_ids == []
    assert len(second.model_version_ids) == 2  # the run itself is still recorded
    add_outcomes(
        campaign_calling_all_day(customer), source="Google", converted=30, not_converted=10, start=T0
    )
    third = train_models(now=T0 + dt.timedelta(hours=2))
    assert len(third.policy_version_ids) == 1


@pytest.mark.django_db
def test_training_applies_its_model_on_top_of_an_admin_edit_saved_meanwhile(customer, monkeypatch):
    referral_converts(campaign_calling_all_day(customer))
    policy = PriorityPolicy.objects.create(customer=customer, name="Learned")
    save_policy_settings(
        policy=policy, values={**_defaults(), "weights_source": WeightsSource.LEARNED}, note="", user=None
    )
    real_save = services_module.save_policy_settings
    edited = []

    def staff_saves_first(**kwargs: Any) -> Any:
        if not edited:  # a staff member saves a new SLA window between training's read and write
            edited.append(
                real_save(
                    policy=policy,
                    values={**version_values(policy.versions.latest("number")), "sla_window_minutes": 45.0},
                    note="staff edit",
                    user=None,
                )
            )
        return real_save(**kwargs)

    monkeypatch.setattr(services_module, "save_policy_settings", staff_saves_first)

    summary = train_models(now=T0)

    policy.refresh_from_db()
    current = policy.current_version
    assert summary.policy_version_ids == [current.pk]
    assert current.number == 3  # v1 set up, v2 the staff edit, v3 the model on top of it
    assert current.sla_window_minutes == 45.0  # the edit is kept
    assert current.learned_model is not None


def _defaults() -> dict[str, Any]:
    return version_values(PolicyVersion())


# --- A learned policy on the claim path ------------------------------------------------------------


@pytest.mark.django_db
def test_a_policy_set_to_learned_changes_the_next_lead_accordingly(customer):
    campaign = campaign_calling_all_day(customer)
    referral_converts(campaign)
    contractor = ContractorFactory(campaigns=[campaign])
    # Manual weights (none): the Google lead, which has waited less, goes first.
    referral = add_lead(
        campaign, now=T0, source="Referral", created_at=(T0 - dt.timedelta(minutes=5)).isoformat()
    )
    google = add_lead(
        campaign, now=T0, source="Google", created_at=(T0 - dt.timedelta(minutes=1)).isoformat()
    )
    assert ranked_leads_at(campaign_ids=[campaign.pk], now=T0)[0].candidate.lead_id == google.pk

    policy = PriorityPolicy.objects.create(customer=customer, name="Learned")
    save_policy_settings(
        policy=policy, values={**_defaults(), "weights_source": WeightsSource.LEARNED}, note="", user=None
    )
    train_models(now=T0)
    rescore_leads()

    claim = claim_next_lead(contractor_id=contractor.pk, campaign_ids=[campaign.pk], now=T0)

    assert claim is not None
    assert claim.lead.pk == referral.pk
    model = ModelVersion.objects.get(customer=customer)
    reasons = claim.decision.reasons
    assert reasons[0] == f"learned model v1: base rate {model.base_rate:.0%}"
    assert reasons[1] == f"source = Referral: ×{model.multipliers['source']['Referral']:.2g}"
    assert reasons[-1].startswith("waited 5 min: ×")
    # The factors multiply back to the score the decision logged.
    product = math.prod(float(r.rsplit("×", 1)[1]) for r in reasons[1:])
    assert product == pytest.approx(claim.decision.score, rel=0.1)


@pytest.mark.django_db
def test_a_blend_sits_between_manual_and_learned_weights(customer):
    campaign = campaign_calling_all_day(customer)
    referral_converts(campaign)
    train_models(now=T0)
    model = ModelVersion.objects.get(customer=customer)
    version = set_policy(
        customer,
        source_weights={"Google": 4.0},
        weights_source=WeightsSource.BLEND,
        learned_share=0.5,
        learned_model=model,
    )

    params = version.params()

    learned = model.multipliers["source"]
    assert params.source_weights["Google"] == pytest.approx(math.sqrt(4.0 * learned["Google"]))
    assert params.source_weights["Referral"] == pytest.approx(math.sqrt(learned["Referral"]))
    assert params.model_note == "blend of manual weights and learned model v1 (50% learned)"
    manual = set_policy(customer, source_weights={"Google": 4.0}, weights_source=WeightsSource.MANUAL)
    assert manual.params().source_weights == {"Google": 4.0}
    assert manual.params().base_rate is None


@pytest.mark.django_db
def test_a_learned_policy_before_any_training_scores_with_its_manual_weights(customer):
    version = set_policy(customer, source_weights={"Google": 4.0}, weights_source=WeightsSource.LEARNED)
    assert version.params().source_weights == {"Google": 4.0}
    assert version.params().base_rate is None


# --- Evaluating one customer ------------------------------------------------------------------------


@pytest.mark.django_db
def test_evaluating_a_customer_compares_every_model_on_its_newest_outcomes(customer):
    campaign = campaign_calling_all_day(customer)
    set_policy(customer, source_weights={"Referral": 3.0})
    add_outcomes(campaign, source="Referral", converted=120, not_converted=80, start=T0 - 30 * DAY)
    add_outcomes(campaign, source="Google", converted=20, not_converted=180, start=T0 - 29 * DAY)
    add_outcomes(campaign, source="Referral", converted=30, not_converted=20, start=T0 - 5 * DAY)
    add_outcomes(campaign, source="Google", converted=5, not_converted=45, start=T0 - 4 * DAY)

    evaluation = evaluate_customer(customer_id=customer.pk, now=T0)

    assert (evaluation.customer_outcomes, evaluation.holdout_rows, evaluation.train_rows) == (500, 100, 400)
    assert list(evaluation.metrics) == [LEARNED, BOOSTED, POOLED, MANUAL]
    assert evaluation.metrics[LEARNED].auc == pytest.approx(evaluation.metrics[MANUAL].auc)  # same ranking
    assert evaluation.metrics[MANUAL].auc is not None
    assert evaluation.metrics[MANUAL].auc > 0.7
    assert not ModelVersion.objects.exists()  # evaluating stores nothing


@pytest.mark.django_db
def test_evaluating_an_unknown_customer_or_one_without_outcomes_says_so(customer):
    with pytest.raises(TrainingDataError, match="no customer 0"):
        evaluate_customer(customer_id=0, now=T0)
    with pytest.raises(TrainingDataError, match="has no outcomes"):
        evaluate_customer(customer_id=customer.pk, now=T0)
