"""The metrics port of the actor layer."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Recorder"]


class Recorder(Protocol):
    """Where the actor layer reports what happens (a port the actor layer owns: `metrics`'
    `SupervisorMetrics` implements it). Every method is cheap and thread-safe."""

    def session_started(self, *, reactivated: bool) -> None:
        """A session actor started; `reactivated` when an earlier one had stopped."""
        ...

    def session_stopped(self) -> None:
        """A session actor stopped (closed, reaped, given up, or the supervisor stopped)."""
        ...

    def session_restarted(self) -> None:
        """A crashed session actor was told to restart in place (a new core, same actor)."""
        ...

    def session_reaped(self) -> None:
        """An idle session's actor was stopped (it resumes on next use)."""
        ...

    def session_crashed(self) -> None:
        """A session actor crashed (a bug, or a test's kill), and the supervisor decided: its
        restart is scheduled, or it was given up (then `session_failed("crashed")` too)."""
        ...

    def upstream_changed(self, state: str) -> None:
        """Parlant's health as the poller sees it changed: `down`, `recovering` or `up`."""
        ...

    def session_failed(self, reason: str) -> None:
        """A session failed: `not_found`, `forbidden` or `crashed`."""
        ...

    def poll_finished(self, outcome: str, seconds: float) -> None:
        """A long-poll ended with `outcome` (one of POLL_OUTCOMES) after `seconds`."""
        ...

    def events_received(self, kind: str, count: int) -> None:
        """`count` events of `kind` arrived."""
        ...

    def reply_finished(self, kind: str, outcome: str, seconds: float) -> None:
        """An ask or stream (`kind`) ended with `outcome` after `seconds`."""
        ...

    def backpressure_paused(self) -> None:
        """A session paused polling for a consumer that stopped reading."""
        ...

    def turns_failed(self, count: int) -> None:
        """Parlant failed `count` agent turns (`status: error`)."""
        ...

    def budget_waited(self, operation: str) -> None:
        """A request of `operation` waited for the request budget (or a 429's pause)."""
        ...

    def messages_abandoned(self, count: int) -> None:
        """`count` streamed messages were never finished by Parlant (released as they stood)."""
        ...

    def post_retried(self, reason: str) -> None:
        """A post went on after a failure: `refused` (certainly not sent: sent again),
        `found` (its answer was lost, the log holds it), `absent` (proved absent: sent again)."""
        ...

    def duplicate_posts(self, count: int) -> None:
        """`count` posts were found stored twice."""
        ...

    def poll_paced(self, reason: str) -> None:
        """A poll waited before going again, after answers that cannot be right:
        `instant_timeout` (a 504 or a client timeout long before its wait), `instant_empty`
        (an empty 200 to a poll that should have waited), `stale` (only offsets already read)."""
        ...

    def polls_restarted(self, count: int) -> None:
        """`count` polls that could not be alive were restarted on new connections (a message
        the session posted was stored, and the poll did not bring it)."""
        ...

    def events_evicted(self, count: int) -> None:
        """Unclaimed events dropped from memory (they stay on the server)."""
        ...
