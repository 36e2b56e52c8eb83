from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0006_sla_rollups")]

    operations: list[migrations.operations.base.Operation] = []
