"""``{% alert_banner %}``: the open alerts, on top of every admin page (admin/base_site.html)."""

from typing import Any

from django import template

from prioritization.alerts import count_open_alerts, open_alerts

register = template.Library()

# More than this and the banner links to the list instead of growing down the page.
BANNER_ALERTS = 5


@register.inclusion_tag("admin/alert_banner.html", takes_context=True)
def alert_banner(context: template.Context) -> dict[str, Any]:
    """Open alerts for staff (one indexed query per admin page; nothing for anyone else,
    e.g. on the login page)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return {"alerts": [], "more": 0}
    alerts = list(open_alerts(limit=BANNER_ALERTS + 1))
    more = count_open_alerts() - BANNER_ALERTS if len(alerts) > BANNER_ALERTS else 0
    return {"alerts": alerts[:BANNER_ALERTS], "more": more}
