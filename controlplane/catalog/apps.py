from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "controlplane.catalog"
    label = "catalog"

    def ready(self) -> None:
        from controlplane.catalog import receivers

        receivers.connect()
