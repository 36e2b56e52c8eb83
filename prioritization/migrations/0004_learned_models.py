import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("prioritization", "0003_policy_ordering"),
        ("leads", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="policyversion",
            name="learned_share",
            field=models.FloatField(
                default=0.5,
                help_text="Blend only: the learned model's share, 0 to 1 (0.5 = geometric mean of manual and learned multipliers).",
            ),
        ),
        migrations.AddField(
            model_name="policyversion",
            name="weights_source",
            field=models.CharField(
                choices=[
                    ("manual", "Manual weights"),
                    ("learned", "Learned model"),
                    ("blend", "Blend of manual weights and learned model"),
                ],
                default="manual",
                help_text="Learned: the model's multipliers for city, source, stage and last-activity recency replace the manual ones (plan weights and time decay stay). Blend: both, mixed in log space.",
                max_length=10,
            ),
        ),
        migrations.CreateModel(
            name="ModelVersion",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("trained_at", models.DateTimeField()),
                (
                    "trigger",
                    models.CharField(
                        choices=[
                            ("schedule", "Daily schedule"),
                            ("admin", "Train now (admin)"),
                            ("command", "Command line"),
                        ],
                        max_length=10,
                    ),
                ),
                ("window_start", models.DateTimeField(blank=True, null=True)),
                ("window_end", models.DateTimeField(blank=True, null=True)),
                (
                    "training_rows",
                    models.PositiveIntegerField(help_text="This customer's outcomes (all, for the pooled model)."),
                ),
                ("positive_rows", models.PositiveIntegerField(help_text="Of which converted.")),
                (
                    "holdout_rows",
                    models.PositiveIntegerField(
                        help_text="Of which in the time-ordered holdout (the newest 20% of outcomes) behind the metrics."
                    ),
                ),
                ("all_rows", models.PositiveIntegerField(help_text="Outcomes of every customer in the fit.")),
                (
                    "base_rate",
                    models.FloatField(help_text="Conversion rate of the outcomes (pooled rate without any)."),
                ),
                (
                    "multipliers",
                    models.JSONField(
                        default=dict,
                        help_text='Feature → value → odds multiplier, e.g. {"source": {"Referral": 2.1}}.',
                    ),
                ),
                ("metrics", models.JSONField(default=dict)),
                ("settings", models.JSONField(default=dict)),
                ("training_seconds", models.FloatField(default=0.0)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "customer",
                    models.ForeignKey(
                        blank=True,
                        help_text="Empty for the pooled model (every customer's outcomes): the prior of customers' models.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="model_versions",
                        to="leads.customer",
                    ),
                ),
            ],
            options={"ordering": ["-trained_at", "-id"]},
        ),
        migrations.AddField(
            model_name="policyversion",
            name="learned_model",
            field=models.ForeignKey(
                blank=True,
                help_text="The model version in use. Training points learned and blend policies at each new version; left empty, saving picks the newest model of the policy's customer.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="policy_versions",
                to="prioritization.modelversion",
            ),
        ),
        migrations.AddConstraint(
            model_name="policyversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("weights_source__in", ["manual", "learned", "blend"])),
                name="policy_weights_source_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="policyversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("learned_share__gte", 0), ("learned_share__lte", 1)),
                name="policy_learned_share_in_0_1",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelversion",
            constraint=models.UniqueConstraint(
                fields=("customer", "number"), name="model_version_number_unique", nulls_distinct=False
            ),
        ),
        migrations.AddConstraint(
            model_name="modelversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("trigger__in", ["schedule", "admin", "command"])),
                name="model_version_trigger_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("base_rate__gte", 0), ("base_rate__lte", 1)),
                name="model_version_base_rate_in_0_1",
            ),
        ),
    ]
