"""The actor's id stays in a hashed audit row when the user is deleted: no ON DELETE SET NULL (an UPDATE the
append-only trigger refuses, and a change to a hashed field) and no database constraint to enforce it.
``actor_name`` keeps who it was; only the column's foreign key constraint is dropped, no row is touched."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_history_filter_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="actor",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
