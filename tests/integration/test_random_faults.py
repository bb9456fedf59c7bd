"""A seeded storm of mixed faults: every ask gets its own correct reply, every reader sees every
event exactly once. Faults: 500, 503 and 429 (Retry-After), malformed 200 bodies, and session
actors crashing at random (restarted from their checkpoints)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from collections.abc import Callable
from typing import Any

import pytest

from actors import SessionCore
from actors._messages import EventsReceived, Message
from supervisor import Reply, RestartPolicy, SessionSupervisor
from supervisor.testing import EmulatorServer, FakeClock, settle

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]
SESSIONS = 50
SEED = 20261126


@pytest.mark.slow
def test_mixed_faults_lose_nothing_and_repeat_nothing(
    serve: Serve, supervise: Supervise, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(SEED)
    server = serve()
    emulator = server.emulator
    clock = FakeClock()
    sup = supervise(
        server.url, clock=clock, restart_policy=RestartPolicy(max_restarts=50, restart_window=60)
    )
    sessions = [server.call(emulator.create_session, "echo") for _ in range(SESSIONS)]
    injected = 0
    for session_id in sessions:
        statuses = [rng.choice([500, 503, 429, 200]) for _ in range(rng.randint(3, 7))]
        server.call(emulator.inject_poll_failures, session_id, statuses)
        injected += len(statuses)
    crashes = {"left": 60, "done": 0}
    crash_rng = random.Random(SEED + 1)
    handle = SessionCore.handle

    def sometimes_crashing(self: SessionCore, message: Message, now: float) -> Any:
        if isinstance(message, EventsReceived) and crashes["left"] and crash_rng.random() < 0.3:
            crashes["left"] -= 1
            crashes["done"] += 1
            raise RuntimeError("injected crash")
        return handle(self, message, now)

    monkeypatch.setattr(SessionCore, "handle", sometimes_crashing)
    readers = {session_id: sup.events(session_id) for session_id in sessions}

    async def ask_all() -> list[Reply]:
        return await asyncio.gather(
            *(sup.aask(sid, f"question for {sid}", timeout=10_000) for sid in sessions)
        )

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asking = pool.submit(asyncio.run, ask_all())
        for _ in range(600):  # bounded: each round lets every due backoff or restart fire
            if asking.done():
                break
            settle(sup)
            clock.advance(5)
            concurrent.futures.wait([asking], timeout=0.05)
        replies = asking.result(timeout=30)

    unserved = sum(server.call(emulator.pending_failures, sid) for sid in sessions)
    print(f"faults: {injected} injected poll failures, {crashes['done']} actor crashes")
    assert [r.text for r in replies] == [f"echo: question for {sid}" for sid in sessions]
    for session_id, reader in readers.items():
        written = server.call(emulator.session_events, session_id)
        seen = [next(reader).offset for _ in written]
        assert seen == [e["offset"] for e in written], session_id
    assert unserved == 0  # every injected fault was met by a poll
    assert injected >= 200
    assert crashes["done"] >= 5  # typically 15-40: the seeded draws follow message order
