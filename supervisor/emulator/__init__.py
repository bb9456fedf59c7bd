"""The Parlant emulator: a Parlant-compatible server on 127.0.0.1 with scripted agents.

A product part, not only a test helper: it is the reference backend's embedded default (`python
-m supervisor serve` with no `--parlant`), the server of the demo and the benchmarks, and the
test double of `supervisor.testing` (which re-exports every name here). It speaks the subset of
Parlant's API that conversations use, as measured on a real server (`docs/PARLANT.md`); the
conformance tests run the same scenarios on both.

- `ParlantEmulator`: the ASGI app, with agents (`EmulatedAgent`) scripted in Python (`echo`,
  `scripted`, or any `AgentScript` writing a turn through its `TurnContext`), block-mode or
  streaming; a script that raises (`ModelFailure`) fails its turn as Parlant does.
- `ParlantCost` (`ParlantEmulator.cost()`): what the requests served would have cost a real
  Parlant, counted as Parlant spends it (requests by operation, the store reads of waiting
  polls and reads), so that a test can assert what a scenario costs Parlant.
- `EmulatorServer`: the emulator served by uvicorn on a thread of its own; `AppServer`: any
  ASGI app (the reference backend, yours) served the same way.
- `FAIL_MARKER`, `CUT_MARKER`: in a customer message, they make the model fail the turn, or
  cut a streamed answer after its first chunk (on `ParlantServer`'s model too).

Needs starlette and uvicorn (the `[testing]` extra; `[backend]` includes them).
"""

from supervisor._extras import require_extra

require_extra("testing", "starlette", "uvicorn", what="supervisor.emulator")

from supervisor.emulator._emulator import (  # noqa: E402
    AgentScript,
    EmulatedAgent,
    ModelFailure,
    ParlantCost,
    ParlantEmulator,
    TurnContext,
    echo,
    scripted,
)
from supervisor.emulator._markers import CUT_MARKER, FAIL_MARKER  # noqa: E402
from supervisor.emulator._server import AppServer, EmulatorServer  # noqa: E402

__all__ = [
    "CUT_MARKER",
    "FAIL_MARKER",
    "AgentScript",
    "AppServer",
    "EmulatedAgent",
    "EmulatorServer",
    "ModelFailure",
    "ParlantCost",
    "ParlantEmulator",
    "TurnContext",
    "echo",
    "scripted",
]
