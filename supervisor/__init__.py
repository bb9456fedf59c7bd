"""parlant-session-supervisor: keeps conversations with Parlant agents alive and correct.

A Supervisor actor spawns one SessionActor per Parlant session; each owns its polling loop,
offset and consumers, polls continuously (`ready` ends a reply, never the polling), and answers
each ask with the turn that answers its own message.

Example:
    >>> from supervisor import SessionSupervisor
    >>> with SessionSupervisor("http://127.0.0.1:8800") as sup:
    ...     reply = sup.ask(session_id, "Tell me about CKD stage 3", timeout=120)
"""

from actors import (
    AccessDenied,
    AgentError,
    Backoff,
    DeliveryUnknown,
    InvalidInput,
    MessageDelta,
    ParlantMisconfigured,
    ParlantUnavailable,
    PermanentError,
    Reply,
    ReplyMessage,
    ReplyTimeout,
    RequestBudget,
    RestartPolicy,
    SessionClosed,
    SessionFailed,
    SessionNotFound,
    SessionState,
    SessionUnresponsive,
    ShardLost,
    SupervisorError,
    SupervisorStopped,
    TransientError,
)
from supervisor._config import SupervisorConfig
from supervisor._facade import SessionSupervisor
from supervisor._protocol import Supervising
from supervisor._statistics import StopSummary, SupervisorStatistics

__all__ = [
    "AccessDenied",
    "AgentError",
    "Backoff",
    "DeliveryUnknown",
    "InvalidInput",
    "MessageDelta",
    "ParlantMisconfigured",
    "ParlantUnavailable",
    "PermanentError",
    "Reply",
    "ReplyMessage",
    "ReplyTimeout",
    "RequestBudget",
    "RestartPolicy",
    "SessionClosed",
    "SessionFailed",
    "SessionNotFound",
    "SessionState",
    "SessionSupervisor",
    "SessionUnresponsive",
    "ShardLost",
    "StopSummary",
    "Supervising",
    "SupervisorConfig",
    "SupervisorError",
    "SupervisorStatistics",
    "SupervisorStopped",
    "TransientError",
]
