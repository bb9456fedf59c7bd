"""The emulator answers like the real Parlant server (tests/data/parlant-samples)."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from supervisor.testing import EmulatedAgent, EmulatorServer, echo
from tests.samples import raw

Serve = Callable[..., EmulatorServer]


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not the values themselves."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__


def turn_signature(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None, Any]]:
    return [
        (
            e["kind"],
            e["source"],
            e["data"].get("status"),
            (e["data"].get("data") or {}).get("stage") if e["kind"] == "status" else None,
        )
        for e in events
    ]


def test_one_turn_matches_the_real_servers_capture_event_for_event(serve: Serve) -> None:
    server = serve(EmulatedAgent("stock", echo(), preamble=True))
    real = raw("one_turn")
    with httpx.Client(base_url=server.url) as http:
        agent_id = server.call(server.emulator.agent_id, "stock")
        customer = http.post("/customers", json={"name": "sample-customer"}).json()
        session = http.post(
            "/sessions",
            params={"allow_greeting": "false"},
            json={"agent_id": agent_id, "customer_id": customer["id"]},
        )
        posted = http.post(
            f"/sessions/{session.json()['id']}/events",
            json={"kind": "message", "source": "customer", "message": "Tell me about CKD stage 3"},
        )
        server.run(
            server.emulator.until(
                lambda: len(server.emulator.session_events(session.json()["id"])) >= 10
            )
        )
        events = http.get(
            f"/sessions/{session.json()['id']}/events", params={"min_offset": 0, "wait_for_data": 0}
        ).json()

    created = raw("create_customer_and_session")
    assert session.status_code == created["session"]["status"] == 201
    assert shape(session.json()) == shape(created["session"]["body"])
    assert shape(customer) == shape(created["customer"]["body"])
    assert posted.status_code == real["post_customer_message"]["status"]
    assert shape(posted.json()) == shape(real["post_customer_message"]["body"])
    assert posted.json()["trace_id"] == posted.json()["correlation_id"] == "<main>"
    assert turn_signature(events) == turn_signature(real["events"])
    for ours, theirs in zip(events, real["events"], strict=True):
        assert shape(ours) == shape(theirs)
    agent_traces = {e["trace_id"] for e in events[1:]}
    assert len(agent_traces) == 1
    assert len(agent_traces.pop()) == 32


def test_timeouts_and_unknown_sessions_answer_like_the_real_server(serve: Serve) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        agent_id = server.call(server.emulator.agent_id, "echo")
        session_id = http.post("/sessions", json={"agent_id": agent_id}).json()["id"]
        timeout = http.get(
            f"/sessions/{session_id}/events", params={"min_offset": 128, "wait_for_data": 1}
        )
        empty = http.get(
            f"/sessions/{session_id}/events", params={"min_offset": 128, "wait_for_data": 0}
        )
        unknown = http.get(
            "/sessions/NoSuchSession/events", params={"min_offset": 0, "wait_for_data": 5}
        )

    for response, capture in (
        (timeout, raw("poll_timeout_504")),
        (empty, raw("poll_wait_zero_empty")),
        (unknown, raw("poll_unknown_session_404")),
    ):
        assert response.status_code == capture["status"]
        assert response.json() == capture["body"]


def test_human_agent_messages_are_written_like_the_real_servers(serve: Serve) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        agent_id = server.call(server.emulator.agent_id, "echo")
        events = (
            f"/sessions/{http.post('/sessions', json={'agent_id': agent_id}).json()['id']}/events"
        )
        human = {"kind": "message", "source": "human_agent", "message": "Dana here."}
        anonymous = http.post(events, json=human)
        named = http.post(events, json={**human, "participant": {"display_name": "Dana"}})
        on_behalf = http.post(
            events,
            json={
                "kind": "message",
                "source": "human_agent_on_behalf_of_ai_agent",
                "message": "Hi",
            },
        )

    # Measured on Parlant 3.3.2: a participant's display name is required; both kinds are
    # written under the "<main>" trace and start no turn; on-behalf messages carry the agent.
    assert anonymous.status_code == 422
    assert "display_name" in anonymous.json()["detail"]
    assert named.status_code == on_behalf.status_code == 201
    assert named.json()["data"]["participant"] == {"id": None, "display_name": "Dana"}
    assert on_behalf.json()["data"]["participant"] == {"id": agent_id, "display_name": "echo"}
    assert named.json()["trace_id"] == on_behalf.json()["trace_id"] == "<main>"
    assert server.call(server.emulator.session_events, events.split("/")[2])[-1]["offset"] == 1


def streamed_poll(
    http: httpx.Client, session_id: str, until: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Long-poll as the seed does (min_offset = last + 1) until an event `until` likes."""
    seen: list[dict[str, Any]] = []
    while not any(until(event) for event in seen):
        offset = seen[-1]["offset"] + 1 if seen else 0
        response = http.get(
            f"/sessions/{session_id}/events", params={"min_offset": offset, "wait_for_data": 10}
        )
        assert response.status_code == 200, response.text
        seen += response.json()
    return seen


def completed(event: dict[str, Any]) -> bool:
    return (
        event["kind"] == "status" and (event["data"].get("data") or {}).get("stage") == "completed"
    )


def errored(event: dict[str, Any]) -> bool:
    return event["kind"] == "status" and event["data"].get("status") == "error"


def test_a_streamed_turn_is_shaped_like_the_real_servers(serve: Serve) -> None:
    server = serve(EmulatedAgent("stream", echo(), output_mode="stream", chunk_delay=0.05))
    real = raw("streamed_turn")
    real_polled = [event for poll in real["polls"] for event in poll["body"]]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        session_id = server.call(server.emulator.create_session, "stream")
        http.post(
            f"/sessions/{session_id}/events", json=real["post_customer_message"]["request"]["json"]
        )
        polled = streamed_poll(http, session_id, completed)
        [message] = [e for e in polled if e["kind"] == "message" and e["source"] == "ai_agent"]
        with http.stream(
            "GET", f"/sessions/{session_id}/events/{message['id']}", params={"sse": "true"}
        ) as sse:
            lines = list(sse.iter_lines())
        waited = http.get(
            f"/sessions/{session_id}/events/{message['id']}",
            params={"wait_for_completion": "true"},
        ).json()
        reread = http.get(f"/sessions/{session_id}/events", params={"wait_for_data": 0}).json()

    assert turn_signature(polled) == turn_signature(real_polled)
    [real_message] = [
        e for e in real_polled if e["kind"] == "message" and e["source"] == "ai_agent"
    ]
    assert shape(message) == shape(real_message)
    assert message["data"]["chunks"][-1] is not None  # seen once, partial, as on the real server
    real_lines = [entry["line"] for entry in real["read_event_sse"] if "line" in entry]
    assert all(line.startswith("data: {") or line == "" for line in lines)
    assert shape(json.loads(lines[0][6:])) == shape(json.loads(real_lines[0][6:]))
    assert json.loads(lines[-2][6:])["data"]["chunks"][-1] is None  # ends at the terminator
    assert waited["data"]["message"] == "echo: Tell me about CKD stage 3"
    assert shape(waited) == shape(real["read_event_wait"]["body"])
    assert reread[message["offset"]]["data"]["chunks"][-1] is None


def test_a_failed_turn_is_shaped_like_the_real_servers(serve: Serve) -> None:
    server = serve(EmulatedAgent("stock", echo(), preamble=True))
    real = raw("error_turn")
    real_polled = [
        event for poll in real["polls"] if poll["status"] == 200 for event in poll["body"]
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        session_id = server.call(server.emulator.create_session, "stock")
        http.post(
            f"/sessions/{session_id}/events", json=real["post_customer_message"]["request"]["json"]
        )
        polled = streamed_poll(http, session_id, errored)

    assert turn_signature(polled) == turn_signature(real_polled)
    error = polled[-1]
    assert shape(error) == shape(real_polled[-1])
    assert error["data"]["data"]["exception"].startswith("['Traceback (most recent call last):")


def test_a_client_that_hangs_up_mid_request_is_no_error_in_the_servers_log(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    session_id = server.call(server.emulator.create_session, "echo")
    head = (
        f"POST /sessions/{session_id}/events HTTP/1.1\r\nHost: emulator\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    with (
        caplog.at_level(logging.INFO),
        socket.create_connection((server.host, server.port)) as raw_socket,
    ):
        raw_socket.sendall(head.encode() + b'{"kind": "mess')  # and hangs up
    server.stop()  # lets the request in flight finish

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
