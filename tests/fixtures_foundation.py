"""Fixtures for the foundation: YAML config files on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config (a dict dumped as YAML, or raw text) to a fresh file and return its path."""
    counter = iter(range(10_000))

    def write(content: dict | str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"config-{next(counter)}.yaml")
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write
