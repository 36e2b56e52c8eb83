import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0004_learned_models"), ("leads", "0005_historical_outcomes")]

    operations: list[migrations.operations.base.Operation] = [
        migrations.CreateModel(
            name="CampaignDemand",
            fields=[
                (
                    "campaign",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="leads.campaign",
                    ),
                ),
                ("last_asked_at", models.DateTimeField()),
                ("last_empty_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"verbose_name_plural": "campaign demand"},
        ),
        migrations.CreateModel(
            name="Alert",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("sla_at_risk", "Projected SLA attainment below target"),
                            ("empty_queue", "Campaign asked for with an empty queue"),
                        ],
                        max_length=20,
                    ),
                ),
                ("opened_at", models.DateTimeField()),
                ("closed_at", models.DateTimeField(blank=True, null=True)),
                ("checked_at", models.DateTimeField(help_text="Last evaluation that saw the condition.")),
                ("message", models.CharField(max_length=500)),
                ("detail", models.JSONField(blank=True, default=dict)),
                (
                    "opened_webhook",
                    models.CharField(
                        choices=[
                            ("none", "No webhook"),
                            ("pending", "Pending"),
                            ("delivered", "Delivered"),
                            ("failed", "Failed"),
                        ],
                        default="none",
                        max_length=10,
                    ),
                ),
                (
                    "resolved_webhook",
                    models.CharField(
                        choices=[
                            ("none", "No webhook"),
                            ("pending", "Pending"),
                            ("delivered", "Delivered"),
                            ("failed", "Failed"),
                        ],
                        default="none",
                        max_length=10,
                    ),
                ),
                ("webhook_error", models.CharField(blank=True, default="", max_length=500)),
                (
                    "campaign",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="leads.campaign",
                    ),
                ),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="leads.customer"
                    ),
                ),
            ],
            options={
                "ordering": ["-opened_at", "-id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("kind__in", ["sla_at_risk", "empty_queue"])),
                        name="alert_kind_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("opened_webhook__in", ["none", "pending", "delivered", "failed"]),
                            ("resolved_webhook__in", ["none", "pending", "delivered", "failed"]),
                        ),
                        name="alert_webhook_state_valid",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("campaign__isnull", True), ("kind", "sla_at_risk")),
                            models.Q(("campaign__isnull", False), ("kind", "empty_queue")),
                            _connector="OR",
                        ),
                        name="alert_campaign_matches_kind",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("closed_at__isnull", True),
                            ("closed_at__gte", models.F("opened_at")),
                            _connector="OR",
                        ),
                        name="alert_closed_after_opened",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("closed_at__isnull", True)),
                        fields=("kind", "customer", "campaign"),
                        name="alert_one_open_per_condition",
                        nulls_distinct=False,
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="SlaSnapshot",
            fields=[
                (
                    "customer",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="leads.customer",
                    ),
                ),
                ("computed_at", models.DateTimeField()),
                ("target", models.FloatField()),
                ("in_sla", models.PositiveIntegerField()),
                ("missed", models.PositiveIntegerField()),
                ("pending", models.PositiveIntegerField()),
                ("at_risk", models.PositiveIntegerField(help_text="Of the pending leads.")),
                ("contractors_active", models.PositiveIntegerField()),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("at_risk__lte", models.F("pending"))),
                        name="sla_snapshot_at_risk_pending",
                    )
                ],
            },
        ),
    ]
