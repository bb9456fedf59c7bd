"""Test support that users can import too, like `structlog.testing`.

- `ParlantEmulator` + `EmulatorServer` (from `supervisor.emulator`, the product part the
  backend embeds): a Parlant-compatible server on 127.0.0.1 with scriptable agents (`echo`,
  `scripted`, or any `AgentScript`), block-mode or streaming; a script that raises
  (`ModelFailure`) fails its turn as Parlant does; `ParlantCost` (`emulator.cost()`) says what
  the requests it served would have cost a real Parlant.
- `FaultProxy` and its faults (`Reset`, `ResetMidResponse`, `Drop`, `Hang`, `Delay`,
  `Respond`): real sockets failing in chosen, seeded ways, in front of any Parlant URL.
- `ParlantServer`: a real Parlant server (the `[parlant-server]` extra) in a subprocess,
  answering through a deterministic model (streaming, or failing on purpose): integration
  tests against the real thing.
- `FAIL_MARKER`, `CUT_MARKER`: in a customer message, they make both servers' models fail the
  turn (a provider that is down), or cut a streamed answer after its first chunk.
- `AppServer`: any ASGI app (the reference backend, yours) served by uvicorn on 127.0.0.1.
- `NetworkNamespace`, `FarEmulator`: a server behind a real link (a network namespace and a
  veth pair, as root), cut by the network's faults: silent partitions, lost flows, packet
  loss, a host that vanishes; `namespaces_unavailable()` says why a machine cannot.
- `kill_session_actor()`: a session's actor fails as a bug would (it is restarted).
- `kill_shard()`: a `ShardedSupervisor`'s shard process dies (Ray restarts it).
- `FakeClock` and `settle()`: tests that never sleep.
- `wait_until()` and `metric()`: wait for a state (a counter reached, Parlant seen down), woken
  by each change of the supervisor's, instead of for the log line that reports it.
"""

from supervisor._extras import require_extra

require_extra(
    "testing", "fastapi", "starlette", "uvicorn", "limits", what="supervisor.testing (the emulator)"
)

from supervisor.emulator import (
    CUT_MARKER,
    FAIL_MARKER,
    AgentScript,
    AppServer,
    EmulatedAgent,
    EmulatorServer,
    ModelFailure,
    ParlantCost,
    ParlantEmulator,
    TurnContext,
    echo,
    scripted,
)
from supervisor.testing._chaos import kill_session_actor, kill_shard
from supervisor.testing._clock import FakeClock
from supervisor.testing._netns import FarEmulator, NetworkNamespace, namespaces_unavailable
from supervisor.testing._parlant_server import (
    ParlantListener,
    ParlantServer,
    ParlantServerError,
    Utterance,
)
from supervisor.testing._proxy import (
    Delay,
    Drop,
    Fault,
    FaultProxy,
    Hang,
    ProxyRecord,
    Reset,
    ResetMidResponse,
    Respond,
)
from supervisor.testing._settle import settle
from supervisor.testing._wait import metric, wait_until

__all__ = [
    "CUT_MARKER",
    "FAIL_MARKER",
    "AgentScript",
    "AppServer",
    "Delay",
    "Drop",
    "EmulatedAgent",
    "EmulatorServer",
    "FakeClock",
    "FarEmulator",
    "Fault",
    "FaultProxy",
    "Hang",
    "ModelFailure",
    "NetworkNamespace",
    "ParlantCost",
    "ParlantEmulator",
    "ParlantListener",
    "ParlantServer",
    "ParlantServerError",
    "ProxyRecord",
    "Reset",
    "ResetMidResponse",
    "Respond",
    "TurnContext",
    "Utterance",
    "echo",
    "kill_session_actor",
    "kill_shard",
    "metric",
    "namespaces_unavailable",
    "scripted",
    "settle",
    "wait_until",
]
