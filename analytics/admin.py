"""Analytics admin; each area registers its models in its own module."""

from __future__ import annotations

from . import admin_sessions  # noqa: F401
