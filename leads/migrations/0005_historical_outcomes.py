from django.db import migrations, models

# Files of past leads carry an outcome per row (a mapped "converted" column): staged with
# the lead, it makes the upsert store the lead closed as past_converted / past_not_converted.
ADD_STAGE_COLUMN = "ALTER TABLE leads_lead_stage ADD COLUMN converted boolean"
DROP_STAGE_COLUMN = "ALTER TABLE leads_lead_stage DROP COLUMN converted"


class Migration(migrations.Migration):
    dependencies = [("leads", "0004_stage_scores")]

    operations = [
        migrations.RunSQL(ADD_STAGE_COLUMN, DROP_STAGE_COLUMN),
        migrations.RemoveConstraint(model_name="lead", name="lead_closed_reason_valid"),
        migrations.AlterField(
            model_name="lead",
            name="closed_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("converted", "Converted"),
                    ("not_interested", "Not interested"),
                    ("wrong_number", "Wrong number"),
                    ("do_not_call", "Do not call"),
                    ("withdrawn", "Withdrawn by the customer"),
                    ("past_converted", "Converted (imported past outcome)"),
                    ("past_not_converted", "Not converted (imported past outcome)"),
                ],
                default="",
                max_length=20,
            ),
        ),
        migrations.AddConstraint(
            model_name="lead",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("closed_reason", ""),
                    (
                        "closed_reason__in",
                        [
                            "converted",
                            "not_interested",
                            "wrong_number",
                            "do_not_call",
                            "withdrawn",
                            "past_converted",
                            "past_not_converted",
                        ],
                    ),
                    _connector="OR",
                ),
                name="lead_closed_reason_valid",
            ),
        ),
    ]
