"""TurnLogs: the resume logs of streamed turns are bounded by age and by bytes (a fake clock)."""

from __future__ import annotations

from supervisor.backend._stream import Frame, Position, TurnLogs


class Now:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def streamed(logs: TurnLogs, key: str, deltas: int, *, finish: bool = True) -> None:
    log = logs.start(key, 0)
    for n in range(deltas):
        log.append(Frame(Position(0, 1, n), "text-delta", {"id": "msg-1", "delta": " word"}))
    if finish:
        log.finish()


def test_a_finished_log_is_swept_once_its_age_passes_and_a_running_one_never_is() -> None:
    now = Now()
    logs = TurnLogs(keep=300.0, now=now)
    streamed(logs, "done", 10)
    streamed(logs, "running", 10, finish=False)

    now.value = 300.0
    assert logs.sweep() == 0
    now.value = 301.0
    assert logs.sweep() == 1
    assert logs.find("done") is None
    now.value = 100_000.0
    assert logs.sweep() == 0
    assert logs.find("running") is not None


def test_past_the_byte_bound_the_oldest_finished_logs_go_first() -> None:
    now = Now()
    logs = TurnLogs(keep=3600.0, now=now, max_bytes=1_000_000)
    for n in range(10):
        now.value = float(n)
        streamed(logs, f"turn {n}", 500)  # ~180 KB each
    assert logs.size() > 1_000_000

    forgotten = logs.sweep()

    assert logs.size() <= 1_000_000
    assert forgotten >= 4
    assert logs.find("turn 0") is None
    assert logs.find("turn 9") is not None
