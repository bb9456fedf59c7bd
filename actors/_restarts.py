"""Restart intensity: how often a session's actor may crash before it is given up (pure)."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import final

from actors._backoff import Backoff

__all__ = ["RestartDecision", "RestartPolicy", "RestartTracker"]


@final
@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """At most `max_restarts` restarts within `restart_window` seconds, per session.

    The defaults follow Erlang/OTP's spirit (a few restarts in a short window, then escalate)
    with Akka's backoff between restarts, so a crash loop neither spins nor hammers Parlant.

    Attributes:
        max_restarts: Restarts allowed within the window; one more crash gives the session up.
        restart_window: Seconds over which restarts are counted.
        backoff: Delay before each restart (full jitter, grows with recent restarts).
    """

    max_restarts: int = 3
    restart_window: float = 60.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.1, cap=5.0))

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.restart_window <= 0:
            raise ValueError(
                "need max_restarts >= 0 and restart_window > 0, got "
                f"max_restarts={self.max_restarts} restart_window={self.restart_window}"
            )


@final
@dataclass(frozen=True, slots=True)
class RestartDecision:
    """Restart at clock time `restart_at`, or give up (`restart_at is None`)."""

    restart_at: float | None
    restarts_in_window: int


@final
class RestartTracker:
    """One session's recent restarts, judged against a policy."""

    def __init__(self, policy: RestartPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._restarts: deque[float] = deque()

    def crashed(self, now: float) -> RestartDecision:
        """The actor crashed at `now`: when to restart it, or give up."""
        while self._restarts and self._restarts[0] <= now - self._policy.restart_window:
            self._restarts.popleft()
        if len(self._restarts) >= self._policy.max_restarts:
            return RestartDecision(None, len(self._restarts))
        delay = self._policy.backoff.delay(len(self._restarts), self._rng)
        self._restarts.append(now)
        return RestartDecision(now + delay, len(self._restarts))
