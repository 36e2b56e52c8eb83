from django.db import migrations


def create_default_policy(apps, schema_editor):  # type: ignore[no-untyped-def]
    PriorityPolicy = apps.get_model("prioritization", "PriorityPolicy")
    PolicyVersion = apps.get_model("prioritization", "PolicyVersion")
    if PriorityPolicy.objects.filter(customer__isnull=True).exists():
        return
    policy = PriorityPolicy.objects.create(name="Default policy")
    version = PolicyVersion.objects.create(policy=policy, number=1, note="Defaults")
    policy.current_version = version
    policy.save(update_fields=["current_version"])


class Migration(migrations.Migration):
    dependencies = [("prioritization", "0001_initial")]

    operations = [migrations.RunPython(create_default_policy, migrations.RunPython.noop)]
