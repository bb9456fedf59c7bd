"""Gauges computed at scrape time from the supervisor's statistics snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, final

from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from metrics._instruments import PREFIX

__all__ = ["DEPTH_BUCKETS", "StatisticsCollector", "StatisticsSource", "depth_histogram"]

DEPTH_BUCKETS: Final = (0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0)
"""Upper bounds of the per-session depth histograms (then +Inf)."""


def depth_histogram(depths: Iterable[int]) -> tuple[tuple[tuple[str, float], ...], float]:
    """Cumulative Prometheus buckets ((le, count), ..., ("+Inf", n)) and the sum of `depths`."""
    values = list(depths)
    buckets = tuple(
        (f"{bound:g}", float(sum(1 for v in values if v <= bound))) for bound in DEPTH_BUCKETS
    )
    return (*buckets, ("+Inf", float(len(values)))), float(sum(values))


class StatisticsSource(Protocol):
    """What the collector reads (the supervisor's `SupervisorStatistics` is one)."""

    @property
    def running(self) -> bool: ...
    @property
    def sessions_by_state(self) -> Mapping[Any, int]:
        """Count per state; each key's `.value` is the state's label (an enum member)."""
        ...

    @property
    def open_polls(self) -> int: ...
    @property
    def upstream(self) -> str:
        """`up`, `down` or `recovering`."""
        ...

    @property
    def held_polls(self) -> int: ...
    @property
    def waiting_polls(self) -> int: ...
    @property
    def rotating_polls(self) -> int: ...
    @property
    def poll_demand(self) -> int: ...
    @property
    def poll_ceiling(self) -> int | None: ...
    @property
    def buffered_events(self) -> int: ...
    @property
    def buffered_events_max(self) -> int: ...
    @property
    def mailbox_depth(self) -> int: ...
    @property
    def mailbox_depth_max(self) -> int: ...
    @property
    def waiting_replies(self) -> int: ...
    @property
    def readers(self) -> int: ...
    @property
    def buffered_events_per_session(self) -> Sequence[int]: ...
    @property
    def mailbox_depth_per_session(self) -> Sequence[int]: ...


@final
class StatisticsCollector(Collector):
    """A custom collector: every gauge is read from one fresh snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], StatisticsSource]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        """No description ahead of time: the registry then calls `collect` lazily."""
        return []

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        yield _gauge("up", "1 while the supervisor runs, 0 once it is stopping.", stats.running)
        sessions = GaugeMetricFamily(
            f"{PREFIX}_sessions", "Sessions with a live actor, by state.", labels=["state"]
        )
        for state, count in stats.sessions_by_state.items():
            sessions.add_metric([str(state.value)], count)
        yield sessions
        yield _gauge("open_polls", "Long-polls in flight.", stats.open_polls)
        upstream = GaugeMetricFamily(
            f"{PREFIX}_upstream",
            "1 for Parlant's health as the supervisor sees it (up, down: polls held and one "
            "probe asks, recovering: held polls readmitted at a bounded rate), else 0.",
            labels=["state"],
        )
        for state in ("up", "down", "recovering"):
            upstream.add_metric([state], float(stats.upstream == state))
        yield upstream
        yield _gauge("held_polls", "Polls held until Parlant is back.", stats.held_polls)
        yield _gauge(
            "waiting_polls",
            "Polls waiting on Parlant now (each costs it four reads of its store a second).",
            stats.waiting_polls,
        )
        yield _gauge(
            "rotating_polls",
            "Sessions beyond the ceiling of waiting polls, read in rotation.",
            stats.rotating_polls,
        )
        yield _gauge(
            "poll_demand",
            "Sessions that want a poll now: waiting on Parlant or read in rotation.",
            stats.poll_demand,
        )
        if stats.poll_ceiling is not None:
            yield _gauge(
                "poll_ceiling",
                "The most polls kept waiting on Parlant at once (max_waiting_polls).",
                stats.poll_ceiling,
            )
        yield _gauge(
            "buffered_events",
            "Unclaimed events held in memory, all sessions.",
            stats.buffered_events,
        )
        yield _gauge(
            "buffered_events_max",
            "Unclaimed events held by the fullest session.",
            stats.buffered_events_max,
        )
        yield _gauge(
            "mailbox_depth",
            "Messages waiting in session mailboxes, all sessions.",
            stats.mailbox_depth,
        )
        yield _gauge(
            "mailbox_depth_max",
            "Messages waiting in the deepest session mailbox.",
            stats.mailbox_depth_max,
        )
        yield _gauge(
            "waiting_replies", "Asks and streams waiting for their turn.", stats.waiting_replies
        )
        yield _gauge("readers", "events() readers subscribed.", stats.readers)
        yield _histogram(
            "session_buffered_events",
            "Unclaimed events held per session.",
            stats.buffered_events_per_session,
        )
        yield _histogram(
            "session_mailbox_depth",
            "Messages waiting per session mailbox.",
            stats.mailbox_depth_per_session,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))


def _histogram(name: str, documentation: str, depths: Sequence[int]) -> HistogramMetricFamily:
    buckets, total = depth_histogram(depths)
    return HistogramMetricFamily(
        f"{PREFIX}_{name}", documentation, buckets=list(buckets), sum_value=total
    )
