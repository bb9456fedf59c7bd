"""The same calls as `SessionSupervisor`, with the sessions sharded over Ray actors.

Needs the `[ray]` extra. Each shard is a Ray actor hosting a `SessionSupervisor` for the
sessions that rendezvous hashing places on it; a shard that dies is restarted by Ray and its
sessions resume from their durable checkpoints.

Example:
    >>> from supervisor.sharding import ShardedSupervisor
    >>> with ShardedSupervisor("http://127.0.0.1:8800", shards=2) as sup:
    ...     reply = sup.ask(session_id, "Tell me about CKD stage 3", timeout=120)
"""

from supervisor.sharding._front import INSTALL_HINT, ShardedSupervisor, ShardLost

__all__ = ["INSTALL_HINT", "ShardLost", "ShardedSupervisor"]
