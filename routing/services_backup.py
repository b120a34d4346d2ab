"""Backups of the whole database (``manage.py backup`` / ``restore``), in the database's own format.

SQLite (the embedded default): SQLite's online backup API, a consistent copy while the gateway runs.
PostgreSQL: ``pg_dump --format=custom`` / ``pg_restore --clean``. Not ``dumpdata``: it would write the
provider secrets decrypted. The copy holds them encrypted, and the encryption keys (FREELLM_ENCRYPTION_KEYS)
and SECRET_KEY are not in it: without them the restored secrets cannot be read.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import connection

KEYS_REMINDER = (
    "The backup does not contain the encryption keys: keep FREELLM_ENCRYPTION_KEYS (and SECRET_KEY) "
    "somewhere safe apart from it. Without them the provider secrets in it cannot be decrypted."
)


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class RestoreReport:
    provider_keys: int
    undecryptable: int  # provider secrets the current FREELLM_ENCRYPTION_KEYS cannot decrypt


def default_backup_path() -> Path:
    suffix = "sqlite3" if connection.vendor == "sqlite" else "pgdump"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.VAR_DIR / "backups" / f"freellm-{stamp}.{suffix}"


def database_backup(*, path: Path | None = None) -> Path:
    path = Path(path or default_backup_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    if connection.vendor == "sqlite":
        source = sqlite3.connect(connection.settings_dict["NAME"])
        target = sqlite3.connect(path)
        try:
            with target:
                source.backup(target)
        finally:
            target.close()
            source.close()
    elif connection.vendor == "postgresql":
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={path}", _pg_dbname()])
    else:
        raise BackupError(f"no backup method for a {connection.vendor} database")
    path.chmod(0o600)
    return path


def database_restore(*, path: Path) -> RestoreReport:
    """Replace the whole database with the backup at ``path``. Stop the gateway and workers first."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    connection.close()
    if connection.vendor == "sqlite":
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in source.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            source.close()
            raise BackupError(f"{path} is not a SQLite backup ({exc})") from None
        if "django_migrations" not in tables:
            source.close()
            raise BackupError(f"{path} is not a freellm backup (no django_migrations table)")
        target = sqlite3.connect(connection.settings_dict["NAME"])
        try:
            with target:
                source.backup(target)
        finally:
            target.close()
            source.close()
    elif connection.vendor == "postgresql":
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={_pg_dbname()}", str(path)])
    else:
        raise BackupError(f"no restore method for a {connection.vendor} database")
    from routing.config import bump_config_version

    # Every process reloads its routing config and drops its cached API keys.
    bump_config_version()
    return _check_secrets()


def _check_secrets() -> RestoreReport:
    from providers.crypto import DecryptionError
    from providers.models import ProviderKey

    total = bad = 0
    for pk in ProviderKey.objects.values_list("pk", flat=True):
        total += 1
        try:
            ProviderKey.objects.get(pk=pk).secret  # noqa: B018  (decrypts on load)
        except DecryptionError:
            bad += 1
    return RestoreReport(total, bad)


def _pg_dbname() -> str:
    s = connection.settings_dict
    parts = {"host": s.get("HOST"), "port": s.get("PORT"), "user": s.get("USER"), "dbname": s["NAME"]}
    return " ".join(f"{name}={value}" for name, value in parts.items() if value)


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (PostgreSQL client tools are needed)")
    env = {**os.environ, "PGPASSWORD": connection.settings_dict.get("PASSWORD") or ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()[-500:]}")
