from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "controlplane.api"
    label = "api"

    def ready(self) -> None:
        from controlplane.api import receivers, schema  # noqa: F401 (schema: registers its OpenAPI extensions)

        receivers.connect()
