"""The emulator answers like the real Parlant server (tests/data/parlant-samples)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

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
