"""supervisor.parlant_module in a real Parlant server: loaded every way Parlant offers, and every
waiting request answered as Parlant answers it without the module.

The raw scenarios below run on two real servers, Parlant as it ships (`null_parlant`) and with
the module (`null_parlant_notified`), and must give the same outcomes. The module's server
reports how many requests wait on it (`ParlantServer.listener()`), so a write is made once the
request is known to be waiting: what is exercised is the wake-up, not a read that came first.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from supervisor.testing import ParlantServer
from tests.helpers import post_as_human_agent

Outcome = tuple[int, Any]


def waiting_on(server: ParlantServer, count: int, timeout: float = 10.0) -> None:
    """Return once `count` requests wait on the module's listener (for Parlant's own, which
    does not count them, at once)."""
    deadline = time.monotonic() + timeout
    while (waiting := server.listener().waiting) is not None and waiting < count:
        assert time.monotonic() < deadline, f"{waiting} of {count} requests waiting"
        time.sleep(0.02)  # polling the server's own figure, bounded by the deadline


def poll(url: str, session_id: str, **params: Any) -> Outcome:
    """One `list_events` long-poll: its status and the offsets and sources it returned."""
    response = httpx.get(f"{url}/sessions/{session_id}/events", params=params, timeout=30)
    if response.status_code != 200:
        return response.status_code, str(response.json().get("detail", "")).split(" (")[0]
    return 200, [(e["offset"], e["source"]) for e in response.json()]


def while_waiting(
    server: ParlantServer, request: Callable[[], Outcome], write: Callable[[], object]
) -> Outcome:
    """Start `request`, write once it waits, return what it answered."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(request)
        waiting_on(server, 1)
        write()
        return pending.result(timeout=30)


def scenarios(server: ParlantServer) -> dict[str, Outcome]:
    url = server.url
    http = httpx.Client(base_url=url, timeout=30)

    def session() -> str:
        session_id: str = http.post("/sessions", json={"agent_id": "Echo"}).json()["id"]
        return session_id

    def human(session_id: str) -> Callable[[], object]:
        return lambda: post_as_human_agent(url, session_id, "A human here.")

    seen: dict[str, Outcome] = {}
    quiet = session()
    seen["nothing written: 504"] = poll(url, quiet, min_offset=0, wait_for_data=1)
    woken = session()
    seen["woken by a write"] = while_waiting(
        server, lambda: poll(url, woken, min_offset=0, wait_for_data=20), human(woken)
    )
    other_kind = session()
    seen["a write of another kind"] = while_waiting(
        server,
        lambda: poll(url, other_kind, min_offset=0, wait_for_data=2, kinds="status"),
        human(other_kind),
    )
    other_source = session()
    seen["a write from another source"] = while_waiting(
        server,
        lambda: poll(url, other_source, min_offset=0, wait_for_data=2, source="customer"),
        human(other_source),
    )
    further = session()
    seen["a write below min_offset"] = while_waiting(
        server, lambda: poll(url, further, min_offset=1, wait_for_data=2), human(further)
    )
    seen["the next one"] = while_waiting(
        server, lambda: poll(url, further, min_offset=1, wait_for_data=20), human(further)
    )
    deleted = session()
    seen["session deleted mid-poll"] = while_waiting(
        server,
        lambda: poll(url, deleted, min_offset=0, wait_for_data=20),
        lambda: http.delete(f"/sessions/{deleted}"),
    )
    seen["unknown session"] = poll(url, "NoSuchSession", min_offset=0, wait_for_data=5)
    http.close()
    return seen


def streamed_message(server: ParlantServer) -> dict[str, Any]:
    """A streamed answer, waited for whole (`wait_for_completion`) and followed (`sse`)."""
    url = server.url
    with httpx.Client(base_url=url, timeout=60) as http:
        session_id = http.post("/sessions", json={"agent_id": "StreamingEcho"}).json()["id"]
        text = "tell me about the module in seven words"
        http.post(
            f"/sessions/{session_id}/events",
            json={"kind": "message", "source": "customer", "message": text},
        )
        agent_message = None
        offset = 0
        while agent_message is None:  # bounded by the server's wait_for_data and httpx's timeout
            events = http.get(
                f"/sessions/{session_id}/events",
                params={"min_offset": offset, "wait_for_data": 20},
            ).json()
            offset = events[-1]["offset"] + 1
            agent_message = next(
                (e for e in events if e["kind"] == "message" and e["source"] == "ai_agent"), None
            )
        path = f"/sessions/{session_id}/events/{agent_message['id']}"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            whole = pool.submit(
                http.get, path, params={"wait_for_completion": "true", "wait_for_data": 30}
            )
            with http.stream("GET", path, params={"sse": "true", "wait_for_data": 30}) as stream:
                snapshots = [
                    json.loads(line[len("data: ") :])
                    for line in stream.iter_lines()
                    if line.startswith("data: ")
                ]
            completed = whole.result(timeout=60).json()
    return {
        "whole": (completed["data"]["message"], completed["data"]["chunks"][-1]),
        "followed to its end": snapshots[-1]["data"]["chunks"][-1] is None,
        "grew": [len(s["data"]["chunks"]) for s in snapshots]
        == sorted(len(s["data"]["chunks"]) for s in snapshots),
    }


def test_every_waiting_request_is_answered_as_parlant_answers_it_without_the_module(
    null_parlant: ParlantServer, null_parlant_notified: ParlantServer
) -> None:
    assert null_parlant.listener().name == "PollingSessionListener"
    modular = null_parlant_notified.listener()
    assert (modular.name, modular.observed) == ("NotifyingSessionListener", True)

    polled = scenarios(null_parlant)
    notified = scenarios(null_parlant_notified)

    assert notified == polled
    assert polled["nothing written: 504"][0] == 504
    assert polled["woken by a write"] == (200, [(0, "human_agent")])
    assert polled["a write of another kind"][0] == 504
    assert polled["the next one"] == (200, [(1, "human_agent")])
    assert polled["session deleted mid-poll"][0] == 404
    assert null_parlant_notified.listener().waiting == 0  # nothing left behind


def test_a_streamed_message_completes_and_is_followed_as_without_the_module(
    null_parlant: ParlantServer, null_parlant_notified: ParlantServer
) -> None:
    polled = streamed_message(null_parlant)
    notified = streamed_message(null_parlant_notified)

    assert notified == polled
    assert polled["whole"] == ("echo: tell me about the module in seven words", None)
    assert polled["followed to its end"]


def test_parlant_sdk_module_loads_it_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLANT_SDK_MODULE", "supervisor.parlant_module")
    with ParlantServer() as server:  # the variable is passed on to the server's process
        listener = server.listener()
        assert (listener.name, listener.observed) == ("NotifyingSessionListener", True)
        session_id = httpx.post(f"{server.url}/sessions", json={"agent_id": "Echo"}).json()["id"]
        answered = while_waiting(
            server,
            lambda: poll(server.url, session_id, min_offset=0, wait_for_data=20),
            lambda: post_as_human_agent(server.url, session_id, "hello"),
        )
    assert answered == (200, [(0, "human_agent")])


def test_parlant_server_module_option_loads_it(tmp_path: Path) -> None:
    """`parlant-server run --module supervisor.parlant_module`, Parlant's own command (its
    code, with the offline model: tests/realserver/parlant_cli.py): it starts with the module
    configured."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("parlant_cli.py")),
         "run", "--port", str(port), "--module", "supervisor.parlant_module"],
        env={
            **os.environ,
            "PARLANT_HOME": str(tmp_path),
            "OPENAI_API_KEY": "unused-offline",  # the command checks it is set
            "ANONYMIZED_TELEMETRY": "False",  # Chroma's: it would call out of the machine
            "PYTHONPATH": str(Path(__file__).parents[2]),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _until_healthy(url, process)
        with httpx.Client(base_url=url, timeout=30) as http:
            agent = http.get("/agents").json()[0]["id"]
            session_id = http.post("/sessions", json={"agent_id": agent}).json()["id"]
            quiet = poll(url, session_id, min_offset=0, wait_for_data=1)
            posted = post_as_human_agent(url, session_id, "hello")
            found = poll(url, session_id, min_offset=0, wait_for_data=5)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert quiet[0] == 504
    assert posted.status_code == 201
    assert found == (200, [(0, "human_agent")])
    assert "Configuring module 'supervisor.parlant_module'" in output


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _until_healthy(url: str, process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"parlant-server exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # the server has no readiness push; bounded by the deadline
    raise AssertionError("parlant-server did not become healthy")
