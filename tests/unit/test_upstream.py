"""Upstream: one health signal per Parlant, fed with every poll's outcome (pure, no clock)."""

from __future__ import annotations

import random

import pytest

from actors._upstream import THRESHOLD, Readmission, Upstream, UpstreamState


def test_a_refused_connection_makes_the_upstream_down_at_once() -> None:
    upstream = Upstream(random.Random(1))
    assert upstream.failed("s1", refused=True)
    assert upstream.state is UpstreamState.DOWN
    assert not upstream.failed("s2", refused=True)  # it is down already: no second transition


def test_failures_in_a_row_from_several_sessions_make_it_down() -> None:
    upstream = Upstream(random.Random(1))
    for _ in range(THRESHOLD - 1):
        assert not upstream.failed("s1", refused=False)
    assert upstream.failed("s2", refused=False)


def test_one_sessions_own_failures_or_failures_between_successes_do_not() -> None:
    upstream = Upstream(random.Random(1))
    for _ in range(10):
        upstream.failed("bad", refused=False)  # a session its server cannot serve
    assert upstream.state is UpstreamState.UP
    upstream.succeeded()
    for _ in range(10):
        upstream.failed("s1", refused=False)
        upstream.succeeded()
        upstream.failed("s2", refused=False)
        upstream.succeeded()
    assert upstream.state is UpstreamState.UP


def test_probes_back_off_like_grpc_connections_capped_and_jittered() -> None:
    upstream = Upstream(random.Random(1), probe_initial=0.2, probe_cap=0.5)
    upstream.failed("s", refused=True)
    delays = [upstream.probe_delay() for _ in range(8)]
    bases = [min(0.5, 0.2 * 1.6**n) for n in range(8)]
    assert all(0.8 * base <= delay <= 1.2 * base for delay, base in zip(delays, bases, strict=True))
    assert max(delays) <= 0.6


def test_an_answered_probe_readmits_then_the_upstream_is_up_again() -> None:
    upstream = Upstream(random.Random(1))
    upstream.failed("s", refused=True)
    upstream.probe_answered()
    assert upstream.state is UpstreamState.RECOVERING
    upstream.readmitted()
    assert upstream.state is UpstreamState.UP
    upstream.failed("s", refused=True)  # down again later: probes start afresh
    assert upstream.probe_delay() <= 0.2 * 1.2


def test_a_failure_while_recovering_makes_it_down_again() -> None:
    upstream = Upstream(random.Random(1))
    upstream.failed("s", refused=True)
    upstream.probe_answered()
    assert upstream.failed("s", refused=True)
    assert upstream.state is UpstreamState.DOWN


def test_held_polls_are_readmitted_within_the_ramp_at_a_bounded_rate() -> None:
    readmission = Readmission(ramp=2.0, max_rate=1000, min_rate=200)
    assert readmission.rate(1000) == 500
    assert Readmission().rate(1200) == 600  # the default: all within 2 s
    assert readmission.rate(10_000) == 1000  # 10 s: the rate is bounded
    assert readmission.rate(10) == 200  # a few come back at once
    with pytest.raises(ValueError, match="ramp"):
        Readmission(ramp=0)


def test_probes_stay_capped_however_long_the_upstream_stays_down() -> None:
    """A long outage probes thousands of times: 1.6 ** n overflowed a float past ~1,500
    probes, and the OverflowError killed the recovery for good (issue 28: Parlant back,
    answering posts, and every poll still held)."""
    upstream = Upstream(random.Random(1), probe_initial=0.1, probe_cap=0.25)
    upstream.failed("s", refused=True)
    delays = [upstream.probe_delay() for _ in range(5000)]
    assert max(delays) <= 0.25 * 1.2
