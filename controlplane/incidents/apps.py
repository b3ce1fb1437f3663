from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "controlplane.incidents"
    label = "incidents"

    def ready(self) -> None:
        from controlplane.actions.signals import action_decided, action_finished, action_requested
        from controlplane.incidents.receivers import (
            record_action_decision,
            record_action_outcome,
            record_action_request,
        )

        action_requested.connect(record_action_request, dispatch_uid="incident-timeline-requests")
        action_finished.connect(record_action_outcome, dispatch_uid="incident-timeline")
        action_decided.connect(record_action_decision, dispatch_uid="incident-timeline-decisions")
