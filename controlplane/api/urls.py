from django.urls import path

from controlplane.api import quarantine, views

app_name = "api"

urlpatterns = [
    path("targets", views.TargetList.as_view(), name="targets"),
    path("targets/<str:key>", views.TargetDetail.as_view(), name="target"),
    path("targets/<str:key>/choices/<str:what>", views.TargetChoices.as_view(), name="target-choices"),
    path("actions", views.ActionCollection.as_view(), name="actions"),
    path("actions/preview", views.ActionPreview.as_view(), name="action-preview"),
    path("actions/<uuid:action_id>", views.ActionDetail.as_view(), name="action"),
    path("actions/<uuid:action_id>/approve", views.ActionApprove.as_view(), name="action-approve"),
    path("actions/<uuid:action_id>/reject", views.ActionReject.as_view(), name="action-reject"),
    path("actions/<uuid:action_id>/cancel", views.ActionCancel.as_view(), name="action-cancel"),
    path("actions/<uuid:action_id>/resolve", views.ActionResolve.as_view(), name="action-resolve"),
    path("alerts", views.GenericAlertIntake.as_view(), name="alerts"),
    path("alerts/alertmanager", views.AlertmanagerIntake.as_view(), name="alerts-alertmanager"),
    path("alerts/airflow", views.AirflowAlertIntake.as_view(), name="alerts-airflow"),
    path("incidents", views.IncidentList.as_view(), name="incidents"),
    path("incidents/<int:incident_id>", views.IncidentDetail.as_view(), name="incident"),
    path("incidents/<int:incident_id>/timeline", views.IncidentTimeline.as_view(), name="incident-timeline"),
    path("incidents/<int:incident_id>/comments", views.IncidentComment.as_view(), name="incident-comments"),
    path("incidents/<int:incident_id>/<str:move>", views.IncidentStatusChange.as_view(), name="incident-status"),
    path("audit", views.AuditList.as_view(), name="audit"),
    # quarantine reviews (controlplane/api/quarantine.py)
    path("quarantine/reviews", quarantine.ReviewCollection.as_view(), name="quarantine-reviews"),
    path("quarantine/reviews/<int:review_id>", quarantine.ReviewDetail.as_view(), name="quarantine-review"),
    path(
        "quarantine/reviews/<int:review_id>/items/<int:item_id>/dispositions",
        quarantine.ItemDispositions.as_view(),
        name="quarantine-dispositions",
    ),
]
