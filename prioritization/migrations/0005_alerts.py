from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0004_learned_models"), ("leads", "0005_historical_outcomes")]

    operations: list[migrations.operations.base.Operation] = []
