from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("leads", "0004_stage_scores")]

    operations: list[migrations.operations.base.Operation] = []
