"""The ceiling of waiting polls: what one Parlant is asked to carry stays bounded.

At most `max_waiting_polls` polls wait on Parlant at once; a turn's polls always go; readers
beyond the ceiling are read in rotation (`rotation_rate` reads a second for all of them) and
take their turn at a waiting poll as slots free. Nothing is lost or given twice.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from parlant.client.types import Event

from supervisor import SessionState, SessionSupervisor
from supervisor.testing import EmulatorServer, metric, wait_until

Serve = Callable[..., EmulatorServer]
Supervise = Callable[..., SessionSupervisor]

CEILING = 2
READERS = 5
TIGHT = {
    "max_waiting_polls": CEILING,
    "rotation_rate": 50.0,
    "wait_for_data": 1,  # slots change hands at each timeout
    "wait_jitter": 0,
}


def readers(
    server: EmulatorServer, sup: SessionSupervisor, count: int
) -> list[tuple[str, Generator[Event, None, None]]]:
    """`count` sessions, each with a reader that has read one message."""
    emulator = server.emulator
    opened = []
    for n in range(count):
        session_id = server.call(emulator.create_session, "echo")
        reader = sup.events(session_id)
        server.call(emulator.post_agent_message, session_id, f"first {n}")
        assert next(reader).data["message"] == f"first {n}"
        opened.append((session_id, reader))
    return opened


def test_readers_beyond_the_ceiling_are_read_in_rotation_and_miss_nothing(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    emulator = server.emulator
    sup = supervise(server.url, **TIGHT)
    opened = readers(server, sup, READERS)

    wait_until(
        sup,
        lambda: (
            (sup.statistics().waiting_polls, sup.statistics().poll_demand) == (CEILING, READERS)
        ),
        what="the ceiling full, the rest in rotation",
    )
    assert server.call(emulator.cost).waiting_polls <= CEILING
    assert metric(sup, "poll_demand") == READERS
    assert metric(sup, "poll_ceiling") == CEILING

    for n, (session_id, _) in enumerate(opened):
        server.call(emulator.post_agent_message, session_id, f"second {n}")
    for n, (_, reader) in enumerate(opened):
        assert next(reader).data["message"] == f"second {n}"
    for _, reader in opened:
        reader.close()


def test_every_reader_beyond_the_ceiling_takes_its_turn_at_a_waiting_poll(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    emulator = server.emulator
    sup = supervise(server.url, **TIGHT)
    opened = readers(server, sup, READERS)

    # a 504 answers only a poll that waited: each session has had a slot
    server.run(
        emulator.until(lambda: all(emulator.served(s, 504) >= 1 for s, _ in opened)),
        timeout=60,
    )
    for _, reader in opened:
        reader.close()


def test_a_turn_polls_at_once_even_with_the_ceiling_full_of_readers(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    emulator = server.emulator
    sup = supervise(server.url, **{**TIGHT, "rotation_rate": 0.1})  # a read each 10 s
    opened = readers(server, sup, READERS)
    wait_until(sup, lambda: sup.statistics().waiting_polls == CEILING, what="the ceiling full")
    session_id = server.call(emulator.create_session, "echo")

    reply = sup.ask(session_id, "are you there?", timeout=10)

    assert reply.text == "echo: are you there?"
    for _, reader in opened:
        reader.close()


def test_without_a_ceiling_every_reader_waits_on_parlant(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url, **{**TIGHT, "max_waiting_polls": None})
    opened = readers(server, sup, READERS)

    wait_until(sup, lambda: sup.statistics().waiting_polls == READERS, what="every reader waiting")
    assert sup.statistics().rotating_polls == 0
    assert sup.registry.get_sample_value("parlant_supervisor_poll_ceiling") is None
    for _, reader in opened:
        reader.close()


def test_readers_that_leave_leave_nothing_polled_in_the_rotation_or_waiting(
    serve: Serve, supervise: Supervise
) -> None:
    server = serve()
    sup = supervise(server.url, **TIGHT)
    opened = readers(server, sup, READERS)
    wait_until(sup, lambda: sup.statistics().poll_demand == READERS, what="all wanting polls")

    for _, reader in opened:
        reader.close()

    wait_until(
        sup,
        lambda: sup.statistics().sessions_by_state[SessionState.DORMANT] == READERS,
        what="every session dormant",
    )
    stats = sup.statistics()
    assert (stats.waiting_polls, stats.rotating_polls, stats.open_polls) == (0, 0, 0)
