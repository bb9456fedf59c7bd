"""Logs: stable event names, session_id bound, and never the text of a conversation."""

from __future__ import annotations

from collections.abc import Callable

from supervisor import SessionSupervisor
from supervisor.testing import EmulatorServer
from tests.logwatch import LogWatcher

SECRET = "my creatinine is 2.1 and I am scared"


def test_no_log_event_carries_message_text_and_each_names_its_session(
    serve: Callable[..., EmulatorServer],
    supervise: Callable[..., SessionSupervisor],
    logs: LogWatcher,
) -> None:
    server = serve()
    sup = supervise(server.url)
    session_id = sup.create_session(server.call(server.emulator.agent_id, "echo"))

    assert sup.ask(session_id, SECRET, timeout=30).text == f"echo: {SECRET}"
    sup.close(session_id)

    assert logs.events, "the conversation logged nothing"
    for event in logs.events:
        assert all(SECRET not in str(value) for value in event.values()), event
        if event["event"].startswith("session."):
            assert event["session_id"] == session_id
    names = {event["event"] for event in logs.events}
    assert {"supervisor.started", "session.started", "session.stopped"} <= names
