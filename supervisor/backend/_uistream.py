"""The Vercel AI SDK's UI message stream protocol (v1): one turn as `useChat` reads it.

```
data: {"type":"start","messageId":"turn-4"}
data: {"type":"data-parlant-status","data":{"status":"processing"},"transient":true}
data: {"type":"text-start","id":"msg-6","providerMetadata":{"parlant":{"preamble":true}}}
data: {"type":"text-delta","id":"msg-6","delta":"Let me check."}
data: {"type":"text-end","id":"msg-6"}
data: {"type":"finish"}              (a failed turn: {"type":"error","errorText":"..."})
data: [DONE]
```

The same turn and the same frames as the backend's own protocol (`_stream.py`), written as
the SDK's chunks: the SDK reads only `data:` lines and checks each against its chunk schema
(`uiMessageChunkSchema`), so every name here is one of its types. Parlant's statuses are
transient `data-parlant-status` parts (kept out of the message history); a preamble ("Let me
check.") is a text part whose `providerMetadata.parlant.preamble` is true. The conversation's
token never goes out: the chat id the SDK sends is the conversation's name.
"""

from __future__ import annotations

from typing import Any, Final

from supervisor.backend._stream import Frame

__all__ = ["DONE", "HEADERS", "chunks"]

HEADERS: Final = {"x-vercel-ai-ui-message-stream": "v1"}
"""What tells the SDK this is its protocol (sent with every such response)."""

DONE: Final = "[DONE]"
"""The last `data:` of a stream, after `finish` or `error`."""


def chunks(frame: Frame) -> list[dict[str, Any]]:
    """The SDK's chunks for one of the backend's frames."""
    data = frame.data
    match frame.event:
        case "session":  # the turn begins: one assistant message per turn
            return [{"type": "start", "messageId": f"turn-{frame.position.origin}"}]
        case "status":
            return [{"type": "data-parlant-status", "data": data, "transient": True}]
        case "text-start":
            metadata = {"parlant": {"preamble": bool(data.get("preamble"))}}
            return [{"type": "text-start", "id": data["id"], "providerMetadata": metadata}]
        case "text-delta":
            return [{"type": "text-delta", "id": data["id"], "delta": data["delta"]}]
        case "text-end":
            return [{"type": "text-end", "id": data["id"]}]
        case "end":
            return [{"type": "finish"}]
        case "error":
            return [{"type": "error", "errorText": str(data.get("detail", "the turn failed"))}]
    return []
