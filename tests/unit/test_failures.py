"""One map from an HTTP status to what it means, for polls and short requests alike."""

from __future__ import annotations

import pytest
from parlant.client.core.api_error import ApiError

from actors import (
    AccessDenied,
    InvalidInput,
    ParlantMisconfigured,
    ParlantUnavailable,
    SessionNotFound,
)
from actors._messages import FailureKind
from actors.runtime import translate_error


@pytest.mark.parametrize(
    ("status", "kind", "error"),
    [
        (401, FailureKind.FORBIDDEN, AccessDenied),
        (403, FailureKind.FORBIDDEN, AccessDenied),
        (404, FailureKind.NOT_FOUND, SessionNotFound),
        (422, FailureKind.REJECTED, InvalidInput),
        (429, FailureKind.RATE_LIMITED, ParlantUnavailable),
        (500, FailureKind.SERVER_ERROR, ParlantUnavailable),
        (503, FailureKind.SERVER_ERROR, ParlantUnavailable),
        (None, FailureKind.SERVER_ERROR, ParlantUnavailable),
    ],
)
def test_a_status_means_the_same_to_a_poll_and_to_a_short_request(
    status: int | None, kind: FailureKind, error: type[Exception]
) -> None:
    translated = translate_error(ApiError(status_code=status, body="x"), "http://p", "s1")

    assert FailureKind.of_status(status) is kind
    assert kind.error is error
    assert type(translated) is error
    assert translated.session_id == "s1"


def test_only_a_missing_or_forbidden_session_or_a_wrong_url_ends_a_poll_for_good() -> None:
    terminal = {kind for kind in FailureKind if kind.is_terminal}

    assert terminal == {FailureKind.NOT_FOUND, FailureKind.FORBIDDEN, FailureKind.MISCONFIGURED}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_wrong_url_not_a_server_error_to_retry_for_ever(status: int) -> None:
    """A 301 was taken for a server error and retried for ever (issue 28)."""
    assert FailureKind.of_status(status) is FailureKind.MISCONFIGURED
    assert FailureKind.MISCONFIGURED.error is ParlantMisconfigured
