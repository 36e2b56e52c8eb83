from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("leads", "0005_historical_outcomes")]

    operations: list[migrations.operations.base.Operation] = [
        # SLA figures: leads of a customer created in a range (prioritization.sla).
        migrations.AddIndex(
            model_name="lead",
            index=models.Index(models.F("customer"), models.F("created_at"), name="lead_customer_created"),
        ),
    ]
