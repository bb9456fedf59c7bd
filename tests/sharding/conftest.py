"""A local Ray instance for the sharding tests (one per test session: it takes seconds)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from supervisor import SupervisorConfig
from supervisor.sharding import ShardedSupervisor

_names = itertools.count()


def sharding_config(**overrides: Any) -> SupervisorConfig:
    """Durable checkpoints written often, quick retries: failover within a test's patience."""
    settings: dict[str, Any] = {
        "durable_checkpoints": True,
        "checkpoint_interval": 0.2,
        "wait_for_data": 5,
        "wait_jitter": 1,
        "idle_ttl": None,
        **overrides,
    }
    return SupervisorConfig(**settings)


def sharded(url: str, *, shards: int, name: str, **options: Any) -> ShardedSupervisor:
    """A sharded supervisor on the local Ray instance, as the sharding tests run one: half a
    CPU a shard, shards watched every 0.2 s, `sharding_config()` unless a config is given."""
    options.setdefault("config", sharding_config())
    return ShardedSupervisor(
        url, shards=shards, name=name, cpus_per_shard=0.5, watch_interval=0.2, **options
    )


@pytest.fixture
def shard(ray_instance: Any) -> Iterator[Callable[..., ShardedSupervisor]]:
    """shard(url, shards=3, **options) -> a sharded supervisor on the local Ray instance,
    stopped after the test."""
    with contextlib.ExitStack() as running:

        def start(url: str, shards: int = 3, **options: Any) -> ShardedSupervisor:
            return running.enter_context(
                sharded(url, shards=shards, name=f"test-{next(_names)}", **options)
            )

        yield start
