from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "freellm.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (Django must be set up first)
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

# daphne serves no static files. This handler answers only STATIC_URL paths (the admin's CSS/JS, from the
# apps' static dirs, no collectstatic) and hands every other request straight to Django's async handler;
# whitenoise would instead add a sync middleware in front of the async /v1 views.
application = ProtocolTypeRouter({"http": ASGIStaticFilesHandler(django_asgi_app)})
