"""The public surface is small and pinned: changing it is a deliberate act."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import actors
import metrics
import supervisor
import supervisor.testing

PINNED = {
    "supervisor": [
        "AccessDenied",
        "AgentError",
        "DeliveryUnknown",
        "Backoff",
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
        "SupervisorConfig",
        "SupervisorError",
        "SupervisorStatistics",
        "SupervisorStopped",
        "Supervising",
        "TransientError",
    ],
    "supervisor.testing": [
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
    ],
    "supervisor.emulator": [
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
    ],
    "supervisor.sharding": ["INSTALL_HINT", "ShardLost", "ShardedSupervisor"],
    "supervisor.backend": [
        "BackendSettings",
        "ChatAgent",
        "HttpLimits",
        "Intent",
        "MedicalWelfareAgent",
        "ResearchPaperAgent",
        "StoreUnusable",
        "TokenRedaction",
        "create_app",
        "harden_server",
        "serve",
    ],
    "actors": [
        "AccessDenied",
        "AgentError",
        "DeliveryUnknown",
        "Backoff",
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
    ],
    "actors.events": [
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
    ],
    "actors.runtime": [
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
    ],
    "supervisor.parlant_module": [
        "IncompatibleParlant",
        "NotifyingSessionListener",
        "check_parlant",
        "configure_container",
        "configure_module",
        "initialize_container",
        "initialize_module",
    ],
    "metrics": [
        "PREFIX",
        "MetricsServer",
        "Recorder",
        "StatisticsCollector",
        "StatisticsSource",
        "SupervisorMetrics",
        "make_asgi_app",
        "start_http_server",
    ],
}


@pytest.mark.parametrize("package", sorted(PINNED))
def test_public_names_are_pinned_and_documented(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PINNED[package])
    for name in module.__all__:
        value = getattr(module, name)
        assert getattr(value, "__doc__", None), f"{package}.{name} has no docstring"


def test_import_supervisor_is_this_project_not_the_pypi_process_manager() -> None:
    # PyPI's unrelated `supervisor` (the process manager) also installs a package of that name
    root = Path(__file__).resolve().parents[1]
    assert Path(supervisor.__file__).resolve().parent == root / "supervisor"
    assert hasattr(supervisor, "SessionSupervisor")
    assert Path(actors.__file__).resolve().parent == root / "actors"
    assert Path(metrics.__file__).resolve().parent == root / "metrics"
    assert supervisor.testing.FakeClock.__module__.startswith("supervisor.testing")


def test_errors_form_one_tree_split_by_whether_a_retry_can_help() -> None:
    transient = {supervisor.ReplyTimeout, supervisor.ParlantUnavailable}
    permanent = {
        supervisor.SessionNotFound,
        supervisor.AccessDenied,
        supervisor.SessionClosed,
        supervisor.SessionFailed,
        supervisor.SupervisorStopped,
        supervisor.InvalidInput,
    }
    assert all(issubclass(e, supervisor.TransientError) for e in transient)
    assert all(issubclass(e, supervisor.PermanentError) for e in permanent)
    assert issubclass(supervisor.InvalidInput, ValueError)
    for error in transient | permanent:
        assert issubclass(error, supervisor.SupervisorError)
