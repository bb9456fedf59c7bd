"""Words in a customer message that make a model fail, on the emulator and on `ParlantServer`'s
deterministic model alike."""

from __future__ import annotations

from typing import Final

__all__ = ["CUT_MARKER", "FAIL_MARKER"]

FAIL_MARKER: Final = "__fail__"
"""A customer message containing it makes the deterministic model raise on every generation
(a provider that is down): under the stock policy the turn fails (`status: error`)."""

CUT_MARKER: Final = "__cut__"
"""A customer message containing it makes a streamed reply fail after its first chunk (a stream
the provider cuts): the message is terminated as it stands and the turn fails."""
