"""The backend's HTTP answer to each error of the supervisor's tree."""

from __future__ import annotations

import pytest

from supervisor import (
    AccessDenied,
    AgentError,
    InvalidInput,
    ParlantUnavailable,
    ReplyTimeout,
    SessionClosed,
    SessionFailed,
    SessionNotFound,
    SessionUnresponsive,
    ShardLost,
    SupervisorError,
    SupervisorStopped,
)
from supervisor.backend._app import _refusal


@pytest.mark.parametrize(
    ("error", "status", "retry"),
    [
        (ReplyTimeout("t"), 504, False),
        (ParlantUnavailable("p"), 503, True),
        (SupervisorStopped("s"), 503, True),
        (SessionUnresponsive("overloaded"), 503, True),
        (ShardLost("shard died"), 503, True),
        (SessionNotFound("n"), 404, False),
        (SessionClosed("c"), 404, False),
        (InvalidInput("i"), 422, False),
        (SessionFailed("f"), 503, False),
        (AgentError("a"), 502, False),
        (AccessDenied("d"), 502, False),
    ],
)
def test_every_error_of_the_tree_has_its_answer_and_none_is_a_500(
    error: SupervisorError, status: int, retry: bool
) -> None:
    refused = _refusal(error, "token")

    assert refused.status == status
    assert ("Retry-After" in (refused.headers or {})) is retry


@pytest.mark.parametrize(
    ("host", "client"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.2", "127.0.0.2"),  # IPv4 through a dual-stack socket: its own client
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # one subscriber, one /64
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
    ],
)
def test_each_client_is_counted_by_its_own_address(host: str, client: str) -> None:
    """With `--host ::`, every IPv4 client arrived as ::ffff:a.b.c.d and the /64 rule made
    them all one client: after 127.0.0.1 used its quota, 127.0.0.2 got 429 at once."""
    from supervisor.backend._app import client_of

    assert client_of(host) == client
