"""The durable conversation store, on SQLite (a file in tmp_path) and on a real PostgreSQL.

Every behaviour runs on both databases, each test on a fresh one; time is the `now` the tests
give, never the clock. "Another worker" is a second store object on the same URL: its own
engine and connections, as a second process would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from supervisor.backend._agents import Intent
from supervisor.backend._store import Conversation, ConversationStore

TTL = 100.0
T0 = 1_700_000_000.0
"""The tests' epoch: every `now` is T0 plus a few seconds."""

MakeStore = Callable[..., Awaitable[ConversationStore]]


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database's URL: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'conversations.db'}"
        return
    base: str = request.getfixturevalue("postgresql_base")
    name = f"store_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield f"{base}/{name}"
        async with admin.connect() as connection:
            await connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest_asyncio.fixture
async def make_store(url: str) -> AsyncIterator[MakeStore]:
    """make_store(ttl=TTL, start=True) -> a store on the test's database (closed after)."""
    stores: list[ConversationStore] = []

    async def make(*, ttl: float = TTL, start: bool = True) -> ConversationStore:
        store = ConversationStore(url, ttl=ttl)
        stores.append(store)
        if start:
            await store.start()
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest_asyncio.fixture
async def store(make_store: MakeStore) -> ConversationStore:
    """A started store on the test's fresh database, ttl=TTL."""
    return await make_store()


async def raw_rows(url: str) -> list[dict[str, object]]:
    """The table as the database holds it, read with plain SQL."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.text("SELECT * FROM conversations"))
            return [dict(row) for row in result.mappings()]
    finally:
        await engine.dispose()


async def open_many(
    store: ConversationStore, count: int, at: float = T0, step: float = 0.0
) -> list[Conversation]:
    return [
        await store.open(f"session-{n}", Intent.RESEARCH_PAPER, at + n * step) for n in range(count)
    ]


@pytest.mark.asyncio
async def test_open_then_find_returns_the_same_conversation(store: ConversationStore) -> None:
    opened = await store.open("session-1", Intent.MEDICAL_WELFARE, T0)
    assert opened.session_id == "session-1"
    assert opened.intent is Intent.MEDICAL_WELFARE
    assert (opened.created, opened.last_used) == (T0, T0)
    assert len(opened.token) == 43  # token_urlsafe(32)
    assert opened.key == hashlib.sha256(opened.token.encode()).hexdigest()

    found = await store.find(opened.token, T0 + 5)
    assert found == dataclasses.replace(opened, last_used=T0 + 5)
    assert isinstance(found.intent, Intent)

    other = await store.open("session-1", Intent.MEDICAL_WELFARE, T0)
    assert other.token != opened.token  # a new token each time, even for the same session


@pytest.mark.asyncio
async def test_unknown_and_forged_tokens_find_nothing(store: ConversationStore) -> None:
    real = await store.open("session-1", Intent.RESEARCH_PAPER, T0)
    forged = [
        "",
        "x",
        real.token[:-1],
        real.token + "A",
        real.token.swapcase(),
        real.key,  # the stored hash is no credential
        real.session_id,  # nor is Parlant's id
        "A" * 256,
        "A" * 257,
        "A" * 1_000_000,
        "\x00",
        "\ud800",  # a lone surrogate: not even encodable as UTF-8
        "' OR '1'='1",
        "%",
    ]
    for token in forged:
        assert await store.find(token, T0 + 1) is None, token[:40]
        assert await store.claim_turn(token, T0 + 1, lease=30) is None, token[:40]
        await store.release_turn(token, "claim")
        assert await store.forget(token) is None, token[:40]
    # None of that touched the real conversation, nor its turn.
    assert await store.count() == 1
    assert await store.find(real.token, T0 + 2) == dataclasses.replace(real, last_used=T0 + 2)
    assert await store.claim_turn(real.token, T0 + 2, lease=30) is not None


@pytest.mark.asyncio
async def test_the_token_is_not_stored_in_plaintext(store: ConversationStore, url: str) -> None:
    conversations = await open_many(store, 3)
    rows = await raw_rows(url)
    assert len(rows) == 3
    assert {row["session_id"] for row in rows} == {c.session_id for c in conversations}
    assert {row["key"] for row in rows} == {
        hashlib.sha256(c.token.encode()).hexdigest() for c in conversations
    }
    for conversation in conversations:
        for row in rows:
            for column, value in row.items():
                assert conversation.token not in str(value), column


@pytest.mark.asyncio
async def test_another_store_on_the_same_url_finds_the_conversation(
    make_store: MakeStore,
) -> None:
    first = await make_store()
    opened = await first.open("session-1", Intent.RESEARCH_PAPER, T0)
    await first.aclose()  # the first backend stops (or another worker is asked)

    second = await make_store()  # start() again on the existing table: nothing lost
    found = await second.find(opened.token, T0 + 1)
    assert found == dataclasses.replace(opened, last_used=T0 + 1)

    # And the other way round, both running at once.
    third = await make_store()
    by_third = await third.open("session-2", Intent.MEDICAL_WELFARE, T0 + 2)
    assert await second.find(by_third.token, T0 + 3) == dataclasses.replace(
        by_third, last_used=T0 + 3
    )
    assert await second.count() == await third.count() == 2


@pytest.mark.asyncio
async def test_a_conversation_unused_for_ttl_is_not_found(store: ConversationStore) -> None:
    kept, lapsed = await open_many(store, 2)
    # Expired is `last_used < now - ttl`: exactly ttl later it is still there...
    assert await store.find(kept.token, T0 + TTL) is not None
    # ...a moment more and it is gone, though no `expire` has deleted it yet.
    assert await store.find(lapsed.token, T0 + TTL + 0.5) is None
    assert await store.count() == 2
    assert await store.find(lapsed.token, T0 + TTL + 0.5) is None  # not revived by asking


@pytest.mark.asyncio
async def test_find_refreshes_last_used(store: ConversationStore) -> None:
    opened = await store.open("session-1", Intent.RESEARCH_PAPER, T0)
    for step in (1, 2, 3, 4):  # each use within the ttl of the last; 3 ttl in all
        found = await store.find(opened.token, T0 + step * 0.75 * TTL)
        assert found is not None
        assert found.last_used == T0 + step * 0.75 * TTL
    last = T0 + 3 * TTL
    assert await store.expire(last + TTL - 1) == []
    assert await store.find(opened.token, last + TTL) is not None
    # A find stamped earlier (another process's clock a little behind) never moves it back.
    found = await store.find(opened.token, last)
    assert found is not None
    assert found.last_used == last + TTL


@pytest.mark.asyncio
async def test_expire_deletes_and_returns_exactly_the_expired(store: ConversationStore) -> None:
    old, older_used, fresh = await open_many(store, 3, step=50)  # at T0, T0+50, T0+100
    now = T0 + TTL + 60  # expired: last_used < T0 + 60
    expired = await store.expire(now)
    assert [(c.key, c.session_id, c.intent) for c in expired] == [
        (c.key, c.session_id, c.intent) for c in (old, older_used)
    ]
    assert [(c.created, c.last_used) for c in expired] == [(T0, T0), (T0 + 50, T0 + 50)]
    assert all(c.token == "" for c in expired)  # the store never had the token
    assert await store.count() == 1
    # Deleted, not just expired: even a `now` in their lifetime finds them no more.
    assert await store.find(old.token, T0 + 1) is None
    assert await store.find(older_used.token, T0 + 51) is None
    assert await store.find(fresh.token, now) is not None
    assert await store.expire(now) == []


@pytest.mark.asyncio
async def test_expire_takes_at_most_limit_least_recently_used_first(
    store: ConversationStore,
) -> None:
    conversations = await open_many(store, 5, step=1)
    now = T0 + 10 + TTL
    batches = [await store.expire(now, limit=2) for _ in range(4)]
    assert [[c.key for c in batch] for batch in batches] == [
        [conversations[0].key, conversations[1].key],
        [conversations[2].key, conversations[3].key],
        [conversations[4].key],
        [],
    ]
    with pytest.raises(ValueError, match="limit"):
        await store.expire(now, limit=0)


@pytest.mark.asyncio
async def test_concurrent_expires_never_return_the_same_conversation(
    make_store: MakeStore,
) -> None:
    first, second = await make_store(), await make_store()
    conversations = await open_many(first, 60, step=0.01)
    kept = await second.open("kept", Intent.RESEARCH_PAPER, T0 + 50)
    now = T0 + 10 + TTL
    returned: list[Conversation] = []
    for _ in range(20):
        batches = await asyncio.gather(*(s.expire(now, limit=7) for s in (first, second) * 2))
        returned += [c for batch in batches for c in batch]
        if not any(batches):
            break
    keys = [c.key for c in returned]
    assert len(keys) == len(set(keys)), "a conversation was expired twice"
    assert set(keys) == {c.key for c in conversations}
    assert await first.count() == 1
    assert await second.find(kept.token, now) is not None


@pytest.mark.asyncio
async def test_forget_returns_the_conversation_once(store: ConversationStore) -> None:
    opened, other = await open_many(store, 2)
    assert await store.forget(opened.token) == opened
    assert await store.forget(opened.token) is None
    assert await store.find(opened.token, T0 + 1) is None
    assert await store.count() == 1
    assert await store.find(other.token, T0 + 1) is not None


@pytest.mark.asyncio
async def test_claim_turn_holds_one_turn_until_release_or_lease_end(
    store: ConversationStore,
) -> None:
    conversation, other = await open_many(store, 2)
    token = conversation.token
    claim = await store.claim_turn(token, T0, lease=30)
    assert claim is not None
    assert await store.claim_turn(token, T0 + 10, lease=30) is None
    assert await store.claim_turn(token, T0 + 29.9, lease=30) is None
    assert await store.claim_turn(other.token, T0 + 10, lease=30) is not None  # per conversation

    await store.release_turn(token, "not-the-claim")  # only its holder releases a turn
    assert await store.claim_turn(token, T0 + 10, lease=30) is None
    await store.release_turn(token, claim)
    stale = await store.claim_turn(token, T0 + 11, lease=30)  # held until T0 + 41
    assert stale is not None
    assert await store.claim_turn(token, T0 + 40, lease=30) is None
    # Its holder died (or outlived its lease) without releasing: the lease lapses by itself,
    # and the old holder's release no longer frees the new holder's turn.
    assert await store.claim_turn(token, T0 + 41, lease=30) is not None
    await store.release_turn(token, stale)
    assert await store.claim_turn(token, T0 + 42, lease=30) is None

    with pytest.raises(ValueError, match="lease"):
        await store.claim_turn(token, T0 + 100, lease=0)
    # A turn in flight does not keep `find` out: only a second turn.
    assert await store.find(token, T0 + 42) is not None


@pytest.mark.asyncio
async def test_concurrent_claims_let_exactly_one_turn_through(make_store: MakeStore) -> None:
    first, second = await make_store(), await make_store()
    conversations = await open_many(first, 20)
    for conversation in conversations:
        claims = await asyncio.gather(
            *(s.claim_turn(conversation.token, T0 + 1, lease=30) for s in (first, second) * 2)
        )
        assert sorted(claim is not None for claim in claims) == [False, False, False, True]
    # And again once the leases lapsed.
    claims = await asyncio.gather(
        *(s.claim_turn(c.token, T0 + 31, lease=30) for c in conversations for s in (first, second))
    )
    assert sum(claim is not None for claim in claims) == len(conversations)


@pytest.mark.asyncio
async def test_count(store: ConversationStore) -> None:
    assert await store.count() == 0
    conversations = await open_many(store, 3, step=10)
    assert await store.count() == 3
    await store.forget(conversations[1].token)
    assert await store.count() == 2
    assert len(await store.expire(T0 + 15 + TTL)) == 1
    assert await store.count() == 1


@pytest.mark.asyncio
async def test_start_is_idempotent_when_several_processes_start_at_once(
    make_store: MakeStore,
) -> None:
    stores = [await make_store(start=False) for _ in range(8)]
    await asyncio.gather(*(s.start() for s in stores))
    await asyncio.gather(*(s.start() for s in stores))
    opened = await stores[0].open("session-1", Intent.RESEARCH_PAPER, T0)
    assert await stores[7].find(opened.token, T0 + 1) is not None


@pytest.mark.asyncio
async def test_sqlite_store_in_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "backend"
    store = ConversationStore.sqlite(directory, ttl=TTL)
    try:
        await store.start()
        opened = await store.open("session-1", Intent.RESEARCH_PAPER, T0)
    finally:
        await store.aclose()
    database = directory / "conversations.db"
    with contextlib.closing(sqlite3.connect(database)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT session_id FROM conversations").fetchall() == [("session-1",)]
    reopened = ConversationStore(f"sqlite+aiosqlite:///{database}", ttl=TTL)
    try:
        assert await reopened.find(opened.token, T0 + 1) is not None
    finally:
        await reopened.aclose()


@pytest.mark.asyncio
async def test_sqlite_start_waits_for_another_process_writing_the_file(tmp_path: Path) -> None:
    """Switching a file to WAL needs it to itself, and while another connection is in a write
    transaction SQLite refuses at once ("database is locked", its busy timeout unused: the
    same happens when several workers start on a new file): `start` tries again instead."""
    database = tmp_path / "conversations.db"
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("CREATE TABLE unrelated (a)")
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO unrelated VALUES (1)")  # holds the write lock
        store = ConversationStore(f"sqlite+aiosqlite:///{database}", ttl=TTL)
        try:
            starting = asyncio.ensure_future(store.start())
            await asyncio.sleep(0.3)
            assert not starting.done()  # still trying, not failed
            other.execute("COMMIT")
            await asyncio.wait_for(starting, timeout=10)
            assert await store.count() == 0
        finally:
            await store.aclose()
    with contextlib.closing(sqlite3.connect(database)) as fresh:
        assert fresh.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_ttl_must_be_positive_seconds(ttl: float, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl"):
        ConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", ttl=ttl)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+aiomysql://user@localhost/db", "unsupported database URL scheme 'mysql"),
        ("sqlite:///x.db", "unsupported database URL scheme 'sqlite'"),
        ("postgresql://user:secret@localhost/db", "unsupported database URL scheme"),
        ("not a url", "not a database URL"),
        ("sqlite+aiosqlite://", "needs a file"),
        ("sqlite+aiosqlite:///:memory:", "needs a file"),
    ],
)
def test_unsupported_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        ConversationStore(url)
    assert "secret" not in str(refused.value)  # no password in the message
