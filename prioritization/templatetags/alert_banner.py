"""``{% alert_banner %}``: the open alerts, on top of every admin page (admin/base_site.html)."""

from typing import Any

from django import template
from django.contrib import admin

from prioritization.alerts import count_open_alerts, open_alerts
from prioritization.models import Alert

register = template.Library()

# More than this and the banner links to the list instead of growing down the page.
BANNER_ALERTS = 5


@register.inclusion_tag("admin/alert_banner.html", takes_context=True)
def alert_banner(context: template.Context) -> dict[str, Any]:
    """Open alerts for staff who may view alerts (one indexed query per admin page; nothing
    for anyone else, e.g. on the login page: the messages name customers)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or user is None or not user.is_active or not user.is_staff:
        return {"alerts": [], "more": 0}
    # The alert admin decides, as it does for the alert pages the banner links to.
    if not admin.site.get_model_admin(Alert).has_view_permission(request):
        return {"alerts": [], "more": 0}
    alerts = list(open_alerts(limit=BANNER_ALERTS + 1))
    more = count_open_alerts() - BANNER_ALERTS if len(alerts) > BANNER_ALERTS else 0
    return {"alerts": alerts[:BANNER_ALERTS], "more": more}
