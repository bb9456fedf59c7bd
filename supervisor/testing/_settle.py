"""settle(): wait until a supervisor has nothing left to do, instead of sleeping."""

from __future__ import annotations

import asyncio
from typing import Final

import pykka

from actors._actor import Barrier, SessionActor
from actors._clock import Deadline
from supervisor._facade import SessionSupervisor
from supervisor._supervisor import SessionRefs

__all__ = ["settle"]

_STABLE_ROUNDS: Final = 2


async def _nothing() -> None:
    await asyncio.sleep(0)


def settle(supervisor: SessionSupervisor, timeout: float = 10.0) -> None:
    """Return once every message sent so far has been handled by every actor.

    It passes a barrier through the Supervisor actor, each SessionActor and the I/O loop,
    until two rounds in a row find every mailbox empty. Work that waits on the network (an
    open poll) is not waited for: settle after the server's answer is known to have arrived.

    Raises:
        TimeoutError: the actors were still busy after `timeout` seconds.
    """
    deadline = Deadline(timeout)
    internals = supervisor._internals()
    stable = 0
    while stable < _STABLE_ROUNDS:
        if deadline.remaining() <= 0:
            raise TimeoutError(f"actors still busy after {timeout} s")
        refs: list[pykka.ActorRef[SessionActor]] = internals.supervisor.ask(
            SessionRefs(), block=True, timeout=deadline.remaining()
        )
        for ref in refs:
            try:
                ref.ask(Barrier(), timeout=deadline.remaining())
            except pykka.ActorDeadError:
                continue
        internals.io.submit(_nothing()).result(timeout=deadline.remaining())
        busy = not internals.supervisor.actor_inbox.empty() or any(
            inbox.qsize() for inbox in list(internals.runtime.mailboxes.values())
        )
        stable = 0 if busy else stable + 1
