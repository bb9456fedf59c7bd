"""Counters and histograms, recorded as things happen, on an injected `CollectorRegistry`.

No label carries a session id: the label values are small fixed sets.
"""

from __future__ import annotations

from typing import Final, final

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["PREFIX", "SupervisorMetrics"]

PREFIX: Final = "parlant_supervisor"

POLL_OUTCOMES: Final = (
    "events",
    "empty",
    "gateway_timeout",
    "client_timeout",
    "server_error",
    "rate_limited",
    "network",
    "malformed",
    "not_found",
    "forbidden",
    "rejected",
    "internal",
    "stale",
    "misconfigured",
)
REPLY_OUTCOMES: Final = (
    "answered",
    "timeout",
    "closed",
    "stopped",
    "not_found",
    "forbidden",
    "unavailable",
    "crashed",
    "invalid",
    "agent_error",
    "delivery_unknown",
    "misconfigured",
)
EVENT_KINDS: Final = ("message", "status", "tool", "custom", "other")
FAILURE_REASONS: Final = ("not_found", "forbidden", "misconfigured", "crashed")
POST_RETRY_REASONS: Final = ("refused", "found", "absent")
PACE_REASONS: Final = ("instant_timeout", "instant_empty", "stale")

_POLL_BUCKETS: Final = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 45, 60, 75)
_REPLY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


@final
class SupervisorMetrics:
    """The supervisor's counters and histograms, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._started = Counter(
            f"{PREFIX}_sessions_started",
            "Session actors started (first use, or re-open after a close or a reap; "
            "a crash restarts its actor in place).",
            registry=registry,
        )
        self._reactivated = Counter(
            f"{PREFIX}_sessions_reactivated",
            "Session actors started again for a session whose earlier actor had stopped.",
            registry=registry,
        )
        self._restarts = Counter(
            f"{PREFIX}_session_restarts",
            "Crashed session actors restarted by the supervisor.",
            registry=registry,
        )
        self._crashes = Counter(
            f"{PREFIX}_session_crashes",
            "Session actors that crashed; each is restarted after its backoff or, past the "
            "restart limit, given up.",
            registry=registry,
        )
        self._upstream = Counter(
            f"{PREFIX}_upstream_transitions",
            "Changes of Parlant's health as the supervisor sees it, by the state entered "
            "(down: polls held; recovering: the probe answered; up: every held poll readmitted).",
            ["state"],
            registry=registry,
        )
        self._reaped = Counter(
            f"{PREFIX}_sessions_reaped",
            "Idle session actors stopped after idle_ttl (re-activated on next use).",
            registry=registry,
        )
        self._stopped = Counter(
            f"{PREFIX}_sessions_stopped",
            "Session actors stopped (closed, or the supervisor stopped).",
            registry=registry,
        )
        self._failed = Counter(
            f"{PREFIX}_session_failures",
            "Sessions given up, by reason (not_found, forbidden, crashed past the restart limit).",
            ["reason"],
            registry=registry,
        )
        self._polls = Counter(
            f"{PREFIX}_polls",
            "Long-polls by outcome.",
            ["outcome"],
            registry=registry,
        )
        self._poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Time a long-poll was open.",
            buckets=_POLL_BUCKETS,
            registry=registry,
        )
        self._events = Counter(
            f"{PREFIX}_events_received",
            "Events received from Parlant, by kind.",
            ["kind"],
            registry=registry,
        )
        self._replies = Counter(
            f"{PREFIX}_replies",
            "Asks and streams by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self._reply_latency = Histogram(
            f"{PREFIX}_reply_latency_seconds",
            "Time from an ask or stream to the ready that completes its turn.",
            buckets=_REPLY_BUCKETS,
            registry=registry,
        )
        self._pauses = Counter(
            f"{PREFIX}_backpressure_pauses",
            "Times a session paused polling because a consumer stopped reading.",
            registry=registry,
        )
        self._evicted = Counter(
            f"{PREFIX}_events_evicted",
            "Unclaimed events dropped from memory because a session's window was full.",
            registry=registry,
        )
        self._failed_turns = Counter(
            f"{PREFIX}_turns_failed",
            "Agent turns Parlant failed (status: error: its engine raised, e.g. the model "
            "provider is down).",
            registry=registry,
        )
        self._abandoned = Counter(
            f"{PREFIX}_messages_abandoned",
            "Streamed agent messages Parlant never finished (a turn cancelled mid-message, "
            "or nothing written for wait_for_data), released as they stood.",
            registry=registry,
        )
        self._budget_waits = Counter(
            f"{PREFIX}_budget_waits",
            "Requests held back by the request budget (or a 429's pause), by operation.",
            ["operation"],
            registry=registry,
        )
        self._post_retries = Counter(
            f"{PREFIX}_post_retries",
            "Customer-message posts that went on after a failure, by reason: refused "
            "(certainly not sent, sent again), found (the answer was lost, the log holds it), "
            "absent (proved absent from the log, sent again with the same key).",
            ["reason"],
            registry=registry,
        )
        for reason in POST_RETRY_REASONS:
            self._post_retries.labels(reason)
        self._duplicate_posts = Counter(
            f"{PREFIX}_duplicate_posts",
            "Customer messages found stored twice (one post key at two offsets): a cut "
            "request that landed after the log proved it absent. Should stay 0.",
            registry=registry,
        )
        self._paced = Counter(
            f"{PREFIX}_poll_paces",
            "Polls held back before going again after answers that cannot be right, by "
            "reason: instant_timeout, instant_empty, stale (only offsets already read).",
            ["reason"],
            registry=registry,
        )
        for reason in PACE_REASONS:
            self._paced.labels(reason)
        self._restarted_polls = Counter(
            f"{PREFIX}_polls_restarted",
            "Polls that could not be alive (a message the session posted was stored and the "
            "poll did not bring it: a lost flow), restarted on a new connection.",
            registry=registry,
        )
        self._collectors = (
            self._paced,
            self._restarted_polls,
            self._post_retries,
            self._duplicate_posts,
            self._budget_waits,
            self._failed_turns,
            self._abandoned,
            self._started,
            self._reactivated,
            self._restarts,
            self._crashes,
            self._upstream,
            self._reaped,
            self._stopped,
            self._failed,
            self._polls,
            self._poll_duration,
            self._events,
            self._replies,
            self._reply_latency,
            self._pauses,
            self._evicted,
        )
        # every label value exists from the start: rate() and alerts see zeros, not gaps
        for outcome in POLL_OUTCOMES:
            self._polls.labels(outcome)
        for state in ("down", "recovering", "up"):
            self._upstream.labels(state)
        for kind in EVENT_KINDS:
            self._events.labels(kind)
        for reason in FAILURE_REASONS:
            self._failed.labels(reason)
        for reply_kind in ("ask", "stream"):
            for outcome in REPLY_OUTCOMES:
                self._replies.labels(reply_kind, outcome)

    def unregister(self) -> None:
        """Remove every instrument from the registry (the supervisor has stopped)."""
        for collector in self._collectors:
            self.registry.unregister(collector)

    def session_started(self, *, reactivated: bool) -> None:
        self._started.inc()
        if reactivated:
            self._reactivated.inc()

    def session_stopped(self) -> None:
        self._stopped.inc()

    def session_restarted(self) -> None:
        self._restarts.inc()

    def session_reaped(self) -> None:
        self._reaped.inc()

    def session_crashed(self) -> None:
        self._crashes.inc()

    def upstream_changed(self, state: str) -> None:
        self._upstream.labels(state).inc()

    def session_failed(self, reason: str) -> None:
        self._failed.labels(reason).inc()

    def poll_finished(self, outcome: str, seconds: float) -> None:
        self._polls.labels(outcome).inc()
        self._poll_duration.observe(seconds)

    def events_received(self, kind: str, count: int) -> None:
        self._events.labels(kind if kind in EVENT_KINDS else "other").inc(count)

    def reply_finished(self, kind: str, outcome: str, seconds: float) -> None:
        self._replies.labels(kind, outcome).inc()
        if outcome == "answered":
            self._reply_latency.observe(seconds)

    def backpressure_paused(self) -> None:
        self._pauses.inc()

    def turns_failed(self, count: int) -> None:
        self._failed_turns.inc(count)

    def budget_waited(self, operation: str) -> None:
        self._budget_waits.labels(operation).inc()

    def messages_abandoned(self, count: int) -> None:
        self._abandoned.inc(count)

    def post_retried(self, reason: str) -> None:
        self._post_retries.labels(reason).inc()

    def duplicate_posts(self, count: int) -> None:
        self._duplicate_posts.inc(count)

    def poll_paced(self, reason: str) -> None:
        self._paced.labels(reason).inc()

    def polls_restarted(self, count: int) -> None:
        self._restarted_polls.inc(count)

    def events_evicted(self, count: int) -> None:
        self._evicted.inc(count)
