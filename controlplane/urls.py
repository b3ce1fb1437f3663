from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from controlplane.api import views as api_views

urlpatterns = [
    path("healthz", api_views.healthz, name="healthz"),
    path("readyz", api_views.readyz, name="readyz"),
    path("api/v1/", include("controlplane.api.urls")),
    path("api/v1/", include(("runbooks.api", "runbooks-api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("quarantine/", include("controlplane.quarantine.urls")),
    path("", include("controlplane.slack.urls")),
    path("", include("runbooks.urls")),
    path("", include("controlplane.web.urls")),
]

handler404 = "controlplane.api.errors.not_found"
