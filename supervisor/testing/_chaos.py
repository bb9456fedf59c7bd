"""Faults inside the process: a session actor failing as a bug would."""

from __future__ import annotations

from actors._actor import Kill
from supervisor._facade import SessionSupervisor

__all__ = ["kill_session_actor"]


def kill_session_actor(
    supervisor: SessionSupervisor, session_id: str, reason: str = "killed by a test"
) -> None:
    """Make the session's actor raise, as a bug would (like Akka's `Kill`).

    The supervisor restarts the session from its checkpoint, within its restart policy, and its
    waiting callers keep waiting. A session with no live actor is left alone.
    """
    supervisor._route_quietly(session_id, Kill(reason))
