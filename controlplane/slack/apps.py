from django.apps import AppConfig


class SlackConfig(AppConfig):
    name = "controlplane.slack"
    label = "slack"
    verbose_name = "Slack"
