from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "freellm.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (Django must be set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from analytics.routing import websocket_urlpatterns  # noqa: E402

# daphne serves no static files. This handler answers only STATIC_URL paths (the admin's CSS/JS, from the
# apps' static dirs, no collectstatic) and hands every other request straight to Django's async handler;
# whitenoise would instead add a sync middleware in front of the async /v1 views.
application = ProtocolTypeRouter(
    {
        "http": ASGIStaticFilesHandler(django_asgi_app),
        # The admin's live feed: session-cookie auth, and only pages of our own hosts may open it.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
