"""Opaque conversation tokens: what clients hold instead of Parlant's (predictable) ids."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, final

from supervisor.backend._agents import Intent

__all__ = ["Conversation", "Conversations"]

TOKEN_BYTES: Final = 32
"""256 random bits per token: unguessable, and nothing in it derives from Parlant's ids."""


@final
@dataclass(frozen=True, slots=True)
class Conversation:
    """A client's conversation: its token, the Parlant session behind it, and its agent."""

    token: str
    session_id: str
    intent: Intent


@final
class Conversations:
    """token -> Conversation, in memory, least recently used forgotten past `capacity`.

    A Parlant session id is never accepted in place of a token: a real server hands out the
    same ids again after a restart, so knowing one must not open anybody's conversation.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._by_token: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, session_id: str, intent: Intent) -> tuple[Conversation, list[Conversation]]:
        """A new token for the Parlant session, and the conversations forgotten to make room
        (their sessions should stop being polled: no token leads to them any more)."""
        conversation = Conversation(secrets.token_urlsafe(TOKEN_BYTES), session_id, intent)
        forgotten: list[Conversation] = []
        with self._lock:
            self._by_token[conversation.token] = conversation
            while len(self._by_token) > self._capacity:
                forgotten.append(self._by_token.popitem(last=False)[1])
        return conversation, forgotten

    def find(self, token: str) -> Conversation | None:
        """The conversation a token stands for, or None for an unknown (or forged) token."""
        with self._lock:
            conversation = self._by_token.get(token)
            if conversation is not None:
                self._by_token.move_to_end(token)
            return conversation

    def forget(self, token: str) -> Conversation | None:
        """Drop the token; returns what it stood for."""
        with self._lock:
            return self._by_token.pop(token, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_token)
