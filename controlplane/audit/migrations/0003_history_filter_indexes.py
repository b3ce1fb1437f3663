"""The audit page's filters in its order: (event, seq) replaces the single-column event index (built
first), (actor_name, seq) is new. A filtered page of rare or old events is then one range scan."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only_trigger"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["event", "seq"], name="audit_event_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["actor_name", "seq"], name="audit_actor_idx"),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="event",
            field=models.CharField(max_length=64),
        ),
    ]
