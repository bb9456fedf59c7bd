"""The parts a supervisor assembles its actors from (for `supervisor`, and for tools).

Application code needs none of this: it uses `supervisor.SessionSupervisor`. This is the seam
between the actor layer and the layers above it, so that nothing outside `actors` imports its
private modules:

- the I/O side, all on one asyncio thread: `IOLoop`, `Poller` (long-polls, within a
  `PollCeiling`), `Follower` (streamed messages), `ParlantApi` (posts, reads, checkpoints),
  `Budget` (the request budget they share), `translate_error` (an HTTP failure as this
  library's error);
- the actor side: `Dispatcher` (the worker threads every actor runs on), `SessionActor`, the
  `SessionRuntime` they share, the `SessionBoard` they publish figures on, `CheckpointMemory`,
  `RestartTracker`, the messages a caller and a supervising actor tell them (`AwaitReply`,
  `Subscribe`, `Unsubscribe`, `EventsConsumed`, `Route`, `Restart`, `GiveUp`, `Retire`...);
- time (`Clock`, `SystemClock`, `Deadline`), the metrics port (`Recorder`), and `Changes`
  (notified after every observable change: what a test waits on instead of a log line);
- `is_open`, which the fault-injecting proxy of `supervisor.testing` shares with the lean client.

`docs/ARCHITECTURE.md` shows how they fit together.
"""

from dataclasses import dataclass
from typing import Final

from actors._actor import SessionActor
from actors._board import SessionBoard, SessionRuntime
from actors._budget import Budget
from actors._changes import Changes, notifying
from actors._checkpoints import CheckpointMemory
from actors._clock import Clock, Deadline, SystemClock
from actors._dispatcher import Dispatcher
from actors._follower import Follower
from actors._io import IOLoop
from actors._messages import (
    AwaitReply,
    ConsumerKind,
    EventsConsumed,
    Message,
    Resume,
    Stop,
    Subscribe,
    Unsubscribe,
)
from actors._parlant import (
    DEFAULT_CONCURRENCY,
    POST_GRACE,
    REQUEST_TIMEOUT,
    ParlantApi,
    translate_error,
)
from actors._poller import TIMEOUT_MARGIN, PollCeiling, Poller
from actors._recorder import Recorder
from actors._restarts import RestartTracker
from actors._supervision import (
    ActorCrashed,
    Barrier,
    GiveUp,
    Kill,
    Reaped,
    Restart,
    Retire,
    Route,
)
from actors._wire import MAX_BODY, check_headers, is_open


@dataclass(frozen=True, slots=True)
class _Defaults:
    """The I/O parts' defaults, stated where those parts are (`SupervisorConfig` uses them)."""

    request_concurrency: int = DEFAULT_CONCURRENCY
    request_timeout: float = REQUEST_TIMEOUT
    post_grace: float = POST_GRACE
    poll_timeout_margin: float = TIMEOUT_MARGIN
    max_response_bytes: int = MAX_BODY


DEFAULTS: Final = _Defaults()
"""Request concurrency, request timeout, post grace, poll timeout margin, response size."""

__all__ = [
    "DEFAULTS",
    "ActorCrashed",
    "AwaitReply",
    "Barrier",
    "Budget",
    "Changes",
    "CheckpointMemory",
    "Clock",
    "ConsumerKind",
    "Deadline",
    "Dispatcher",
    "EventsConsumed",
    "Follower",
    "GiveUp",
    "IOLoop",
    "Kill",
    "Message",
    "ParlantApi",
    "PollCeiling",
    "Poller",
    "Reaped",
    "Recorder",
    "Restart",
    "RestartTracker",
    "Resume",
    "Retire",
    "Route",
    "SessionActor",
    "SessionBoard",
    "SessionRuntime",
    "Stop",
    "Subscribe",
    "SystemClock",
    "Unsubscribe",
    "check_headers",
    "is_open",
    "notifying",
    "translate_error",
]
