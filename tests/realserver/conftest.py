"""Real Parlant servers (the `[parlant-server]` extra), started once per test run.

Without the extra the tests here are skipped, except under CI=true, where a missing extra is a
failure: CI installs it, so a skip there would hide that nothing ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import pytest

from supervisor.testing import ParlantServer
from tests.helpers import require_parlant

AGENTS: Final = {
    "Echo": "Answers with what it was told.",
    "StreamingEcho": "Answers with what it was told, word by word.",
}
"""Every server's agents: `Echo` writes its answer whole, `StreamingEcho` streams it
(`output_mode=STREAM`, one word a chunk)."""
STREAMING: Final = ["StreamingEcho"]
CHUNK_DELAY: Final = 0.1
"""Seconds between two words: a streamed answer of a few words outlasts a poll's 0.25 s."""


@pytest.fixture(scope="session")
def null_parlant() -> Iterator[ParlantServer]:
    """A real server with the null perceived-performance policy: a turn takes ~0.3 s."""
    require_parlant()
    with ParlantServer(
        agents=AGENTS, streaming=STREAMING, chunk_delay=CHUNK_DELAY, policy="null"
    ) as server:
        yield server


@pytest.fixture(scope="session")
def stock_parlant() -> Iterator[ParlantServer]:
    """A real server with Parlant's stock policy: an intermediate `ready`, 3-4 s per turn."""
    require_parlant()
    with ParlantServer(
        agents=AGENTS, streaming=STREAMING, chunk_delay=CHUNK_DELAY, policy="stock"
    ) as server:
        yield server


@pytest.fixture(scope="session")
def production_parlant() -> Iterator[ParlantServer]:
    """A real server under Parlant's production authorization policy (`PARLANT_ENV=production`):
    no `read_event`, no customers or sessions but guest sessions, per-IP rate limits."""
    require_parlant()
    with ParlantServer(
        agents=AGENTS,
        streaming=STREAMING,
        chunk_delay=CHUNK_DELAY,
        policy="null",
        authorization="production",
    ) as server:
        yield server


@pytest.fixture(scope="session")
def null_parlant_notified() -> Iterator[ParlantServer]:
    """`null_parlant` with `supervisor.parlant_module`: waiting requests woken by writes."""
    require_parlant()
    with ParlantServer(
        agents=AGENTS,
        streaming=STREAMING,
        chunk_delay=CHUNK_DELAY,
        policy="null",
        parlant_module=True,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def stock_parlant_notified() -> Iterator[ParlantServer]:
    """`stock_parlant` with `supervisor.parlant_module`."""
    require_parlant()
    with ParlantServer(
        agents=AGENTS,
        streaming=STREAMING,
        chunk_delay=CHUNK_DELAY,
        policy="stock",
        parlant_module=True,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def production_parlant_notified() -> Iterator[ParlantServer]:
    """`production_parlant` with `supervisor.parlant_module`."""
    require_parlant()
    with ParlantServer(
        agents=AGENTS,
        streaming=STREAMING,
        chunk_delay=CHUNK_DELAY,
        policy="null",
        authorization="production",
        parlant_module=True,
    ) as server:
        yield server


@pytest.fixture
def own_parlant() -> Iterator[ParlantServer]:
    """A real server of the test's own, for tests that kill or restart it."""
    require_parlant()
    with ParlantServer(policy="null") as server:
        yield server
