"""One health signal per Parlant upstream: is it there, and how fast may sessions come back?

Pure (no I/O, no clock: times are passed in); the poller drives it on the I/O loop.

```
UP ──(a connection refused, or THRESHOLD failures in a row from 2+ sessions)──> DOWN
DOWN ──(a probe answered: any status below 500)──> RECOVERING
RECOVERING ──(every held poll readmitted)──> UP      RECOVERING ──(a failure)──> DOWN
```

While DOWN, sessions do not probe on their own: their polls are held, and one probe, spaced by
gRPC's connection backoff (initial delay, x1.6, jitter 0.2, capped), asks whether the server is
back. Then the held polls are readmitted at a bounded rate (all within `ramp` seconds, at most
`max_rate` a second): back at once, without a herd.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final, final

__all__ = ["Readmission", "Upstream", "UpstreamState"]

THRESHOLD: Final = 3
"""Failed requests in a row (no success between, from two sessions or more) that make an upstream
down: one session's own failures (a session its server cannot serve) do not."""


@final
class UpstreamState(enum.Enum):
    """UP: requests go out. DOWN: polls are held, one probe asks. RECOVERING: readmitting."""

    UP = "up"
    DOWN = "down"
    RECOVERING = "recovering"


@final
@dataclass(frozen=True, slots=True)
class Readmission:
    """How held polls come back: all within `ramp` seconds, at most `max_rate` a second, at
    least `min_rate` a second."""

    ramp: float = 2.0
    max_rate: float = 1000.0
    min_rate: float = 200.0

    def __post_init__(self) -> None:
        if self.ramp <= 0 or not 0 < self.min_rate <= self.max_rate:
            raise ValueError(
                "readmission needs ramp > 0 and 0 < min_rate <= max_rate, got "
                f"ramp={self.ramp} min_rate={self.min_rate} max_rate={self.max_rate}"
            )

    def rate(self, held: int) -> float:
        """Polls a second to readmit `held` held polls."""
        return min(self.max_rate, max(self.min_rate, held / self.ramp))


@final
class Upstream:
    """The health of one upstream, fed with the outcome of every request to it.

    Args:
        rng: Jitter for the probe's backoff.
        probe_initial: Seconds before the first probe.
        probe_cap: The longest pause between two probes (a probe is one small request: keep it
            short, so that recovery is noticed within a second or so).
    """

    def __init__(
        self, rng: random.Random, *, probe_initial: float = 0.1, probe_cap: float = 0.25
    ) -> None:
        self._rng = rng
        self._probe_initial = probe_initial
        self._probe_cap = probe_cap
        self.state = UpstreamState.UP
        self._failures = 0
        self._failing: set[str] = set()  # sessions of the failures in a row
        self._probes = 0

    def failed(self, session_id: str, *, refused: bool) -> bool:
        """A request failed for the upstream's reasons (refused, reset, 5xx); True if that
        made it DOWN just now."""
        if self.state is UpstreamState.DOWN:
            return False
        self._failures += 1
        self._failing.add(session_id)
        if refused or (self._failures >= THRESHOLD and len(self._failing) >= 2):
            self.state = UpstreamState.DOWN
            self._probes = 0
            return True
        return False

    def succeeded(self) -> None:
        """A request got a real answer: failures in a row start again from zero."""
        self._failures = 0
        self._failing.clear()

    def probe_delay(self) -> float:
        """Seconds until the next probe (gRPC connection backoff: x1.6, jitter 0.2, capped)."""
        # the exponent stops growing once the cap is reached: 1.6 ** n overflows a float past
        # n = 1,510, and an outage probes four times a second
        base = min(self._probe_cap, self._probe_initial * 1.6 ** min(self._probes, 64))
        self._probes += 1
        return base * self._rng.uniform(0.8, 1.2)

    def probe_answered(self) -> None:
        """The probe got an answer: readmit the held polls."""
        if self.state is UpstreamState.DOWN:
            self.state = UpstreamState.RECOVERING
            self.succeeded()

    def readmitted(self) -> None:
        """Every held poll went out again."""
        if self.state is UpstreamState.RECOVERING:
            self.state = UpstreamState.UP
