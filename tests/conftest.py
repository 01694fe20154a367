"""Shared fixtures: each test module gets the process's embedded control plane, and tests
that need other settings get a fresh one with those settings (and stop it afterwards)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

import nbscale


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, every: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail the test with a message on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(every)


@pytest.fixture
def fresh_plane(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Call ``fresh_plane(NBSCALE_X="1", ...)`` to run the test against a new embedded
    control plane started with those settings."""

    def start(**env: str) -> None:
        nbscale.shutdown()
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    yield start
    nbscale.shutdown()


@pytest.fixture(scope="module", autouse=True)
def _fresh_control_plane_per_module() -> Iterator[None]:
    """Pools (and their warm workers) of one test module never affect the next."""
    yield
    nbscale.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _stop_control_plane_at_end() -> Iterator[None]:
    os.environ.setdefault("NBSCALE_HEARTBEAT_INTERVAL", "0.5")
    yield
    nbscale.shutdown()
