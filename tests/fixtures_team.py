"""The team fixture family: the groups as bootstrap makes them (with their real permissions) and users in them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def _team_user(name: str, group):
    from django.contrib.auth import get_user_model

    # No password: tests log in with force_login, and hashing one costs ~0.3 s.
    user = get_user_model().objects.create_user(username=name, is_staff=True)
    user.groups.add(group)
    return user


@pytest.fixture
def team_groups(db) -> dict:
    """The Staff and Members groups, by name, with the permissions bootstrap gives them."""
    from routing.services import team_groups_sync

    return team_groups_sync()


@pytest.fixture
def team(team_groups) -> SimpleNamespace:
    """One staff user and two members (all may log in to the admin)."""
    from routing.services import MEMBERS_GROUP, STAFF_GROUP

    return SimpleNamespace(staff=_team_user("sam", team_groups[STAFF_GROUP]),
                           alice=_team_user("alice", team_groups[MEMBERS_GROUP]),
                           bob=_team_user("bob", team_groups[MEMBERS_GROUP]))  # fmt: skip


@pytest.fixture
def staff_user(team_groups):
    from routing.services import STAFF_GROUP

    return _team_user("sam-staff", team_groups[STAFF_GROUP])


@pytest.fixture
def member_user(team_groups):
    """A team member (admin access, API keys) who was also given view_requestlog: sees own requests."""
    from django.contrib.auth.models import Permission

    from routing.services import MEMBERS_GROUP

    user = _team_user("mia-member", team_groups[MEMBERS_GROUP])
    user.user_permissions.add(Permission.objects.get(codename="view_requestlog"))
    return user
