"""Slack's request URLs (set them in the Slack app's manifest, docs/slack.md) and the profile's Slack link."""

from django.urls import path

from controlplane.slack import views

app_name = "slack"

urlpatterns = [
    path("slack/interactions", views.interactions, name="interactions"),
    path("slack/commands", views.slash_commands, name="commands"),
    path("profile/slack/", views.profile, name="profile"),
]
