from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "controlplane.api"
    label = "api"

    def ready(self) -> None:
        from controlplane.actions.signals import action_finished
        from controlplane.api import receivers, waiting

        receivers.connect()
        action_finished.connect(waiting.publish_finished, dispatch_uid="api-action-waiters")
