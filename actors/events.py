"""Reading Parlant events: what a session's log holds, as this library understands it.

Predicates over `parlant.client.types.Event` (agent messages, preambles, streamed messages not
yet finished, status events) and the metadata namespace this library writes into every customer
message it posts (`{"parlant_supervisor": {"post": key}}`). `docs/PARLANT.md` says what each
one relies on in Parlant's protocol.
"""

from actors._events import (
    PREAMBLE_TAG,
    agent_status,
    is_customer_message,
    is_incomplete,
    is_message,
    is_preamble,
    message_text,
)
from actors._messages import StreamItem
from actors._posting import METADATA_NAMESPACE, key_of

__all__ = [
    "METADATA_NAMESPACE",
    "PREAMBLE_TAG",
    "StreamItem",
    "agent_status",
    "is_customer_message",
    "is_incomplete",
    "is_message",
    "is_preamble",
    "key_of",
    "message_text",
]
