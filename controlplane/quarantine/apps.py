from django.apps import AppConfig


class QuarantineConfig(AppConfig):
    name = "controlplane.quarantine"
    label = "quarantine"
    verbose_name = "Quarantine reviews"

    def ready(self) -> None:
        from controlplane.actions.signals import action_finished
        from controlplane.quarantine.receivers import on_action_finished

        action_finished.connect(on_action_finished, dispatch_uid="quarantine-action-finished")
