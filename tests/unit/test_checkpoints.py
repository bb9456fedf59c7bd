"""The memory of where stopped sessions stopped: bounded in size and in time."""

from __future__ import annotations

import pytest

from actors._checkpoints import CheckpointMemory
from actors._messages import Resume


class Now:
    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def test_a_checkpoint_is_recalled_until_its_ttl_passes() -> None:
    now = Now()
    memory = CheckpointMemory(now, capacity=10, ttl=60)
    memory.remember("s1", Resume(42))

    now.value = 59.9
    assert memory.recall("s1") == Resume(42)
    now.value = 60.0
    assert memory.recall("s1") is None
    assert len(memory) == 0


def test_past_its_capacity_the_least_recently_stored_is_forgotten() -> None:
    memory = CheckpointMemory(Now(), capacity=2, ttl=None)
    memory.remember("s1", Resume(1))
    memory.remember("s2", Resume(2))
    memory.remember("s1", Resume(3))  # storing again makes it the most recent
    memory.remember("s3", Resume(4))

    assert (memory.recall("s1"), memory.recall("s2"), memory.recall("s3")) == (
        Resume(3),
        None,
        Resume(4),
    )
    assert len(memory) == 2


def test_storing_again_restarts_the_ttl_and_forget_drops_at_once() -> None:
    now = Now()
    memory = CheckpointMemory(now, capacity=10, ttl=60)
    memory.remember("s1", Resume(1))
    now.value = 50
    memory.remember("s1", Resume(2))
    now.value = 100
    assert memory.recall("s1") == Resume(2)
    memory.forget("s1")
    assert memory.recall("s1") is None


def test_expired_entries_do_not_hold_memory_even_if_never_recalled() -> None:
    now = Now()
    memory = CheckpointMemory(now, capacity=1000, ttl=10)
    for n in range(100):
        memory.remember(f"old{n}", Resume(n))
    now.value = 11
    memory.remember("new", Resume(1))

    assert len(memory) == 1


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        CheckpointMemory(Now(), capacity=0, ttl=None)
    with pytest.raises(ValueError, match="ttl"):
        CheckpointMemory(Now(), capacity=1, ttl=0)
