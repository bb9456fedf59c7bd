"""A session's lifecycle as an enum and an explicit transition table."""

from __future__ import annotations

import enum
from typing import Final, final

__all__ = ["IllegalTransition", "SessionState", "check_transition"]


@final
class SessionState(enum.Enum):
    """Where a session's polling stands.

    STARTING: created, first poll not yet sent.
    POLLING: a long-poll is open (or about to be re-opened at once).
    PAUSED: a consumer's queue is full; events wait on the server (lossless backpressure).
    BACKING_OFF: the last poll failed transiently; a retry is scheduled.
    DORMANT: nobody waits on it and its linger has passed: no request goes to Parlant (what
        Parlant writes meanwhile stays in its log); the next ask, stream or reader wakes it.
    FAILED: terminal: Parlant said the session is gone or forbidden.
    STOPPED: closed, reaped or shut down; the actor is going away.
    """

    STARTING = "starting"
    POLLING = "polling"
    PAUSED = "paused"
    BACKING_OFF = "backing_off"
    DORMANT = "dormant"
    FAILED = "failed"
    STOPPED = "stopped"


_S = SessionState
TRANSITIONS: Final[frozenset[tuple[SessionState, SessionState]]] = frozenset(
    {
        (_S.STARTING, _S.POLLING),
        (_S.STARTING, _S.STOPPED),
        (_S.STARTING, _S.FAILED),
        (_S.POLLING, _S.POLLING),
        (_S.POLLING, _S.PAUSED),
        (_S.POLLING, _S.BACKING_OFF),
        (_S.POLLING, _S.FAILED),
        (_S.POLLING, _S.STOPPED),
        (_S.POLLING, _S.DORMANT),
        (_S.PAUSED, _S.POLLING),
        (_S.PAUSED, _S.STOPPED),
        (_S.PAUSED, _S.DORMANT),
        (_S.PAUSED, _S.FAILED),
        (_S.BACKING_OFF, _S.POLLING),
        (_S.BACKING_OFF, _S.STOPPED),
        (_S.BACKING_OFF, _S.DORMANT),
        (_S.BACKING_OFF, _S.FAILED),
        (_S.DORMANT, _S.POLLING),
        (_S.DORMANT, _S.STOPPED),
        (_S.DORMANT, _S.FAILED),
        (_S.FAILED, _S.STOPPED),
    }
)


class IllegalTransition(RuntimeError):
    """A bug: the core tried a transition the table does not allow."""


def check_transition(current: SessionState, target: SessionState) -> None:
    """Raise `IllegalTransition` unless `current -> target` is in the table."""
    if (current, target) not in TRANSITIONS:
        raise IllegalTransition(f"session state {current.value} -> {target.value} is not allowed")
