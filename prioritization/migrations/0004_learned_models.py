from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0003_policy_ordering")]

    operations: list[migrations.operations.base.Operation] = []
