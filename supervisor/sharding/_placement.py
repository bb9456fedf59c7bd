"""Which shard hosts a session: rendezvous (highest random weight) hashing.

Every shard scores every session with a hash of (shard, session id); the highest score wins.
Stable across processes and restarts (no Python `hash()`, which is salted per process), and
adding a shard moves only the sessions the new shard now wins: about 1/(n+1) of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["shard_of"]


def _score(shard: str, session_id: str) -> int:
    digest = hashlib.blake2b(f"{shard}\0{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(session_id: str, shards: Sequence[str]) -> int:
    """The index in `shards` (their stable names) of the shard that hosts `session_id`."""
    if not shards:
        raise ValueError("no shards to place a session on")
    return max(range(len(shards)), key=lambda index: _score(shards[index], session_id))
