from django.apps import AppConfig


class QuarantineConfig(AppConfig):
    name = "controlplane.quarantine"
    label = "quarantine"
    verbose_name = "Quarantine reviews"
