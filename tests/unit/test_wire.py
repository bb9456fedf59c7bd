"""The lean connection's connect bound: a burst of connects never floods a server's accept
queue (it overflowed at 15,000 sessions opened at once, and their connects timed out)."""

from __future__ import annotations

import asyncio

import pytest

from actors import _wire


@pytest.mark.asyncio
async def test_connection_attempts_in_flight_are_bounded_and_the_rest_wait_their_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_flight = peak = 0
    release = asyncio.Event()

    async def connect(*args: object, **kwargs: object) -> tuple[None, None]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return None, None

    monkeypatch.setattr(_wire.asyncio, "open_connection", connect)
    target = _wire.WireTarget.of("http://127.0.0.1:9", {})
    attempts = [
        asyncio.ensure_future(_wire._connect(target, timeout=30))
        for _ in range(_wire.CONNECTS_IN_FLIGHT + 50)
    ]
    for _ in range(10):  # let every attempt run as far as it can (no time passes)
        await asyncio.sleep(0)
    started = in_flight
    release.set()
    results = await asyncio.gather(*attempts)

    assert started == peak == _wire.CONNECTS_IN_FLIGHT  # 50 waited their turn
    assert results == [(None, None)] * (_wire.CONNECTS_IN_FLIGHT + 50)  # then connected too
