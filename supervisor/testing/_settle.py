"""settle(): wait until a supervisor has nothing left to do, instead of sleeping."""

from __future__ import annotations

from typing import Final

from actors.runtime import Deadline
from supervisor._facade import SessionSupervisor

__all__ = ["settle"]

_STABLE_ROUNDS: Final = 2


def settle(supervisor: SessionSupervisor, timeout: float = 10.0) -> None:
    """Return once every message sent so far has been handled by every actor.

    It passes a barrier through the Supervisor actor, each SessionActor and the I/O loop,
    until two rounds in a row find every mailbox empty. Work that waits on the network (an
    open poll) is not waited for: settle after the server's answer is known to have arrived.

    Raises:
        TimeoutError: the actors were still busy after `timeout` seconds.
    """
    deadline = Deadline(timeout)
    stable = 0
    while stable < _STABLE_ROUNDS:
        if deadline.remaining() <= 0:
            raise TimeoutError(f"actors still busy after {timeout} s")
        try:
            quiet = supervisor.runtime.quiet(deadline)
        except TimeoutError:
            raise TimeoutError(f"actors still busy after {timeout} s") from None
        stable = stable + 1 if quiet else 0
