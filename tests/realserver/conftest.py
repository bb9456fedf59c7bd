"""Real Parlant servers (the `[parlant-server]` extra), started once per test run.

Without the extra the tests here are skipped, except under CI=true, where a missing extra is a
failure: CI installs it, so a skip there would hide that nothing ran.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from supervisor.testing import ParlantServer
from tests.helpers import require_parlant


@pytest.fixture(scope="session")
def null_parlant() -> Iterator[ParlantServer]:
    """A real server with the null perceived-performance policy: a turn takes ~0.3 s."""
    require_parlant()
    with ParlantServer(policy="null") as server:
        yield server


@pytest.fixture(scope="session")
def stock_parlant() -> Iterator[ParlantServer]:
    """A real server with Parlant's stock policy: an intermediate `ready`, 3-4 s per turn."""
    require_parlant()
    with ParlantServer(policy="stock") as server:
        yield server


@pytest.fixture
def own_parlant() -> Iterator[ParlantServer]:
    """A real server of the test's own, for tests that kill or restart it."""
    require_parlant()
    with ParlantServer(policy="null") as server:
        yield server
