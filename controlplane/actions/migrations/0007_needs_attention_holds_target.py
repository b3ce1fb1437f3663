"""needs_attention keeps the target locked until resolved: resolved_at/resolved_by, and the one-per-target
index covers unresolved needs_attention actions. Those that ended before this rule counted as released, so
they are marked resolved at their end (no person is named)."""

from typing import Any

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def resolve_earlier(apps: Any, schema_editor: Any) -> None:
    ActionRun = apps.get_model("actions", "ActionRun")
    ActionRun.objects.filter(state="needs_attention").update(resolved_at=models.F("finished_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0006_action_state_expired"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="actionrun",
            name="resolved_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="actionrun",
            name="resolved_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(resolve_earlier, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="actionrun", name="one_active_action_per_target"),
        migrations.AddConstraint(
            model_name="actionrun",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("state__in", ("awaiting_approval", "queued", "running")),
                    models.Q(("resolved_at__isnull", True), ("state", "needs_attention")),
                    _connector="OR",
                ),
                fields=("target",),
                name="one_active_action_per_target",
            ),
        ),
    ]
