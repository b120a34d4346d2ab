"""Fixtures for the upstream emulator (tests/emulator): one server per test session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulator import Emulator


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    emulator = Emulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(emulator_server: Emulator) -> Emulator:
    """The running emulator with no records, fail counters or rate windows left from other tests."""
    emulator_server.reset()
    return emulator_server
