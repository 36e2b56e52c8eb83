from django.db import migrations

# New leads are scored in Python while they are staged (prioritization.services.ArrivalScorer),
# so the insert takes their key, SLA deadline and due time as they are.
ADD = """
ALTER TABLE leads_lead_stage
    ADD COLUMN due_at timestamptz,
    ADD COLUMN priority_key double precision,
    ADD COLUMN sla_deadline timestamptz,
    ADD COLUMN scored_version integer
"""
DROP = """
ALTER TABLE leads_lead_stage
    DROP COLUMN due_at, DROP COLUMN priority_key, DROP COLUMN sla_deadline, DROP COLUMN scored_version
"""


class Migration(migrations.Migration):
    dependencies = [("leads", "0003_engine_fields")]

    operations = [migrations.RunSQL(ADD, DROP)]
