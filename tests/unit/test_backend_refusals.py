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
