from django.db import migrations

# The staging table of lead upserts (leads.services): UNLOGGED because its rows live for
# one chunk of an import and need no crash safety; no index because every statement on
# it reads one small batch; batch_id defaults to the session setting set before COPY.
CREATE = """
CREATE UNLOGGED TABLE leads_lead_stage (
    batch_id uuid NOT NULL DEFAULT current_setting('leadrank.stage_batch')::uuid,
    staged_at timestamptz NOT NULL DEFAULT now(),
    customer_id bigint NOT NULL,
    campaign_id bigint NOT NULL,
    external_id text NOT NULL,
    lead_type text NOT NULL,
    city text NOT NULL,
    source text NOT NULL,
    last_activity timestamptz,
    stage text NOT NULL,
    pricing_plan text,
    rescheduled_at timestamptz,
    created_at timestamptz
)
"""


class Migration(migrations.Migration):
    dependencies = [("leads", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, "DROP TABLE leads_lead_stage")]
