"""{% alert_banner %}: the open incidents on top of every admin page, as warnings like the degraded-mode banner."""

from __future__ import annotations

import logging

from django import template

log = logging.getLogger(__name__)
register = template.Library()

VIEW_PERMISSION = "analytics.view_incident"


@register.inclusion_tag("admin/analytics/alert_banner.html", takes_context=True)
def alert_banner(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_perm(VIEW_PERMISSION):
        return {"incidents": []}
    from analytics import alerts
    from analytics.tasks import alerts_notify_queue

    changes = alerts.live_alerts_evaluate_if_due()
    if changes:
        try:
            alerts_notify_queue(changes)
        except Exception:  # the broker may be away; the page still renders (the incident is stored)
            log.exception("could not queue the alert webhook")
    return {"incidents": alerts.open_incidents()}
