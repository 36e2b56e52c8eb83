from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without locking out writes: on a large table the index takes a while, and it
    # waits for transactions already running. A build that fails leaves an INVALID index of
    # this name behind: `DROP INDEX CONCURRENTLY lead_open_id;` then migrate again.
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
