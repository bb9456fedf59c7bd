"""Retry delays: capped exponential backoff with full jitter (a pure function)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import final

__all__ = ["Backoff"]


@final
@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n)).

    Full jitter spreads a crowd of clients that failed together (a server outage) so they do
    not come back together. A server's `Retry-After` is a floor, never shortened.

    Attributes:
        base: Seconds of the first attempt's ceiling.
        cap: The ceiling no attempt exceeds (before `Retry-After`).
    """

    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base} cap={self.cap}")

    def delay(self, attempt: int, rng: random.Random, *, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 62))
        jittered = rng.uniform(0.0, ceiling)
        return max(jittered, retry_after) if retry_after is not None else jittered
