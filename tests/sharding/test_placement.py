"""Rendezvous placement: stable, balanced, and adding a shard moves few sessions."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.sharding._placement import shard_of

SHARDS = [f"shard-{n}" for n in range(4)]
SESSIONS = [f"session-{n}" for n in range(10_000)]


@given(st.text(min_size=1))
def test_a_session_always_lands_on_the_same_shard(session_id: str) -> None:
    assert shard_of(session_id, SHARDS) == shard_of(session_id, list(SHARDS))


def test_sessions_spread_evenly() -> None:
    counts = Counter(shard_of(session_id, SHARDS) for session_id in SESSIONS)
    assert set(counts) == set(range(4))
    assert max(counts.values()) < 1.1 * len(SESSIONS) / 4


def test_adding_a_shard_moves_only_the_sessions_it_wins() -> None:
    grown = [*SHARDS, "shard-4"]
    moved = [s for s in SESSIONS if SHARDS[shard_of(s, SHARDS)] != grown[shard_of(s, grown)]]
    assert all(grown[shard_of(s, grown)] == "shard-4" for s in moved)
    assert 0.15 < len(moved) / len(SESSIONS) < 0.25  # about 1/5


def test_no_shard_is_an_error() -> None:
    with pytest.raises(ValueError, match="no shards"):
        shard_of("s", [])
