import django.contrib.postgres.fields
import django.db.models.deletion
import django.db.models.expressions
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0005_alerts"), ("leads", "0006_monitoring")]

    operations: list[migrations.operations.base.Operation] = [
        migrations.CreateModel(
            name="SlaDailyRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                (
                    "live_leads",
                    models.PositiveIntegerField(help_text="Leads that count for SLA (in SLA + missed + pending)."),
                ),
                ("in_sla", models.PositiveIntegerField()),
                ("missed", models.PositiveIntegerField()),
                ("pending", models.PositiveIntegerField(default=0)),
                (
                    "stale_leads",
                    models.PositiveIntegerField(default=0, help_text="Leads sent as stale: never counted."),
                ),
                (
                    "tat_counts",
                    django.contrib.postgres.fields.ArrayField(base_field=models.PositiveIntegerField(), size=None),
                ),
                ("computed_at", models.DateTimeField()),
                (
                    "campaign",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="leads.campaign",
                    ),
                ),
                (
                    "customer",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="leads.customer",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(models.F("customer"), models.F("day"), name="sla_rollup_customer_day")],
                "constraints": [
                    models.UniqueConstraint(fields=("campaign", "day"), name="sla_rollup_one_per_campaign_day"),
                    models.CheckConstraint(
                        condition=models.Q(
                            (
                                "live_leads",
                                django.db.models.expressions.CombinedExpression(
                                    django.db.models.expressions.CombinedExpression(
                                        models.F("in_sla"), "+", models.F("missed")
                                    ),
                                    "+",
                                    models.F("pending"),
                                ),
                            )
                        ),
                        name="sla_rollup_counts_add_up",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="SlaRollupDay",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("window_minutes", models.FloatField()),
                (
                    "tat_buckets",
                    models.PositiveSmallIntegerField(help_text="Length of the histogram the rows were made with."),
                ),
                ("computed_at", models.DateTimeField()),
                (
                    "customer",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="leads.customer",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("customer", "day"), name="sla_rollup_day_one_per_customer_day")
                ],
            },
        ),
    ]
