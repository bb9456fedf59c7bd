"""What a supervising actor and its SessionActors tell each other, and `Route`, the way to a
session that has no live actor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

from actors._errors import SessionFailed, SupervisorError
from actors._messages import Message

__all__ = [
    "ActorCrashed",
    "ActorKilled",
    "Barrier",
    "GiveUp",
    "Kill",
    "Reaped",
    "Restart",
    "Retire",
    "Route",
]


@final
@dataclass(frozen=True, slots=True)
class Barrier:
    """Answered once every message sent to the actor before it has been handled, with the
    number of consumers (asks, streams, readers) the actor feeds."""


@final
@dataclass(frozen=True, slots=True)
class Kill:
    """Makes the actor fail as a bug would (like Akka's `Kill`): for drills and tests."""

    reason: str


@final
@dataclass(frozen=True, slots=True)
class Route:
    """Told to the supervisor: deliver `message` to the session's actor, spawning one for a new
    consumer. Callers tell a live actor directly; this is the way when none is (the session is
    new, reaped or closed), and how a stopping actor hands back the consumers that reached it
    too late."""

    session_id: str
    message: Message | Kill


@final
@dataclass(frozen=True, slots=True)
class Retire:
    """Stop now, failing the session's waiting calls with `error`: every message queued before
    it was handled; any queued after it is answered like mail to a dead actor. One message,
    where `Stop` then pykka's `stop()` took three (pykka's queues an `_ActorStop`), at 10,000
    sessions a stop.

    Attributes:
        error: What the session's waiting asks, streams and readers fail with.
        shutdown: The whole supervisor stops: nothing will resume the session in this
            process, so its checkpoint is not kept in memory (at 10,000 sessions, storing them
            was a third of `stop()`, the dispatcher threads contending for the memory's lock).
    """

    error: SupervisorError
    shutdown: bool = False


class ActorKilled(Exception):
    """Raised by a SessionActor that was told `Kill`."""


@final
@dataclass(frozen=True, slots=True)
class ActorCrashed:
    """Told to the supervisor by a SessionActor whose handler raised. The actor lives on and
    stashes its mail until the supervisor answers `Restart` or `GiveUp`.

    Attributes:
        session_id: The session.
        actor_urn: Which actor crashed (a reaped session's next actor has another).
        error: What was raised.
    """

    session_id: str
    actor_urn: str
    error: Exception


@final
@dataclass(frozen=True, slots=True)
class Restart:
    """Told to a crashed SessionActor by its supervisor: rebuild the session's core from where
    the crashed one stood, re-attach the consumers, then handle the stashed mail."""


@final
@dataclass(frozen=True, slots=True)
class GiveUp:
    """Told to a crashed SessionActor by its supervisor: fail every consumer with `error`, and
    stop (its checkpoint is kept for the session's next actor)."""

    error: SessionFailed


@final
@dataclass(frozen=True, slots=True)
class Reaped:
    """Told to the supervisor by a SessionActor that stopped itself, idle for its TTL."""

    session_id: str
    actor_urn: str
