from django.apps import AppConfig


class RunbooksConfig(AppConfig):
    name = "runbooks"
    label = "runbooks"
    verbose_name = "Runbooks"

    def ready(self) -> None:
        from controlplane.actions.signals import action_finished
        from runbooks.receivers import action_step_finished

        action_finished.connect(action_step_finished, dispatch_uid="runbook-action-steps")
