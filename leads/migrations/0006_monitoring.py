from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("leads", "0005_historical_outcomes")]

    operations: list[migrations.operations.base.Operation] = []
