"""The reference backend's durable conversation store: opaque tokens in SQLite or PostgreSQL.

A client holds an opaque token (`secrets.token_urlsafe(32)`) instead of Parlant's session id.
The store keeps what each token stands for (the Parlant session and the agent's intent) in one
table, `conversations`, through SQLAlchemy Core on an async engine, so that a restarted backend
and every worker process sharing the database find the same conversations:

- SQLite (`sqlite+aiosqlite:///path/to/file.db`, or `ConversationStore.sqlite(directory)`):
  one file shared by the worker processes of one machine, in WAL journal mode with a busy
  timeout, so readers never wait for the writer and writers queue instead of failing.
- PostgreSQL (`postgresql+asyncpg://user@host:port/db`, the `[postgresql]` extra): shared by
  backends on several machines.

Only the SHA-256 of a token (hex, the primary key `key`) is written, never the token: a dump of
the database hands out no credentials. A conversation expires after `ttl` seconds without use;
`expire` deletes expired rows (at most `limit` a call) and returns them so that the caller can
close their Parlant sessions. `claim_turn` / `release_turn` keep one turn in flight per
conversation across processes, by a lease that lapses by itself if its holder dies
(`renew_turn` extends it while the turn runs).

Every operation is one SQL statement in its own transaction (`UPDATE ... RETURNING`,
`DELETE ... RETURNING`), so it is atomic against every other process on both databases, and
no SQLite transaction ever has to turn a read snapshot into a write (which fails at once in WAL
mode instead of waiting). Time is given (`now`, epoch seconds), never read: the caller's clock,
and its tests', decide.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Row, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from supervisor.backend._agents import Intent

__all__ = ["Conversation", "ConversationStore", "StoreUnusable", "token_key"]


class StoreUnusable(RuntimeError):
    """The conversation store cannot be used as it is (an SQLite file that is not a database,
    or is corrupted); the message says what to do."""


TOKEN_BYTES: Final = 32
"""256 random bits per token: unguessable, and nothing in it derives from Parlant's ids."""

MAX_TOKEN_LENGTH: Final = 256
"""Longer tokens are forged (ours are 43 characters): answered None without a query."""

SQLITE_FILE: Final = "conversations.db"
"""The file `ConversationStore.sqlite(directory)` keeps the conversations in."""

SQLITE_BUSY_SECONDS: Final = 30.0
"""How long an SQLite statement waits for another process's write to finish before failing."""

_SQLITE_DRIVER: Final = "sqlite+aiosqlite"
_POSTGRESQL_DRIVER: Final = "postgresql+asyncpg"

_CREATE_LOCK: Final = 0x5041_524C_414E_5443
"""The PostgreSQL advisory lock that serialises `start` across processes ("PARLANTC")."""

_metadata = sa.MetaData()

_conversations = sa.Table(
    "conversations",
    _metadata,
    # SHA-256 of the token, 64 hex digits: the token itself is never stored.
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.Text(), nullable=False),
    sa.Column("intent", sa.String(64), nullable=False),
    sa.Column("created", sa.Double(), nullable=False),
    sa.Column("last_used", sa.Double(), nullable=False),
    # Until when the turn in flight holds the conversation; NULL: none is.
    sa.Column("turn_until", sa.Double(), nullable=True),
    # Who holds that turn (the claim `claim_turn` returned): only its holder releases it.
    sa.Column("turn_owner", sa.String(32), nullable=True),
)

_by_last_used = sa.Index("conversations_last_used", _conversations.c.last_used)

_health = sa.Table(
    "store_health",
    _metadata,
    # One row per probe name, rewritten by each `check_writable`: a write that touches nothing
    # proves nothing on SQLite (a zero-row UPDATE of a full disk succeeds).
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("at", sa.Double(), nullable=False),
)

_COLUMNS: Final = (
    _conversations.c.key,
    _conversations.c.session_id,
    _conversations.c.intent,
    _conversations.c.created,
    _conversations.c.last_used,
)


@final
@dataclass(frozen=True, slots=True)
class Conversation:
    """A client's conversation: its token, the Parlant session behind it, and its agent.

    `key` is the SHA-256 (hex) of the token, what the store keeps instead of the token.
    `token` is the token itself where the store was given it (`open`, `find`, `forget`), and
    the empty string on what `expire` returns: the store cannot know it there (callers only
    need `session_id`, to close the Parlant session).
    """

    token: str
    session_id: str
    intent: Intent
    created: float
    """When it was opened, epoch seconds."""
    last_used: float
    """When a token last found it (or it was opened), epoch seconds."""
    key: str
    """SHA-256 of the token, hex: the row's primary key."""


def token_key(token: str) -> str:
    """The SHA-256 (hex) of a token: what the store keeps, and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _conversation(row: Row[Any], token: str = "") -> Conversation:
    return Conversation(
        token=token,
        session_id=str(row.session_id),
        intent=Intent(row.intent),
        created=float(row.created),
        last_used=float(row.last_used),
        key=str(row.key),
    )


def _plausible(token: str) -> bool:
    """Worth a query: not empty, not longer than any token we hand out could be."""
    return 0 < len(token) <= MAX_TOKEN_LENGTH


def _seconds(name: str, value: float) -> float:
    """`value` as a float, or ValueError unless it is a positive finite number of seconds."""
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return seconds


@final
class ConversationStore:
    """token -> Conversation, durable, shared by every process on the same database URL.

    `url` is an SQLAlchemy URL, `sqlite+aiosqlite:///path/to/file.db` or
    `postgresql+asyncpg://user@host:port/db` (also an `sqlalchemy.URL`); `ttl` is how many
    seconds without use a conversation lives. Call `start` before anything else and `aclose`
    at the end. A Parlant session id is never accepted in place of a token: a real server hands
    out the same ids again after a restart, so knowing one must not open anybody's conversation.
    """

    def __init__(self, url: str | URL, *, ttl: float = 86_400.0) -> None:
        self._ttl = _seconds("ttl", ttl)
        try:
            parsed = make_url(url)
        except ArgumentError as error:
            raise ValueError(f"not a database URL: {error}") from None
        self._url = parsed
        options: dict[str, Any]
        if parsed.drivername == _SQLITE_DRIVER:
            if (parsed.database or ":memory:") == ":memory:":
                raise ValueError(
                    "the SQLite conversation store needs a file (sqlite+aiosqlite:///path/to/"
                    f"file.db): an in-memory database is neither durable nor shared, got {url!r}"
                )
            options = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}}
        elif parsed.drivername == _POSTGRESQL_DRIVER:
            options = {"pool_pre_ping": True}
        else:
            raise ValueError(
                f"unsupported database URL scheme {parsed.drivername!r} (in "
                f"{parsed.render_as_string(hide_password=True)!r}): the conversation store "
                f"takes {_SQLITE_DRIVER}:///path/to/file.db or "
                f"{_POSTGRESQL_DRIVER}://user@host:port/database"
            )
        self._engine: AsyncEngine = create_async_engine(parsed, **options)
        if parsed.drivername == _SQLITE_DRIVER:
            event.listen(self._engine.sync_engine, "connect", _sqlite_connected)

    @classmethod
    def sqlite(cls, directory: Path, *, ttl: float = 86_400.0) -> ConversationStore:
        """A store in `directory`/conversations.db (the directory is created if missing)."""
        directory.mkdir(parents=True, exist_ok=True)
        return cls(URL.create(_SQLITE_DRIVER, database=str(directory / SQLITE_FILE)), ttl=ttl)

    @property
    def ttl(self) -> float:
        """Seconds without use after which a conversation expires."""
        return self._ttl

    def __repr__(self) -> str:
        url = self._url.render_as_string(hide_password=True)
        return f"ConversationStore({url!r}, ttl={self._ttl!r})"

    async def start(self) -> None:
        """Create the table and its index if they are missing.

        Idempotent, and safe when several processes start at once: `CREATE ... IF NOT EXISTS`,
        serialised on PostgreSQL by an advisory lock (concurrent `CREATE TABLE IF NOT EXISTS`
        can still collide there in the catalogue), by the database lock on SQLite. On SQLite it
        first puts the file in WAL journal mode (kept in the file), so that readers never wait
        for the writer.
        """
        try:
            if self._url.drivername == _SQLITE_DRIVER:
                await self._sqlite_wal()
            async with self._engine.begin() as connection:
                if self._url.drivername == _POSTGRESQL_DRIVER:
                    await connection.execute(
                        sa.select(
                            sa.func.pg_advisory_xact_lock(sa.literal(_CREATE_LOCK, sa.BigInteger))
                        )
                    )
                await connection.execute(CreateTable(_conversations, if_not_exists=True))
                await connection.execute(CreateIndex(_by_last_used, if_not_exists=True))
                await connection.execute(CreateTable(_health, if_not_exists=True))
        except DatabaseError as error:
            if self._url.drivername != _SQLITE_DRIVER:
                raise
            # "file is not a database", "database disk image is malformed": nothing here can
            # mend it, and a traceback would not say what to do
            raise StoreUnusable(
                f"the conversation store {self._url.database} cannot be used "
                f"({error.orig or error}): move it aside (its conversations are lost to the "
                "backend) or choose another --data-dir"
            ) from None

    async def _sqlite_wal(self) -> None:
        """Switch the SQLite file to WAL journal mode, unless it is in it already.

        The switch needs the file to itself, and SQLite answers "database is locked" at once,
        without its busy timeout, while another connection holds it (several workers starting
        on a new file): so it is tried again, with a pause, for up to `SQLITE_BUSY_SECONDS`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SQLITE_BUSY_SECONDS
        pause = 0.01
        while True:
            try:
                async with self._engine.connect() as connection:
                    mode = await connection.exec_driver_sql("PRAGMA journal_mode")
                    if str(mode.scalar()).lower() != "wal":
                        await connection.exec_driver_sql("PRAGMA journal_mode = WAL")
                return
            except OperationalError as error:
                if "locked" not in str(error) or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def open(
        self, session_id: str, intent: Intent, now: float, *, token: str | None = None
    ) -> Conversation:
        """A new conversation for the Parlant session, used at `now`, with a new random token,
        or with `token` (a chat id the client chose; `sqlalchemy.exc.IntegrityError` if it
        names a conversation already)."""
        token = token if token is not None else secrets.token_urlsafe(TOKEN_BYTES)
        key = token_key(token)
        now = float(now)
        async with self._engine.begin() as connection:
            await connection.execute(
                sa.insert(_conversations).values(
                    key=key,
                    session_id=session_id,
                    intent=str(intent.value),
                    created=now,
                    last_used=now,
                    turn_until=None,
                    turn_owner=None,
                )
            )
        return Conversation(token, session_id, intent, now, now, key)

    async def find(self, token: str, now: float) -> Conversation | None:
        """The conversation a token stands for, now used at `now` (`last_used`, which never
        goes back); None for an unknown, forged or expired (`last_used < now - ttl`) token."""
        if not _plausible(token):
            return None
        now = float(now)
        table = _conversations
        used = sa.case(
            (table.c.last_used < now, sa.literal(now, sa.Double)), else_=table.c.last_used
        )
        statement = (
            sa.update(table)
            .where(table.c.key == token_key(token), table.c.last_used >= now - self._ttl)
            .values(last_used=used)
            .returning(*_COLUMNS)
        )
        async with self._engine.begin() as connection:
            row = (await connection.execute(statement)).first()
        return None if row is None else _conversation(row, token)

    async def forget(self, token: str) -> Conversation | None:
        """Delete the conversation; returns what the token stood for (None if nothing, also
        for a forged token; an expired conversation not yet deleted by `expire` is returned)."""
        if not _plausible(token):
            return None
        table = _conversations
        statement = sa.delete(table).where(table.c.key == token_key(token)).returning(*_COLUMNS)
        async with self._engine.begin() as connection:
            row = (await connection.execute(statement)).first()
        return None if row is None else _conversation(row, token)

    async def expire(self, now: float, limit: int = 1000) -> list[Conversation]:
        """Delete at most `limit` conversations expired at `now` (least recently used first) and
        return them, with `token` empty: the caller closes their Parlant sessions.

        Safe when several processes run it at once: a row is returned by the one statement that
        deleted it (PostgreSQL skips the rows another `expire` has locked; SQLite runs one
        writer at a time). Call it again while it returns `limit` conversations.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        table = _conversations
        expired = (
            sa.select(table.c.key)
            .where(table.c.last_used < float(now) - self._ttl)
            .order_by(table.c.last_used)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has no row locks
        )
        statement = sa.delete(table).where(table.c.key.in_(expired)).returning(*_COLUMNS)
        async with self._engine.begin() as connection:
            rows: Sequence[Row[Any]] = (await connection.execute(statement)).all()
        return sorted((_conversation(row) for row in rows), key=lambda c: (c.last_used, c.key))

    async def claim_turn(self, token: str, now: float, lease: float) -> str | None:
        """Claim the conversation's one turn in flight (across every process), until
        `now + lease` or `release_turn`: the claim (give it to `release_turn`), or None if
        another turn holds it (or the token is unknown). An expired lease is claimed again: its
        holder died, or outlived it (and then releases nothing: the claim is no longer its)."""
        lease = _seconds("lease", lease)
        if not _plausible(token):
            return None
        now = float(now)
        claim = secrets.token_hex(16)
        table = _conversations
        statement = (
            sa.update(table)
            .where(
                table.c.key == token_key(token),
                sa.or_(table.c.turn_until.is_(None), table.c.turn_until <= now),
            )
            .values(turn_until=now + lease, turn_owner=claim)
            .returning(table.c.key)
        )
        async with self._engine.begin() as connection:
            claimed = (await connection.execute(statement)).first() is not None
        return claim if claimed else None

    async def renew_turn(self, token: str, claim: str, now: float, lease: float) -> bool:
        """Extend the turn `claim` holds to `now + lease`; False if the claim no longer holds
        it (its lease lapsed and another turn took it, or it was released)."""
        lease = _seconds("lease", lease)
        if not _plausible(token):
            return False
        table = _conversations
        statement = (
            sa.update(table)
            .where(table.c.key == token_key(token), table.c.turn_owner == claim)
            .values(turn_until=float(now) + lease)
            .returning(table.c.key)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first() is not None

    async def release_turn(self, token: str, claim: str) -> None:
        """End the turn `claim` holds: the next `claim_turn` succeeds. A claim that no longer
        holds the turn (its lease lapsed and another turn took it) releases nothing."""
        if not _plausible(token):
            return
        table = _conversations
        statement = (
            sa.update(table)
            .where(table.c.key == token_key(token), table.c.turn_owner == claim)
            .values(turn_until=None, turn_owner=None)
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def check_writable(self, now: float, timeout: float) -> None:
        """Write one small row, in a transaction of its own, waiting at most `timeout` seconds
        for another's lock: raises what the database says when it cannot (locked, read-only,
        full). What `/readyz` asks, and what a new conversation asks before it creates
        anything in Parlant. (A deadline around it would not do: a cancelled SQLite statement
        still waits out its busy timeout, 30 s, on its thread.)"""
        sqlite = self._url.drivername == _SQLITE_DRIVER
        milliseconds = max(1, int(timeout * 1000))
        async with self._engine.connect() as connection:
            if sqlite:
                await connection.exec_driver_sql(f"PRAGMA busy_timeout = {milliseconds}")
                await connection.commit()  # ends the transaction the statement began
            try:
                async with connection.begin():
                    if not sqlite:
                        await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
                        await connection.exec_driver_sql(
                            f"SET LOCAL statement_timeout = {milliseconds}"
                        )
                    await connection.execute(sa.delete(_health).where(_health.c.name == "write"))
                    await connection.execute(sa.insert(_health).values(name="write", at=float(now)))
            finally:
                if sqlite:  # the pooled connection's own wait again
                    busy = int(SQLITE_BUSY_SECONDS * 1000)
                    await connection.exec_driver_sql(f"PRAGMA busy_timeout = {busy}")
                    await connection.commit()

    async def count(self) -> int:
        """How many conversations are stored (expired ones `expire` has not deleted included)."""
        async with self._engine.connect() as connection:
            total = await connection.scalar(sa.select(sa.func.count()).select_from(_conversations))
        return int(total or 0)

    async def aclose(self) -> None:
        """Close every connection (dispose the engine); the store is not used after."""
        await self._engine.dispose()


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    """Every new SQLite connection waits for other processes' locks instead of failing (the
    journal mode, WAL, is the file's: `start` sets it)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SECONDS * 1000)}")
        # In WAL mode NORMAL cannot corrupt the file; a power cut may lose the last commits.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()
