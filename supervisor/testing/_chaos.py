"""Faults inside the system: a session actor failing as a bug would, a shard's process dying."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.runtime import Kill
from supervisor._facade import SessionSupervisor

if TYPE_CHECKING:
    from supervisor.sharding import ShardedSupervisor

__all__ = ["kill_session_actor", "kill_shard"]


def kill_session_actor(
    supervisor: SessionSupervisor, session_id: str, reason: str = "killed by a test"
) -> None:
    """Make the session's actor raise, as a bug would (like Akka's `Kill`).

    The supervisor restarts the session from its checkpoint, within its restart policy, and its
    waiting callers keep waiting. A session with no live actor is left alone.
    """
    supervisor.runtime.route_quietly(session_id, Kill(reason))


def kill_shard(sharded: ShardedSupervisor, index: int) -> None:
    """Kill shard `index`'s process at once, as a crash would (`ray.kill`, restart allowed).

    Ray restarts it; its sessions resume from their durable checkpoints.
    """
    import ray  # the sharded supervisor runs on it: installed

    ray.kill(sharded.shard_actor(index), no_restart=False)
