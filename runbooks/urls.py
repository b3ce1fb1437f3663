"""Runbook pages: the library, starting a run, and the guided run page with its step endpoints."""

from django.urls import path

from runbooks import views

app_name = "runbooks"

urlpatterns = [
    path("runbooks/", views.runbook_list, name="list"),
    path("runbooks/<str:slug>/", views.runbook_detail, name="detail"),
    path("runs/new/", views.run_new, name="run-new"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/steps/<str:step_id>/<str:command>/", views.step_command, name="step-command"),
]
