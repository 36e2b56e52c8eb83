import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("leads", "0005_historical_outcomes")]

    operations: list[migrations.operations.base.Operation] = [
        # SLA figures: leads of a customer created in a range (prioritization.sla).
        migrations.AddIndex(
            model_name="lead",
            index=models.Index(models.F("customer"), models.F("created_at"), name="lead_customer_created"),
        ),
        # Alerts: each customer's optional webhook (prioritization.alerts).
        migrations.AddField(
            model_name="customer",
            name="alert_webhook_url",
            field=models.URLField(
                blank=True,
                db_default="",
                default="",
                help_text="Optional. Alerts (SLA at risk, empty queue) are POSTed here as JSON when they "
                "open and when they clear.",
                max_length=500,
                validators=[django.core.validators.URLValidator(schemes=["http", "https"])],
            ),
        ),
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.CheckConstraint(
                condition=models.Q(("alert_webhook_url", ""), ("alert_webhook_url__regex", "^https?://"), _connector="OR"),
                name="customer_alert_webhook_http",
            ),
        ),
        # Metrics: the leases-expired counter (prioritization.metrics).
        migrations.AddIndex(
            model_name="leadevent",
            index=models.Index(
                models.F("at"), condition=models.Q(("kind", "lease_expired")), name="lead_event_lease_expired"
            ),
        ),
    ]
