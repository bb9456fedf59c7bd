"""The error tree. Every message says what happened, to which session, and what to do.

```
SupervisorError
├── TransientError          the same call may succeed later
│   ├── ParlantUnavailable  the server could not be reached or answered 5xx/429
│   ├── ReplyTimeout        the deadline passed; the late reply still reaches events()
│   ├── DeliveryUnknown     the deadline passed and whether the message was stored is unknown
│   ├── AgentError          the agent's turn failed inside Parlant (`status: error`)
│   ├── SessionUnresponsive the session's actor did not answer well past the call's deadline
│   └── ShardLost           the shard hosting the session died during the call (sharded only)
└── PermanentError          retrying the same call will fail the same way
    ├── SessionNotFound     Parlant answered 404 for the session
    ├── AccessDenied        Parlant answered 401/403
    ├── SessionClosed       the session was closed while the call waited
    ├── SessionFailed       the session's actor kept crashing and was given up
    ├── SupervisorStopped   the supervisor is stopped or stopping
    ├── ParlantMisconfigured  the URL does not reach Parlant's API (a redirect, TLS to plain HTTP)
    └── InvalidInput        the call's arguments are wrong (also a ValueError)
```
"""

from __future__ import annotations

from typing import Any, ClassVar, final

__all__ = [
    "AccessDenied",
    "AgentError",
    "DeliveryUnknown",
    "InvalidInput",
    "ParlantMisconfigured",
    "ParlantUnavailable",
    "PermanentError",
    "ReplyTimeout",
    "SessionClosed",
    "SessionFailed",
    "SessionNotFound",
    "SessionUnresponsive",
    "ShardLost",
    "SupervisorError",
    "SupervisorStopped",
    "TransientError",
]


class SupervisorError(Exception):
    """Base of every error this library raises.

    Attributes:
        session_id: The Parlant session concerned, or None when the error concerns no session.
        outcome: A short stable label for metrics (`timeout`, `not_found`, ...).
    """

    outcome: ClassVar[str] = "failed"

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its session id (an exception pickles only its args by default): errors
        cross process boundaries, from a shard to its driver."""
        return (type(self), self.args, {"session_id": self.session_id})


class TransientError(SupervisorError):
    """The same call may succeed if tried again later."""


class PermanentError(SupervisorError):
    """Retrying the same call will fail the same way."""


@final
class ParlantMisconfigured(PermanentError):
    """The configured URL does not reach Parlant's API: it answers with a redirect (which is
    not followed), or it speaks plain HTTP where the URL says https (or the reverse). Fix the
    URL; retrying cannot help."""

    outcome = "misconfigured"


@final
class ParlantUnavailable(TransientError):
    """The Parlant server could not be reached, or answered with a server error."""

    outcome = "unavailable"


@final
class DeliveryUnknown(TransientError):
    """The ask's deadline passed while its message's post was cut, and the session's log could
    not be read to tell whether it was stored. Read the conversation before sending it again
    (or ask again with the same `post_key` and `maybe_sent=True`: a copy in the log is found,
    not posted twice)."""

    outcome = "delivery_unknown"


@final
class ReplyTimeout(TransientError):
    """No completed reply before the deadline.

    The reply is not lost: when it arrives it goes to the session's `events()` readers.
    """

    outcome = "timeout"


@final
class AgentError(TransientError):
    """The agent's turn failed inside Parlant (its engine raised, e.g. the model provider is
    down): Parlant wrote `status: error` for the turn instead of an answer.

    This turn answered nothing; the next one may succeed. The failure's details (a traceback)
    stay in Parlant's log: they are never copied into this error.
    """

    outcome = "agent_error"


@final
class SessionNotFound(PermanentError):
    """Parlant does not know the session (404): it never existed or was deleted."""

    outcome = "not_found"


@final
class AccessDenied(PermanentError):
    """Parlant refused access to the session (401/403)."""

    outcome = "forbidden"


@final
class SessionClosed(PermanentError):
    """The session was closed (by `close()` or by reaping) while the call was waiting."""

    outcome = "closed"


@final
class SessionFailed(PermanentError):
    """The session's actor failed more often than its restart intensity allows."""

    outcome = "crashed"


@final
class SupervisorStopped(PermanentError):
    """The supervisor is stopped or stopping and takes no new calls."""

    outcome = "stopped"


@final
class SessionUnresponsive(TransientError):
    """The session's actor did not answer a waiting call well past its deadline.

    Nothing stopped: the supervisor is overloaded (its threads could not keep up) or a
    handler is stuck. The call's message may still be answered; `history()` reads it.
    """

    outcome = "unresponsive"


@final
class ShardLost(TransientError):
    """The shard hosting the session died during the call (sharded supervisors only).

    Ray restarts it and its sessions resume from their durable checkpoints. Raised by
    `create_session` and `create_customer` (the dead shard may have created it; it was not sent
    again), and by any call when the shard is not back within `restart_timeout`; asks and
    streams are handed to the restarted shard instead.
    """

    outcome = "shard_lost"


@final
class InvalidInput(PermanentError, ValueError):
    """The call's arguments are wrong; nothing was sent to Parlant."""

    outcome = "invalid"
