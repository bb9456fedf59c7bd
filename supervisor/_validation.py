"""The argument checks every supervisor makes, in one place: a bad call fails before anything
is sent, with the same `InvalidInput` from a local supervisor and a sharded one."""

from __future__ import annotations

from typing import Final

from actors import InvalidInput

__all__ = ["MAX_KEY", "require_ask", "require_id", "require_since"]

MAX_KEY: Final = 200
"""Characters a caller's `post_key` may have (it travels in every copy of the message)."""


def require_id(name: str, value: object) -> None:
    """`value` is a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")


def require_since(since: int | None, session_id: str) -> None:
    """`since` is None or an offset."""
    if since is not None and since < 0:
        raise InvalidInput(f"since must be >= 0, got {since}", session_id=session_id)


def require_ask(
    session_id: str,
    message: object,
    timeout: float | None,
    post_key: str | None,
    max_message_length: int,
) -> None:
    """An ask's or a stream's arguments; the error says that nothing was sent."""
    require_id("session_id", session_id)
    if not isinstance(message, str) or not message.strip():
        raise InvalidInput(
            f"session {session_id}: the message is empty; nothing was sent", session_id=session_id
        )
    if len(message) > max_message_length:
        raise InvalidInput(
            f"session {session_id}: the message has {len(message)} characters, more than "
            f"max_message_length={max_message_length}; nothing was sent",
            session_id=session_id,
        )
    if timeout is not None and not timeout > 0:
        raise InvalidInput(f"timeout must be > 0 seconds, got {timeout}", session_id=session_id)
    if post_key is not None and (
        not isinstance(post_key, str) or not post_key.strip() or len(post_key) > MAX_KEY
    ):
        raise InvalidInput(
            f"post_key must be a non-empty string of at most {MAX_KEY} characters; "
            "nothing was sent",
            session_id=session_id,
        )
