from django.apps import AppConfig


class SlackConfig(AppConfig):
    name = "controlplane.slack"
    label = "slack"
    verbose_name = "Slack"

    def ready(self) -> None:
        from controlplane.actions import signals as actions
        from controlplane.incidents import signals as incidents
        from controlplane.slack import receivers

        incidents.incident_opened.connect(receivers.on_incident_opened, dispatch_uid="slack-incident-opened")
        incidents.incident_changed.connect(receivers.on_incident_changed, dispatch_uid="slack-incident-changed")
        actions.action_requested.connect(receivers.on_action_requested, dispatch_uid="slack-action-requested")
        actions.action_decided.connect(receivers.on_action_decided, dispatch_uid="slack-action-decided")
        actions.action_started.connect(receivers.on_action_started, dispatch_uid="slack-action-started")
        actions.action_progress.connect(receivers.on_action_progress, dispatch_uid="slack-action-progress")
        actions.action_finished.connect(receivers.on_action_finished, dispatch_uid="slack-action-finished")
