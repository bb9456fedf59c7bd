"""The benchmark harness works end to end at a small size (correctness, never speed)."""

from __future__ import annotations

import pytest

from bench.run import measure


@pytest.mark.parametrize("impl", ["library", "baseline"])
def test_each_client_reaches_every_session_and_measures_delivery(impl: str) -> None:
    result = measure(impl, 20)

    assert result["sessions_polling"] == 20
    assert result["stop_deadline_met"]
    assert result["latency_p50_ms"] > 0
    assert result["floor_p50_ms"] > 0
    if impl == "library":
        assert result["threads_after_stop"] == 1  # only the main thread is left
