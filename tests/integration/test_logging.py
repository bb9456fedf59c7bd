"""Logs: stable event names, session_id bound, and never the text of a conversation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervisor import SessionNotFound, SessionSupervisor
from supervisor.testing import EmulatorServer
from tests.helpers import new_session
from tests.logwatch import LogWatcher

SECRET = "my creatinine is 2.1 and I am scared"


def test_no_log_event_carries_message_text_and_each_names_its_session(
    serve: Callable[..., EmulatorServer], logs: LogWatcher
) -> None:
    server = serve()
    with SessionSupervisor(server.url) as sup:
        session_id = new_session(server, sup, "echo")
        assert sup.ask(session_id, SECRET, timeout=30).text == f"echo: {SECRET}"
        with pytest.raises(SessionNotFound):  # the failure paths log too
            sup.ask("NoSuchSession", SECRET, timeout=30)
        # the ask fails on its post's 404, and so does the session
        logs.wait_for("session.state_changed", session_id="NoSuchSession", state="failed")
        sup.close(session_id)

    events = logs.events
    assert events, "the conversation logged nothing"
    for event in events:
        assert all(SECRET not in str(value) for value in event.values()), event
        if event["event"].startswith("session."):
            assert event["session_id"] in (session_id, "NoSuchSession")
    names = {event["event"] for event in events}
    assert {"supervisor.started", "session.started", "session.stopped"} <= names
    assert "session.state_changed" in names
