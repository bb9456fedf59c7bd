"""A Parlant emulator behind a real link (a network namespace and a veth pair of the test's
own): partitions and lost flows as a network makes them, silent, not as a proxy does.

Runs where this machine lets it (root, `ip netns`, iptables: CI runs as root and installs
iptables); elsewhere each test is skipped with the reason. The faults last for real seconds:
a sleep here is a fault's duration, never a wait for something to happen.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from actors.events import message_text
from supervisor import SessionSupervisor
from supervisor.testing import FarEmulator, metric, namespaces_unavailable
from tests.helpers import messages, post_as_human_agent

Supervise = Callable[..., SessionSupervisor]


@pytest.fixture
def far_parlant() -> Iterator[FarEmulator]:
    """An emulator in a namespace of its own, across a veth pair."""
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with FarEmulator() as far:
        yield far


def unsent_to(address: str) -> int:
    """Bytes this machine's TCP sockets to `address` hold unacknowledged (`ss`'s Send-Q)."""
    listing = subprocess.run(
        ["ss", "-Htn", "state", "all", "dst", address], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(line.split()[2]) for line in listing.splitlines() if line.strip())


def stored(url: str, session_id: str, text: str) -> int:
    """How many times the session's log holds the customer message `text`."""
    log = httpx.get(f"{url}/sessions/{session_id}/events", params={"min_offset": 0}, timeout=30)
    return sum(1 for e in log.json() if e["source"] == "customer" and e["data"]["message"] == text)


def test_a_partition_longer_than_a_posts_timeout_stores_its_message_once(
    far_parlant: FarEmulator, supervise: Supervise
) -> None:
    """Issue 28: a post cut by its timeout during a silent partition was closed gracefully, the
    kernel went on retransmitting it, and it landed after the heal, once the log had proved it
    absent and it had been sent again: stored twice (2 of 2 runs)."""
    namespace, url = far_parlant.namespace, far_parlant.url
    sup = supervise(url, request_timeout=3, post_grace=1, wait_for_data=5, wait_jitter=0)
    agent_id = sup.ensure_agents(["Echo"])["Echo"]
    session_id = sup.create_session(agent_id)
    assert sup.ask(session_id, "warm up", timeout=30).text == "echo: warm up"  # pooled, alive

    namespace.partition()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asking = pool.submit(sup.ask, session_id, "across the partition", timeout=60)
        time.sleep(8)  # the partition's length: longer than request_timeout
        namespace.heal()
        reply = asking.result(timeout=90)

    assert reply.text == "echo: across the partition"
    assert stored(url, session_id, "across the partition") == 1
    # and no copy can land later: no socket here still holds bytes for the server (the cut
    # post's was closed gracefully before, and the kernel went on retransmitting it)
    assert unsent_to(namespace.address) == 0
    assert metric(sup, "duplicate_posts_total") == 0


def test_lost_flows_are_noticed_in_seconds_and_the_session_hears_again(
    far_parlant: FarEmulator, supervise: Supervise
) -> None:
    """Issue 28: every TCP flow lost silently while Parlant stayed up (what a NAT or a load
    balancer that lost its state does) left sessions deaf for a whole poll (54-69 s), and asks
    with a 30-s deadline timed out though Parlant answered in milliseconds."""
    namespace, url = far_parlant.namespace, far_parlant.url
    sup = supervise(url)  # the defaults: 60-s polls
    agent_id = sup.ensure_agents(["Echo"])["Echo"]
    session_id = sup.create_session(agent_id)
    reader = sup.events(session_id)
    assert sup.ask(session_id, "before", timeout=30).text == "echo: before"
    seen = [next(reader) for _ in range(7)]  # its message and its turn
    assert messages(e.model_dump() for e in seen)[-1] == "echo: before"

    assert namespace.lose_flows(far_parlant.port) >= 1
    # within its 30-s deadline: the dead connections are noticed (keepalive, user timeout)
    # and the poll that did not bring the posted message restarted, in seconds
    reply = sup.ask(session_id, "after the loss", timeout=30)
    assert post_as_human_agent(url, session_id, "a human, after").status_code == 201
    texts = []
    while "a human, after" not in texts:  # bounded: the reader's own guard
        texts.append(message_text(next(reader)))

    assert reply.text == "echo: after the loss"
    reader.close()
