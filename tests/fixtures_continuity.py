"""Fixtures for sticky sessions, handoff and the media endpoints."""

from __future__ import annotations

import pytest


@pytest.fixture
def fresh_sessions():
    """No sticky session left over from another test (the in-process store lives as long as the process)."""
    from routing.sessions import reset_session_store

    reset_session_store()
    yield
    reset_session_store()
