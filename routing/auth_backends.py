"""The admin login's brute-force lockout (django-axes), for logins where passwords can be guessed."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LoginLockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check for logins that come with a request (the admin form); ``authenticate()`` without
    one (manage.py commands, scripts on the server) goes straight to the next backend instead of failing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
