"""What every SessionActor of one supervisor shares (`SessionRuntime`), and where they publish
their figures (`SessionBoard`)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, final

from actors._changes import Changes
from actors._checkpoints import CheckpointMemory
from actors._clock import Clock
from actors._core import SessionSettings, SessionSnapshot
from actors._dispatcher import Dispatcher
from actors._follower import Follower
from actors._io import IOLoop
from actors._messages import Resume
from actors._parlant import ParlantApi
from actors._poller import Poller
from actors._recorder import Recorder

__all__ = ["Mailbox", "SessionBoard", "SessionRuntime"]


class Mailbox(Protocol):
    """What statistics read of an actor's inbox."""

    def qsize(self) -> int: ...

    def empty(self) -> bool: ...


@final
class SessionBoard:
    """Where live sessions publish their figures, for readers on any thread.

    Each SessionActor writes its own session's entries only (its latest snapshot, its inbox)
    and removes them when it stops, unless a successor's replaced them; the Supervisor actor
    alone counts starts. Readers (`statistics()`, `settle`, the Supervisor choosing where a new
    actor starts) take copies: one publication channel, never a decision made from another
    thread's state. Writes take one lock: an actor and its successor may run at once on two
    dispatcher threads, and removing the predecessor's entries is a check-then-delete.
    """

    __slots__ = ("_lock", "_mailboxes", "_snapshots", "started_total")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, SessionSnapshot] = {}
        self._mailboxes: dict[str, Mailbox] = {}
        self.started_total = 0
        """Session actors started (written by the Supervisor actor only)."""

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._snapshots

    def __len__(self) -> int:
        return len(self._snapshots)

    def snapshot(self, session_id: str) -> SessionSnapshot | None:
        """The session's latest snapshot, if it has a live actor."""
        return self._snapshots.get(session_id)

    def snapshots(self) -> list[SessionSnapshot]:
        """Every live session's latest snapshot (a copy of the list)."""
        return list(self._snapshots.values())

    def mailbox_depths(self) -> Iterator[int]:
        """Messages waiting in each live session's inbox."""
        return (inbox.qsize() for inbox in list(self._mailboxes.values()))

    def attach(self, session_id: str, inbox: Mailbox) -> None:
        with self._lock:
            self._mailboxes[session_id] = inbox

    def publish(self, session_id: str, snapshot: SessionSnapshot) -> None:
        with self._lock:
            self._snapshots[session_id] = snapshot

    def detach(self, session_id: str, snapshot: SessionSnapshot | None, inbox: Mailbox) -> None:
        """Remove an actor's entries, unless a successor's replaced them."""
        with self._lock:
            if snapshot is not None and self._snapshots.get(session_id) is snapshot:
                del self._snapshots[session_id]
            if self._mailboxes.get(session_id) is inbox:
                del self._mailboxes[session_id]


@final
@dataclass(frozen=True, slots=True)
class SessionRuntime:
    """What every SessionActor of one supervisor shares: built once, in full, and never
    rewired (the Runtime of `supervisor` builds it, starts it and stops it).

    Attributes:
        io: The I/O loop.
        dispatcher: The threads that run every SessionActor.
        poller: Runs the long-polls.
        follower: Follows streamed messages as Parlant writes them.
        api: Posts messages and reads history (and finishes checkpoint writes on close).
        clock: The injected clock.
        recorder: Where metrics go.
        settings: How sessions poll and buffer.
        checkpoints: Where each stopped session stopped, so a re-activated session resumes
            there (bounded: see `CheckpointMemory`).
        board: Where live sessions publish their snapshots and inboxes.
        rng: The randomness of every session's jitter and backoff (one for all: a Mersenne
            Twister is 2.9 KB, and seeding one from the OS was 5-7% of opening a session; its
            calls are atomic under the GIL, so dispatcher threads share it safely).
        changes: Notified once each handled message's change is complete (and by the
            recorder, the poller and the Supervisor actor): what `wait_until` waits on.
    """

    io: IOLoop
    dispatcher: Dispatcher
    poller: Poller
    follower: Follower
    api: ParlantApi
    clock: Clock
    recorder: Recorder
    settings: SessionSettings
    checkpoints: CheckpointMemory
    board: SessionBoard
    rng: random.Random
    changes: Changes

    def resume_of(self, session_id: str) -> Resume:
        """Where a new actor for the session starts: where its live or last actor stood (its
        checkpoint), else at 0."""
        live = self.board.snapshot(session_id)
        if live is not None:
            return Resume(live.checkpoint)
        remembered = self.checkpoints.recall(session_id)
        return remembered if remembered is not None else Resume(0)
