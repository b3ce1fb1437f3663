"""The action history's keyset order: an index on (requested_at, id), which also serves every query the
single-column requested_at index served; that one is dropped after the new one is built."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0002_roles"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="actionrun",
            index=models.Index(fields=["requested_at", "id"], name="action_history_idx"),
        ),
        migrations.AlterField(
            model_name="actionrun",
            name="requested_at",
            field=models.DateTimeField(auto_now_add=True),
        ),
    ]
