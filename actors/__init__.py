"""The actor layer: one SessionActor per Parlant session, its pure core, and the poller.

`SessionCore` holds every decision (what to poll, whom each event goes to, when to give up)
as a pure state machine; `SessionActor` is the pykka shell that feeds it messages and carries
out its effects; `Poller` runs every session's long-poll on one asyncio I/O thread.
"""

from actors._backoff import Backoff
from actors._budget import RequestBudget
from actors._core import SessionCore, SessionSettings, SessionSnapshot
from actors._errors import (
    AccessDenied,
    AgentError,
    DeliveryUnknown,
    InvalidInput,
    ParlantMisconfigured,
    ParlantUnavailable,
    PermanentError,
    ReplyTimeout,
    SessionClosed,
    SessionFailed,
    SessionNotFound,
    SessionUnresponsive,
    ShardLost,
    SupervisorError,
    SupervisorStopped,
    TransientError,
)
from actors._reply import MessageDelta, Reply, ReplyMessage
from actors._restarts import RestartPolicy
from actors._state import IllegalTransition, SessionState
from actors._turns import TurnTracker

__all__ = [
    "AccessDenied",
    "AgentError",
    "Backoff",
    "DeliveryUnknown",
    "IllegalTransition",
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
    "SessionCore",
    "SessionFailed",
    "SessionNotFound",
    "SessionSettings",
    "SessionSnapshot",
    "SessionState",
    "SessionUnresponsive",
    "ShardLost",
    "SupervisorError",
    "SupervisorStopped",
    "TransientError",
    "TurnTracker",
]
