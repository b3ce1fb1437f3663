"""The web UI's pages (see controlplane/web/views.py for what each serves)."""

from django.urls import path

from controlplane.web import views

app_name = "web"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("freshness/", views.dashboard_freshness, name="freshness"),
    path("targets/", views.target_list, name="targets"),
    path("targets/<str:key>/", views.target_detail, name="target"),
    path("targets/<str:key>/verbs/<str:verb>/preview/", views.target_preview, name="target-preview"),
    path("targets/<str:key>/verbs/<str:verb>/request/", views.target_request, name="target-request"),
    path("targets/<str:key>/checks/<str:check>/", views.target_check, name="target-check"),
    path("actions/", views.action_list, name="actions"),
    path("actions/<uuid:action_id>/", views.action_detail, name="action"),
    path("actions/<uuid:action_id>/live/", views.action_live, name="action-live"),
    path("actions/<uuid:action_id>/approve/", views.action_approve, name="action-approve"),
    path("actions/<uuid:action_id>/reject/", views.action_reject, name="action-reject"),
    path("actions/<uuid:action_id>/cancel/", views.action_cancel, name="action-cancel"),
    path("actions/<uuid:action_id>/resolve/", views.action_resolve, name="action-resolve"),
    path("approvals/", views.approvals, name="approvals"),
    path("audit/", views.audit_log, name="audit"),
    path("incidents/", views.incident_list, name="incidents"),
    path("incidents/<int:incident_id>/", views.incident_detail, name="incident"),
    path("incidents/<int:incident_id>/export.md", views.incident_export, name="incident-export"),
    path("incidents/<int:incident_id>/comments/", views.incident_comment, name="incident-comment"),
    *(
        path(
            f"incidents/<int:incident_id>/{command}/",
            views.incident_status,
            {"command": command},
            name=f"incident-{command}",
        )
        for command in ("acknowledge", "mitigate", "resolve")
    ),
]
