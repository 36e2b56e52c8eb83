from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from leads.api_errors import no_api_route
from leads.health import healthz
from prioritization.admin_dashboard import dashboard_urls
from prioritization.metrics import metrics_view

urlpatterns = [
    # Before admin/: the admin's catch-all app pattern would answer this path with a 404.
    path("admin/sla/", include(dashboard_urls())),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("leads.urls")),
    path("api/v1/", include("prioritization.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # GET only: the page is HTML rendered from a template, and DRF's OPTIONS answer has none
    # to render with (a 500).
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", http_method_names=["get", "head"]),
        name="api-docs",
    ),
    re_path(r"^api/(?P<path>(?:.*/)?)$", no_api_route),  # last: what no API route matched
]

handler400 = "leads.api_errors.bad_request"
handler404 = "leads.api_errors.not_found"
handler500 = "leads.api_errors.server_error"
