"""Parlant's production policy (permissions, per-IP moving windows) on the emulator, and the
client-side request budget that keeps a supervisor within it."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import httpx
import pytest

from supervisor import RequestBudget, SessionSupervisor
from supervisor.testing import EmulatedAgent, EmulatorServer, settle
from tests.logwatch import LogWatcher

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]


def production(serve: Serve, **limits: int) -> EmulatorServer:
    return serve(
        EmulatedAgent("echo"), authorization="production", rate_limits=limits, rate_window=2
    )


def test_the_emulator_refuses_what_parlants_production_policy_refuses(serve: Serve) -> None:
    server = production(serve)
    agent_id = server.call(server.emulator.agent_id, "echo")
    with httpx.Client(base_url=server.url) as http:
        session = http.post("/sessions", json={"agent_id": agent_id})
        session_id = session.json()["id"]
        posted = http.post(
            f"/sessions/{session_id}/events",
            json={"kind": "message", "source": "customer", "message": "hi"},
        )
        refused = {
            "list agents": http.get("/agents").status_code,
            "create customer": http.post("/customers", json={"name": "x"}).status_code,
            "patch": http.patch(f"/sessions/{session_id}", json={}).status_code,
            "delete": http.delete(f"/sessions/{session_id}").status_code,
            "read event": http.get(f"/sessions/{session_id}/events/x").status_code,
        }
        permitted = {
            "read agent": http.get(f"/agents/{agent_id}").status_code,
            "read session": http.get(f"/sessions/{session_id}").status_code,
            "list events": http.get(
                f"/sessions/{session_id}/events", params={"wait_for_data": 0}
            ).status_code,
        }

    assert (session.status_code, posted.status_code) == (201, 201)
    assert set(refused.values()) == {403}
    assert set(permitted.values()) == {200}


def test_each_client_ip_has_its_own_moving_window(serve: Serve) -> None:
    server = production(serve, read_session=3)
    session_id = server.call(server.emulator.create_session, "echo")
    path = f"/sessions/{session_id}"
    with httpx.Client(base_url=server.url) as http:
        mine = [http.get(path).status_code for _ in range(5)]
        other = http.get(path, headers={"X-Forwarded-For": "10.0.0.2, 10.0.0.1"})

    assert mine == [200, 200, 200, 429, 429]
    assert other.status_code == 200
    assert "retry-after" not in other.headers


@pytest.mark.parametrize("shaped", [True, False], ids=["budget", "no-budget"])
def test_a_budget_keeps_a_supervisor_within_the_policy_and_every_ask_is_answered(
    shaped: bool, serve: Serve, supervise: Supervise
) -> None:
    limits = {"list_events": 12, "create_customer_event": 10, "create_guest_session": 20}
    server = production(serve, **limits)
    budget = RequestBudget(limits, window=2) if shaped else None
    # every session polled all along (as readers hold them): the load a budget must shape
    sup = supervise(server.url, request_budget=budget, wait_for_data=2, wait_jitter=1, linger=None)
    agent_id = server.call(server.emulator.agent_id, "echo")
    sessions = [sup.create_session(agent_id) for _ in range(8)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # all at once: a burst
        asks = [
            pool.submit(sup.ask, sid, f"hello {n}", timeout=60) for n, sid in enumerate(sessions)
        ]
        replies = [ask.result(timeout=90).text for ask in asks]

    assert replies == [f"echo: hello {n}" for n in range(8)]
    refused = sum(server.call(server.emulator.served, sid, 429) for sid in sessions)
    if shaped:
        assert refused == 0  # shaped before the server had to refuse anything
    else:
        assert refused > 0  # the same load, unshaped, meets 429s (ridden out by backoff)


def test_a_refused_checkpoint_write_turns_durable_checkpoints_off_once(
    serve: Serve, supervise: Supervise, logs: LogWatcher
) -> None:
    server = production(serve)
    sup = supervise(server.url, durable_checkpoints=True, checkpoint_interval=0.01)
    agent_id = server.call(server.emulator.agent_id, "echo")
    session_id = sup.create_session(agent_id)

    for n in range(3):
        assert sup.ask(session_id, f"turn {n}", timeout=30).text == f"echo: turn {n}"
    sup.close(session_id)
    settle(sup)

    assert len(logs.matching("supervisor.checkpoints_refused")) == 1
    assert logs.matching("session.checkpoint_not_saved") == []


@pytest.mark.parametrize(("sessions", "wait"), [(1, 60), (400, 223), (1000, 240)])
def test_the_production_preset_says_how_long_idle_polls_must_wait(sessions: int, wait: int) -> None:
    """Their share of the policy's `list_events`, up to MAX_WAIT_FOR_DATA (240 s, the smallest
    common idle timeout of load balancers and NATs); the ceiling of waiting polls keeps the
    rest within the policy."""
    assert RequestBudget.parlant_production().poll_wait(sessions, 60) == wait
