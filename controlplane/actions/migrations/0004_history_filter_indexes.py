"""The history's keyset order after each filter of the history pages (state, target, environment, verb):
a page filtered on a rare value is then one range scan, not a walk of the whole history. The composite
indexes on state and target replace the single-column state index and (target, -requested_at); each new
index is built before the one it replaces is dropped."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("actions", "0003_history_keyset_index"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="actionrun",
            index=models.Index(fields=["state", "requested_at", "id"], name="action_state_history_idx"),
        ),
        migrations.AddIndex(
            model_name="actionrun",
            index=models.Index(fields=["target", "requested_at", "id"], name="action_target_history_idx"),
        ),
        migrations.AddIndex(
            model_name="actionrun",
            index=models.Index(fields=["environment", "requested_at", "id"], name="action_env_history_idx"),
        ),
        migrations.AddIndex(
            model_name="actionrun",
            index=models.Index(fields=["verb", "requested_at", "id"], name="action_verb_history_idx"),
        ),
        migrations.RemoveIndex(
            model_name="actionrun",
            name="action_target_time_idx",
        ),
        migrations.AlterField(
            model_name="actionrun",
            name="state",
            field=models.CharField(
                choices=[
                    ("awaiting_approval", "Awaiting Approval"),
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                    ("rejected", "Rejected"),
                    ("needs_attention", "Needs Attention"),
                ],
                max_length=24,
            ),
        ),
    ]
