from django.db import migrations

EMERGENCY_GROUP = "emergency_approver"  # approvals.models.EMERGENCY_GROUP at the time


def create_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name=EMERGENCY_GROUP)


class Migration(migrations.Migration):
    """The group whose members may bypass approval and freeze windows in an emergency:
    it exists from the start so admins only have to add people to it."""

    dependencies = [
        ("approvals", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_group, migrations.RunPython.noop)]
