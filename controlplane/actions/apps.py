from django.apps import AppConfig


class ActionsConfig(AppConfig):
    name = "controlplane.actions"
    label = "actions"
