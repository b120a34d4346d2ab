from __future__ import annotations

from django.contrib import admin
from django.urls import path, re_path

from routing.api import ops, playground
from routing.api.app import api, gemini_api, ollama_api, unknown_endpoint

urlpatterns = [
    # The playground (routing.api.playground) sends through the router, so it lives with the API package.
    path("admin/playground/", admin.site.admin_view(playground.playground_page), name="admin_playground"),
    path("admin/playground/send", playground.playground_send, name="admin_playground_send"),
    path("admin/", admin.site.urls),
    path("livez", ops.livez),
    path("readyz", ops.readyz),
    path("metrics", ops.metrics_view),
    path("v1/", api.urls),
    # Anything else under /v1 answers in OpenAI's error shape, not Django's HTML 404.
    re_path(r"^v1/.*$", unknown_endpoint),
    # The native front doors of Gemini (Google's SDKs, Gemini CLI) and Ollama (editors), each answering
    # unknown paths in its own error shape too.
    path("v1beta/", gemini_api.urls),
    re_path(r"^v1beta/.*$", unknown_endpoint),
    path("api/", ollama_api.urls),
    re_path(r"^api/.*$", unknown_endpoint),
]
