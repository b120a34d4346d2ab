"""Fixtures for the foundation: team users in their groups, and YAML config files on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml


@pytest.fixture
def team(db) -> SimpleNamespace:
    """Groups as bootstrap makes them, one staff user and two members (all may log in to the admin)."""
    from django.contrib.auth import get_user_model

    from routing.services import MEMBERS_GROUP, STAFF_GROUP, team_groups_sync

    groups = team_groups_sync()
    User = get_user_model()

    def make(name: str, group: str):
        # No password: tests log in with force_login, and hashing one costs ~0.3 s.
        user = User.objects.create_user(username=name, is_staff=True)
        user.groups.add(groups[group])
        return user

    return SimpleNamespace(staff=make("sam", STAFF_GROUP), alice=make("alice", MEMBERS_GROUP), bob=make("bob", MEMBERS_GROUP))


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config (a dict dumped as YAML, or raw text) to a fresh file and return its path."""
    counter = iter(range(10_000))

    def write(content: dict | str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"config-{next(counter)}.yaml")
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
