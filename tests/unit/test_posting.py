"""post_exactly_once: every way a post's request can fail, on a log of our own (no sockets,
a fake clock): the message is stored once, or the ask is told why not."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import pytest
from parlant.client.core.api_error import ApiError
from parlant.client.types import Event

from actors import Backoff, DeliveryUnknown
from actors._posting import PostDropped, PostExpired, key_of, post_exactly_once
from actors._wire import WireConnectError, WireError
from tests.factory import customer

SID = "s1"


class Log:
    """A session's log behind a scripted wire: each send or read meets the next fault
    scripted for it (`store` says whether the server stored the message before failing)."""

    def __init__(self) -> None:
        self.events: list[Event] = [customer(0, "earlier")]
        self.now = 0.0
        self.sends: list[float] = []
        self.reads: list[float] = []
        self.send_faults: list[tuple[Exception, bool]] = []
        self.read_faults: list[Exception] = []

    async def send_customer_message(self, session_id: str, body: bytes) -> int:
        self.sends.append(self.now)
        fault, store = self.send_faults.pop(0) if self.send_faults else (None, True)
        offset = len(self.events)
        if store:
            payload = json.loads(body)
            key = payload["metadata"]["parlant_supervisor"]["post"]
            self.events.append(customer(offset, payload["message"], key=key))
        if fault is not None:
            raise fault
        return offset

    async def read_customer_messages(self, session_id: str, min_offset: int) -> list[Event]:
        self.reads.append(self.now)
        if self.read_faults:
            raise self.read_faults.pop(0)
        return [e for e in self.events if e.offset >= min_offset and e.source == "customer"]

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    def copies(self, key: str) -> int:
        return sum(1 for event in self.events if key_of(event) == key)


def post(
    log: Log,
    *,
    wanted: Any = lambda: True,
    maybe_sent: bool = False,
    deadline: float | None = None,
) -> tuple[int, Counter[str]]:
    retried: Counter[str] = Counter()

    async def up() -> None:
        pass

    offset = asyncio.run(
        post_exactly_once(
            log,
            SID,
            "hello",
            "k1",
            since=1,
            wanted=wanted,
            maybe_sent=maybe_sent,
            grace=2.0,
            backoff=Backoff(0.1, 1.0),
            rng=random.Random(3),
            now=lambda: log.now,
            until_up=up,
            retried=lambda reason: retried.update([reason]),
            sleep=log.sleep,
            deadline=deadline,
        )
    )
    return offset, retried


def test_a_post_that_succeeds_is_sent_once_with_its_key() -> None:
    log = Log()
    offset, retried = post(log)
    assert (offset, log.copies("k1"), len(log.sends), retried) == (1, 1, 1, Counter())


def test_a_post_whose_answer_was_lost_is_found_in_the_log_and_not_sent_again() -> None:
    log = Log()
    log.send_faults = [(WireError("reset mid-response"), True)]

    offset, retried = post(log)

    assert (offset, log.copies("k1"), len(log.sends)) == (1, 1, 1)
    assert retried == Counter({"found": 1})
    assert log.reads[0] >= log.sends[0] + 2.0  # the read began a grace after the failure


def test_a_post_that_never_landed_is_proved_absent_then_sent_again_with_the_same_key() -> None:
    log = Log()
    log.send_faults = [(WireError("reset before forwarding"), False), (TimeoutError(), False)]

    offset, retried = post(log)

    assert (offset, log.copies("k1"), len(log.sends)) == (1, 1, 3)
    assert retried == Counter({"absent": 2})
    assert log.reads[0] >= log.sends[0] + 2.0
    assert log.sends[1] >= log.reads[0]


def test_refused_posts_are_sent_again_past_any_fixed_count() -> None:
    log = Log()
    refusals = [ApiError(status_code=503, body="busy") for _ in range(8)]
    log.send_faults = [(error, False) for error in refusals] + [(WireConnectError("no"), False)]

    offset, retried = post(log)

    assert (offset, log.copies("k1"), len(log.sends)) == (1, 1, 10)
    assert retried == Counter({"refused": 9})
    assert log.reads == []  # certainly not sent: nothing to look for


def test_a_log_that_cannot_be_read_is_read_again_before_anything_is_sent() -> None:
    log = Log()
    log.send_faults = [(WireError("reset"), True)]
    log.read_faults = [ApiError(status_code=502, body=""), WireError("reset")]

    offset, retried = post(log)

    assert (offset, log.copies("k1"), len(log.sends), len(log.reads)) == (1, 1, 1, 3)
    assert retried == Counter({"found": 1})


@pytest.mark.parametrize("status", [404, 403, 422])
def test_a_post_the_server_refuses_for_good_fails_at_once(status: int) -> None:
    log = Log()
    log.send_faults = [(ApiError(status_code=status, body="no"), False)]

    with pytest.raises(ApiError) as raised:
        post(log)

    assert raised.value.status_code == status
    assert len(log.sends) == 1


def test_a_post_nobody_waits_for_is_dropped_and_never_sent_again() -> None:
    log = Log()
    log.send_faults = [(WireError("reset"), False)]
    asked = iter([True, True, False])

    with pytest.raises(PostDropped):
        post(log, wanted=lambda: next(asked))

    assert len(log.sends) == 1
    assert log.copies("k1") == 0


def test_a_post_another_process_may_have_sent_is_looked_for_first() -> None:
    log = Log()
    log.events.append(customer(1, "hello", key="k1"))  # the dead shard had sent it

    offset, retried = post(log, maybe_sent=True)

    assert (offset, log.copies("k1"), log.sends) == (1, 1, [])
    assert retried == Counter({"found": 1})


def test_a_post_another_process_never_sent_is_sent_once_proved_absent() -> None:
    log = Log()

    offset, retried = post(log, maybe_sent=True)

    assert (offset, log.copies("k1"), len(log.sends)) == (1, 1, 1)
    assert retried == Counter({"absent": 1})


# --- the ask's deadline: "not sent" only when proven --------------------------------------


def test_at_the_deadline_a_post_only_ever_refused_is_proven_not_sent() -> None:
    log = Log()
    log.send_faults = [(ApiError(status_code=503, body="busy"), False) for _ in range(50)]

    with pytest.raises(PostExpired, match="was not sent"):
        post(log, deadline=5.0)

    assert log.copies("k1") == 0
    assert log.reads == []  # nothing could land: nothing to read


def test_at_the_deadline_a_cut_post_that_landed_is_found_and_answered() -> None:
    """A partition: the post's request is cut (its bytes may still reach Parlant) and the
    deadline passes; the log, read a grace later, has it: its offset, not "not sent"."""
    log = Log()
    log.send_faults = [(WireError("reset"), True)]  # its bytes landed; its answer was lost

    offset, _ = post(log, deadline=1.0)

    assert (offset, log.copies("k1"), len(log.sends)) == (1, 1, 1)
    assert log.reads == [2.0]  # the settling read, a grace after the cut


def test_at_the_deadline_a_cut_post_the_log_does_not_hold_is_proven_not_sent() -> None:
    log = Log()
    log.send_faults = [(WireError("reset"), False)]

    with pytest.raises(PostExpired, match="shows none of them stored"):
        post(log, deadline=1.0)

    assert log.copies("k1") == 0
    assert log.reads[-1] >= log.sends[0] + 2.0  # read a grace after the cut


def test_at_the_deadline_a_cut_post_whose_log_cannot_be_read_is_unknown_not_unsent() -> None:
    log = Log()
    log.send_faults = [(WireError("reset"), True)]
    log.read_faults = [WireError("partitioned")] * 10

    with pytest.raises(DeliveryUnknown, match="may have been stored"):
        post(log, deadline=1.0)


def test_a_request_in_flight_at_the_deadline_is_cut_and_the_post_settled() -> None:
    """A send that hangs (a silent partition) is cut at the deadline, in real time."""

    class Hanging(Log):
        async def send_customer_message(self, session_id: str, body: bytes) -> int:
            self.sends.append(self.now)
            await asyncio.Event().wait()  # never answered
            raise AssertionError("unreachable")

    log = Hanging()
    deadline = 0.05  # the fake clock stands at 0: the send is cut 0.05 real seconds in

    with pytest.raises(PostExpired, match="shows none of them stored"):
        post(log, deadline=deadline)

    assert len(log.sends) == 1
    assert len(log.reads) == 1
