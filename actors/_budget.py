"""A client-side request budget per Parlant operation: shape requests before the server refuses
them, and share what a 429 says with every request of its kind.

Parlant's production policy limits each client IP with moving windows (240 `list_events` a
minute, 30 customer messages, 30 session reads, 10 guest sessions, 100 of anything else) and
answers 429 beyond. One process long-polling many sessions from one IP meets that while idle.
The budget mirrors the server's moving windows (a token bucket would admit up to twice its rate
within one window), raises `wait_for_data` as the number of sessions needs, and pauses an
operation for everyone when Parlant answers 429.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, final

__all__ = ["MAX_WAIT_FOR_DATA", "OPERATIONS", "Budget", "RequestBudget"]

MAX_WAIT_FOR_DATA: Final = 240
"""The longest a poll asks Parlant to wait, however many polls the budget spreads out: the
smallest common idle timeout of the boxes between a client and a server (Azure's load
balancer: 4 minutes; AWS's NLB 350 s, GCP's 10 minutes, NATs mostly 5 minutes and more). Our
keepalive probes (every 5 s) keep a flow alive through them anyway; this bounds a poll through
one that ignores them. An HTTP proxy in front of Parlant counts only bytes: keep
`wait_for_data` below its read timeout (nginx and AWS's ALB: 60 s by default)."""

OPERATIONS: Final = (
    "list_events",
    "create_customer_event",
    "read_session",
    "create_guest_session",
    "other",
)
"""The operations a budget tells apart (Parlant's own names; `other` for the rest)."""

_DEFAULT_PAUSE: Final = 1.0
"""Seconds an operation pauses after a 429 that gave no `Retry-After` (Parlant's gives none)."""


@final
@dataclass(frozen=True, slots=True)
class RequestBudget:
    """Requests this client may send Parlant per operation, each `window` seconds (an
    operation left out is unlimited).

    Attributes:
        limits: operation (see `OPERATIONS`) -> requests per window.
        window: The window's length, in seconds (Parlant's are a minute).
        headroom: The share of each limit to use (room for clock skew, retries, and other
            clients behind the same IP).
        idle_share: The share of each operation's budget that background requests may take:
            the polls of readers and lingering sessions, waiting or read in rotation
            (`poll_wait` spaces the waiting ones so). The rest is kept for turns in progress,
            whose polls go again at each event Parlant writes (about four a turn).
    """

    limits: Mapping[str, int] = field(default_factory=dict)
    window: float = 60.0
    headroom: float = 0.9
    idle_share: float = 0.5

    def __post_init__(self) -> None:
        unknown = sorted(set(self.limits) - set(OPERATIONS))
        if unknown:
            raise ValueError(f"unknown operations {unknown}; choose among {list(OPERATIONS)}")
        if any(limit < 1 for limit in self.limits.values()):
            raise ValueError(f"every limit must be >= 1 request, got {dict(self.limits)}")
        if self.window <= 0 or not 0 < self.headroom <= 1 or not 0 < self.idle_share <= 1:
            raise ValueError(
                "need window > 0, 0 < headroom <= 1 and 0 < idle_share <= 1, got "
                f"{self.window}, {self.headroom}, {self.idle_share}"
            )
        object.__setattr__(self, "limits", dict(self.limits))  # ours: a caller's may change

    @classmethod
    def parlant_production(cls) -> RequestBudget:
        """Parlant 3.3's production policy (`PARLANT_ENV=production`), per client IP."""
        return cls(
            {
                "list_events": 240,
                "create_customer_event": 30,
                "read_session": 30,
                "create_guest_session": 10,
                "other": 100,
            }
        )

    def scaled(self, factor: float) -> RequestBudget:
        """The same budget with every limit multiplied by `factor` (a policy of your own)."""
        return replace(
            self, limits={op: max(1, round(n * factor)) for op, n in self.limits.items()}
        )

    def allowed(self, operation: str, *, background: bool = False) -> int | None:
        """Requests of `operation` per window this client sends (None: unlimited); with
        `background`, those that background requests may take (`idle_share` of them)."""
        limit = self.limits.get(operation)
        if limit is None:
            return None
        allowed = max(1, math.floor(limit * self.headroom))
        return max(1, math.floor(allowed * self.idle_share)) if background else allowed

    def polls_within(self, wait_for_data: int) -> int | None:
        """How many background polls may wait at once, each `wait_for_data` seconds, within
        the background share of `list_events` (None: unlimited)."""
        idle = self.allowed("list_events", background=True)
        return None if idle is None else max(1, math.floor(idle * wait_for_data / self.window))

    def poll_wait(self, sessions: int, wait_for_data: int) -> int:
        """The `wait_for_data` that keeps `sessions` idle long-polls within their share of the
        `list_events` budget (at least `wait_for_data`, at most `MAX_WAIT_FOR_DATA`; Parlant
        sets no maximum: the ceiling of waiting polls keeps them within it)."""
        idle = self.allowed("list_events", background=True)
        if idle is None:
            return wait_for_data
        spread = max(wait_for_data, math.ceil(sessions * self.window / idle))
        return min(spread, max(wait_for_data, MAX_WAIT_FOR_DATA))


@final
class Budget:
    """The budget at work, on the I/O loop: `take` waits until a request of an operation may
    go. Without a `RequestBudget` it only shares 429 pauses. Use it on one event loop."""

    def __init__(
        self,
        budget: RequestBudget | None,
        now: Callable[[], float],
        waited: Callable[[str], None] = lambda operation: None,
    ) -> None:
        self.budget = budget
        self._now = now
        self._waited = waited  # told once for each request that had to wait
        self._sent: dict[str, deque[float]] = {op: deque() for op in OPERATIONS}
        self._background: dict[str, deque[float]] = {op: deque() for op in OPERATIONS}
        self._paused_until: dict[str, float] = dict.fromkeys(OPERATIONS, 0.0)

    async def take(self, operation: str, *, background: bool = False) -> None:
        """Wait until a request of `operation` may go, and count it. A `background` one (a
        reader's or a lingering session's poll) goes only within the budget's `idle_share`,
        so that turns always find room."""
        # each sleep ends exactly when the window frees; another request may take that room
        # first, hence the loop (no event to wait for: the room comes back with time)
        if self.delay(operation, background=background) > 0:
            self._waited(operation)
        while (delay := self.delay(operation, background=background)) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)
        now = self._now()
        self._sent[operation].append(now)
        if background:
            self._background[operation].append(now)

    def delay(self, operation: str, *, background: bool = False) -> float:
        """Seconds until a request of `operation` may go (<= 0: now)."""
        now = self._now()
        delay = self._paused_until[operation] - now
        budget = self.budget
        if budget is None:
            return delay
        windows = [(self._sent[operation], budget.allowed(operation))]
        if background:
            windows.append(
                (self._background[operation], budget.allowed(operation, background=True))
            )
        for sent, allowed in windows:  # moving windows, as Parlant's
            if allowed is None:
                continue
            while sent and now - sent[0] >= budget.window:
                sent.popleft()
            if len(sent) >= allowed:
                delay = max(delay, sent[0] + budget.window - now)
        return delay

    def refused(self, operation: str, retry_after: float | None) -> None:
        """Parlant answered a request of `operation` 429: every request of it waits."""
        until = self._now() + (retry_after if retry_after is not None else _DEFAULT_PAUSE)
        self._paused_until[operation] = max(self._paused_until[operation], until)

    def poll_wait(self, sessions: int, wait_for_data: int) -> int:
        """See `RequestBudget.poll_wait` (`wait_for_data` itself without a budget)."""
        if self.budget is None:
            return wait_for_data
        return self.budget.poll_wait(sessions, wait_for_data)
