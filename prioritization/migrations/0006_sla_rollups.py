from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0005_alerts"), ("leads", "0006_monitoring")]

    operations: list[migrations.operations.base.Operation] = []
