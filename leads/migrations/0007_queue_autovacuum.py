from django.db import migrations

# leads_lead is a queue: every claim and outcome moves a row between the partial claim
# indexes, leaving a dead entry in the one it left until VACUUM removes it, and the
# planner's picture of those small partial indexes (held, waiting) goes stale fast. The
# default thresholds (20% of the table: 200,000 dead rows at 1M leads) let both drift for
# a long time; 2% keeps the scans short and the statistics fresh.
TUNED = "autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02"


class Migration(migrations.Migration):
    dependencies = [("leads", "0006_monitoring")]

    operations = [
        migrations.RunSQL(
            f"ALTER TABLE leads_lead SET ({TUNED})",
            "ALTER TABLE leads_lead RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)",
        )
    ]
