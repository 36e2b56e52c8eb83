from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without locking out writes: on a large table the index takes a while.
    atomic = False

    dependencies = [
        ("leads", "0012_import_job_sent_at"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="lead",
            index=models.Index(
                models.F("id"),
                condition=models.Q(("status", "closed"), _negated=True),
                name="lead_open_id",
            ),
        ),
    ]
