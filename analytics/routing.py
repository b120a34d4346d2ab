"""Websocket routes of the analytics app (mounted in freellm/asgi.py)."""

from __future__ import annotations

from django.urls import path

from .consumers import LiveFeedConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveFeedConsumer.as_asgi()),
]
