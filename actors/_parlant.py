"""Parlant's short requests (post a message, create a session, re-read history).

Posting a customer message, the one short request on every ask's path, goes through a lean
keep-alive pool of our own (`actors._wire.ConnectionPool`), and so do re-reads of the log
(history, and a streamed message re-read where `read_event` is refused, several a second),
and checkpoint saves; the rest through parlant-client.
Each has its own small pool on the I/O loop, `concurrency` wide; long-polls use neither (see
_poller). A semaphore as wide as the pool admits parlant-client's requests: httpcore matches
queued requests to connections in O(queued x connections) per step (a syscall per pooled
connection), so 1,000 requests queued in a pool of 64 took 25 s to create 1,000 sessions;
through a semaphore of 8 over 8 connections, 6 s (emulator in the same process; measured with
py-spy). Even so, its per-request work was two thirds of the I/O thread's time while 1,000
sessions asked at once, hence the lean pool for posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, final
from urllib.parse import quote

import httpx
import pydantic
import structlog
from parlant.client import AsyncParlantClient
from parlant.client.core.api_error import ApiError
from parlant.client.types import Event

from actors._backoff import Backoff
from actors._budget import Budget
from actors._errors import (
    ParlantMisconfigured,
    ParlantUnavailable,
    SupervisorError,
)
from actors._events import parse_events_soon
from actors._messages import FailureKind
from actors._posting import certainly_not_sent, post_exactly_once, refused_for_good
from actors._wire import (
    CONNECT_TIMEOUT,
    ConnectionPool,
    WireBodyTooLarge,
    WireConnectError,
    WireError,
    WireResponse,
    WireTarget,
    WireTimeout,
    WireTlsError,
    plain_http_answered,
    retry_after_seconds,
    socket_options,
)

__all__ = ["ParlantApi", "translate_error"]

_log = structlog.get_logger("parlant_supervisor")

T = TypeVar("T")

REQUEST_TIMEOUT: Final = 30.0
"""Seconds a short request may take in all (connecting, sending, the whole answer)."""
DEFAULT_CONCURRENCY: Final = 64
"""Short requests in flight at once. 8 made the post pool the limit of asks at scale: at 15,000
sessions asking at once, 124 asks/s with 8, 280 with 64 (`bench.phases --request-concurrency`);
at 1,000, 414/466 with 8, 534/739 with 64. As many pooled keep-alive connections, at most."""
DEFAULT_RETRY: Final = Backoff(base=0.2, cap=2.0)
_SETTLE_READ: Final = 10.0
"""Seconds the read that settles a post at its ask's deadline may take."""
POST_GRACE: Final = 2.0
"""Seconds after a post's request was cut before a read of the log can prove it absent."""


def translate_error(error: Exception, base_url: str, session_id: str | None) -> SupervisorError:
    """Our error for a failed short request: what happened, to which session, what to do."""
    where = f"session {session_id}" if session_id else "Parlant"
    if isinstance(error, SupervisorError):
        return error
    if isinstance(error, ApiError):
        status = error.status_code
        kind = FailureKind.of_status(status)
        if kind is FailureKind.NOT_FOUND:
            message = (
                f"{where}: Parlant answered 404 ({error.body}); it was deleted or never existed"
            )
        elif kind is FailureKind.FORBIDDEN:
            message = f"{where}: Parlant refused the request ({status}); check the credentials"
        elif kind is FailureKind.REJECTED:
            message = f"{where}: Parlant rejected the request as invalid: {error.body}"
        elif kind is FailureKind.MISCONFIGURED:
            message = (
                f"{where}: {base_url} answered {status}, a redirect: it is not Parlant's API "
                "itself (redirects are not followed); point the supervisor at where it leads"
            )
        else:
            message = f"{where}: Parlant at {base_url} answered {status}; try again later"
        return kind.error(message, session_id=session_id)
    if isinstance(error, WireTlsError):
        return ParlantMisconfigured(f"{where}: {error}", session_id=session_id)
    if plain_http_answered(error):  # httpx's ConnectError around the handshake's SSLError
        return ParlantMisconfigured(
            f"{where}: TLS with {base_url} failed: it speaks plain HTTP there; use http:// (or "
            "the port that serves https)",
            session_id=session_id,
        )
    if isinstance(error, httpx.HTTPError | WireError):
        return ParlantUnavailable(
            f"{where}: could not reach Parlant at {base_url} ({type(error).__name__}: {error}); "
            "check that the server is up, then try again",
            session_id=session_id,
        )
    return ParlantUnavailable(
        f"{where}: unexpected answer from Parlant at {base_url} ({type(error).__name__}: {error})",
        session_id=session_id,
    )


@final
class ParlantApi:
    """The short calls. Coroutines: run them on the I/O loop (`IOLoop.submit`)."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        retries: int = 5,
        retry_backoff: Backoff = DEFAULT_RETRY,
        max_body: int = 0,
        request_timeout: float = REQUEST_TIMEOUT,
        post_grace: float = POST_GRACE,
        budget: Budget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout = request_timeout
        self._post_grace = post_grace
        self._budget = budget or Budget(None, time.monotonic)
        self._checkpoints_refused = False
        self._saves: set[asyncio.Task[Any]] = set()  # checkpoint writes in flight (on the loop)
        self._concurrency = concurrency
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._rng = rng or random.Random()
        self._headers = dict(headers or {})
        self._max_body = max_body
        self._http: httpx.AsyncClient | None = None
        self._client: AsyncParlantClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pool: ConnectionPool | None = None

    async def _call(
        self,
        what: str,
        request: Callable[[AsyncParlantClient], Awaitable[T]],
        *,
        operation: str = "other",
        timeout: float | None = None,
        session_id: str | None = None,
        idempotent: bool = False,
    ) -> T:
        """A parlant-client request (`what` names it), once one of its pool's slots is free,
        retried as `_retrying` says, all of it within `timeout` seconds (at most, and by
        default, `request_timeout`): given an httpx client, parlant-client sends
        `timeout=None` on every request, so nothing else bounds it."""
        limit = self.request_timeout if timeout is None else min(timeout, self.request_timeout)

        async def attempt() -> T:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self._concurrency)
            async with _deadline_paused():  # waiting for our own limits is not Parlant's time
                await self._budget.take(operation)
                await self._slots.acquire()
            try:
                return await request(self._parlant())
            except ApiError as error:
                if error.status_code == 429:
                    self._budget.refused(operation, None)
                raise
            finally:
                self._slots.release()

        work = self._retrying(attempt, idempotent=idempotent)
        return await self._within(limit, what, session_id, work)

    async def _within(
        self, limit: float, what: str, session_id: str | None, work: Awaitable[T]
    ) -> T:
        """`work`, retries and all, within `limit` seconds, else `ParlantUnavailable` naming
        `what` (a call documented as bounded by `request_timeout` is bounded by it). Time spent
        waiting for the request budget or a free slot does not count (`_deadline_paused`):
        nothing was sent then, and Parlant is not the one slow."""
        try:
            async with asyncio.timeout(limit) as deadline:
                token = _deadline.set(deadline)
                try:
                    return await work
                finally:
                    _deadline.reset(token)
        except TimeoutError:
            where = f"session {session_id}" if session_id else "Parlant"
            raise ParlantUnavailable(
                f"{where}: Parlant at {self.base_url} did not answer {what} within "
                f"{limit:g} s; check that the server is up, then try again",
                session_id=session_id,
            ) from None

    async def _retrying(
        self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool = False
    ) -> T:
        """Run `attempt`; one that certainly had no effect (`certainly_not_sent`) is tried
        again, up to `retries` times, after a jittered delay; an `idempotent` one whose
        connection broke (a pooled connection a middlebox forgot) once more at once."""
        attempts = 0
        stale_retried = False
        while True:
            try:
                return await attempt()
            except Exception as error:
                if idempotent and not stale_retried and _broken_connection(error):
                    stale_retried = True
                    continue
                if (
                    attempts >= self._retries
                    or not certainly_not_sent(error)
                    or refused_for_good(error)  # a plain-HTTP server behind an https URL
                ):
                    raise
            await asyncio.sleep(self._retry_backoff.delay(attempts, self._rng))
            attempts += 1

    def _parlant(self) -> AsyncParlantClient:
        if self._client is None:
            # its pooled connections get the lean client's keepalive: a flow a middlebox forgot
            # failed the next request on it (every create_session after a silent flow loss)
            transport = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=self._concurrency),
                socket_options=list(socket_options()),
                trust_env=False,
            )
            self._http = httpx.AsyncClient(
                headers=self._headers,
                timeout=self.request_timeout,
                transport=transport,
                trust_env=False,
            )
            self._client = AsyncParlantClient(base_url=self.base_url, httpx_client=self._http)
        return self._client

    async def post_customer_message(
        self,
        session_id: str,
        text: str,
        key: str,
        *,
        since: int,
        wanted: Callable[[], bool],
        maybe_sent: bool = False,
        until_up: Callable[[], Awaitable[None]] | None = None,
        retried: Callable[[str], None] = lambda reason: None,
        unreachable: Callable[[], None] = lambda: None,
        patience: float | None = None,
        due: Callable[[], bool] = lambda: False,
    ) -> int:
        """Post `text` as the customer's message, exactly once (`post_exactly_once`: `key`
        goes in its metadata), no request of it outliving `patience` seconds from now (None:
        no bound), settled once `due()` (its ask's deadline on the supervisor's clock);
        returns the event's offset."""
        deadline = None if patience is None else time.monotonic() + patience
        return await post_exactly_once(
            self,
            session_id,
            text,
            key,
            since=since,
            wanted=wanted,
            maybe_sent=maybe_sent,
            grace=self._post_grace,
            backoff=self._retry_backoff,
            rng=self._rng,
            now=time.monotonic,
            until_up=until_up or _up,
            retried=retried,
            unreachable=unreachable,
            deadline=deadline,
            due=due,
            settle_read=min(self.request_timeout, _SETTLE_READ),
        )

    async def send_customer_message(self, session_id: str, body: bytes) -> int:
        """One request that posts a customer message (`body`, JSON); the event's offset."""
        path = f"/sessions/{quote(session_id, safe='')}/events"
        event = await self._send(b"POST", path, body, "create_customer_event")
        if not isinstance(event, dict) or not isinstance(event.get("offset"), int):
            raise ParlantUnavailable(
                f"session {session_id}: Parlant at {self.base_url} answered the message's post "
                f"with no event offset ({str(event)[:200]})",
                session_id=session_id,
            )
        offset: int = event["offset"]
        return offset

    async def _send(self, method: bytes, path: str, body: bytes, operation: str) -> Any:
        """Send a JSON body through the lean pool; the answer's JSON, or `ApiError` (as
        parlant-client raises it) for a status other than 2xx."""
        return _json(await self._request(method, path, operation, body))

    async def _request(
        self, method: bytes, path: str, operation: str, body: bytes | None = None
    ) -> WireResponse:
        """One request of `operation` through the lean pool, once the budget lets it go;
        `ApiError` (as parlant-client raises it) for a status other than 2xx."""
        async with _deadline_paused():
            await self._budget.take(operation)
        if self._pool is None:
            target = WireTarget.of(self.base_url, self._headers, self._max_body)
            self._pool = ConnectionPool(target, self._concurrency)
        response = await self._pool.request(
            method,
            path,
            json_body=body,
            timeout=self.request_timeout,
            connect_timeout=min(CONNECT_TIMEOUT, self.request_timeout),
        )
        if response.status == 429:  # every request of its kind waits, not only this one
            self._budget.refused(operation, retry_after_seconds(response.headers))
        if not 200 <= response.status < 300:
            raise ApiError(status_code=response.status, body=_json(response))
        return response

    async def read_events(self, session_id: str, min_offset: int) -> list[Event]:
        """Every event at or after `min_offset`, without waiting (retried as `_retrying`: a
        read is idempotent), all within `request_timeout`."""
        work = self._retrying(lambda: self._read_log(session_id, min_offset), idempotent=True)
        return await self._within(self.request_timeout, "list_events", session_id, work)

    async def read_customer_messages(self, session_id: str, min_offset: int) -> list[Event]:
        """The customer messages at or after `min_offset`, without waiting, in one request
        (Parlant filters them: a post's key is looked for in few events, however long the
        session)."""
        return await self._read_log(session_id, min_offset, "&source=customer&kinds=message")

    async def _read_log(self, session_id: str, min_offset: int, filters: str = "") -> list[Event]:
        path = f"/sessions/{quote(session_id, safe='')}/events?min_offset={min_offset}"
        query = f"{path}&wait_for_data=0{filters}"
        response = await self._request(b"GET", query, "list_events")
        try:
            return await parse_events_soon(response.content)
        except pydantic.ValidationError as error:
            raise ParlantUnavailable(
                f"session {session_id}: Parlant at {self.base_url} answered with a body that is "
                f"not what it should be ({error.error_count()} errors)",
                session_id=session_id,
            ) from None

    async def create_customer(self, name: str) -> str:
        """Create a customer, exactly once; returns its id.

        Its id is ours (Parlant takes one given at creation, and refuses a second customer with
        it), so a creation whose fate is unknown (a reset, a timeout, a 5xx: Parlant answers a
        duplicate id with 500) is settled by reading the customer back: there, it was created;
        404, it is created again with the same id. Up to `retries` attempts, as `_retrying`,
        all of them within `request_timeout` (they took 36.5 s with a 3-s timeout against a
        server that never answered).
        """
        return await self._within(
            self.request_timeout, "create_customer", None, self._creating_customer(name)
        )

    async def _creating_customer(self, name: str) -> str:
        customer_id = uuid.uuid4().hex
        attempts = 0
        while True:
            try:
                customer = await self._call(
                    "create_customer",
                    lambda parlant: parlant.customers.create(name=name, id=customer_id),
                )
                return customer.id
            except Exception as error:
                if refused_for_good(error) or attempts >= self._retries:
                    raise
                if not certainly_not_sent(error) and await self._customer_exists(customer_id):
                    return customer_id  # else sent again: the same id cannot make a second
            await asyncio.sleep(self._retry_backoff.delay(attempts, self._rng))
            attempts += 1

    async def _customer_exists(self, customer_id: str) -> bool:
        """Whether Parlant has the customer (False also when it cannot tell now)."""
        try:
            await self._call(
                "read_customer",
                lambda parlant: parlant.customers.retrieve(customer_id),
                idempotent=True,
            )
        except Exception:  # 404, or no answer: either way, creating it again is safe
            return False
        return True

    async def create_session(
        self, agent_id: str, customer_id: str | None, title: str | None
    ) -> str:
        """Create a session (no greeting); returns its id."""
        session = await self._call(
            "create_session",
            lambda parlant: parlant.sessions.create(
                agent_id=agent_id, customer_id=customer_id, title=title, allow_greeting=False
            ),
            operation="create_guest_session" if customer_id is None else "other",
        )
        return session.id

    async def read_checkpoint(self, session_id: str) -> int | None:
        """The checkpoint stored as the session's `consumption_offsets.client`, if any.

        Parlant calls it a consumption offset; we store the first offset still needed there.
        """
        session = await self._call(
            "read_session",
            lambda parlant: parlant.sessions.retrieve(session_id),
            operation="read_session",
            session_id=session_id,
            idempotent=True,
        )
        return session.consumption_offsets.client

    async def save_checkpoint(self, session_id: str, offset: int) -> None:
        """Store `offset` as the session's `consumption_offsets.client`.

        Through the lean pool, like posts: with durable checkpoints every active session writes
        one every `checkpoint_interval`, and every session one more when it stops (10,000 at
        a shard's stop took over a minute through parlant-client's pool).
        """
        if self._checkpoints_refused:
            return
        body = json.dumps({"consumption_offsets": {"client": offset}}).encode()
        path = f"/sessions/{quote(session_id, safe='')}"
        task = asyncio.current_task()
        assert task is not None
        self._saves.add(task)  # `aclose` lets it finish: a session's last one is at its stop
        try:
            await self._retrying(lambda: self._send(b"PATCH", path, body, "other"))
        except ApiError as error:
            if error.status_code != 403:
                raise
            # Parlant's production policy forbids PATCH: sessions go on without durable
            # checkpoints (they resume from memory, or from the start); said once
            self._checkpoints_refused = True
            _log.warning("supervisor.checkpoints_refused", url=self.base_url)
        finally:
            self._saves.discard(task)

    async def delete_session(self, session_id: str) -> None:
        """Delete a session on the server (its open polls get 404)."""
        await self._call(
            "delete_session",
            lambda parlant: parlant.sessions.delete(session_id),
            session_id=session_id,
        )

    async def ensure_agents(self, names: Sequence[str]) -> dict[str, str]:
        """Each named agent's id, found by name, else created."""
        agents = await self._call(
            "list_agents", lambda parlant: parlant.agents.list(), idempotent=True
        )
        ids = {agent.name: agent.id for agent in agents}
        for name in names:
            if name not in ids:
                ids[name] = await self._create_agent(name)
        return {name: ids[name] for name in names}

    async def _create_agent(self, name: str) -> str:
        agent = await self._call("create_agent", lambda parlant: parlant.agents.create(name=name))
        return agent.id

    async def ping(self, timeout: float | None = None) -> None:
        """Raise unless the server answers (lists agents) within `timeout` seconds (default
        `request_timeout`). A 403 is an answer: Parlant's production policy forbids listing
        agents to every client (401 is not: the credentials are refused)."""
        try:
            await self._call(
                "list_agents",
                lambda parlant: parlant.agents.list(),
                timeout=timeout,
                idempotent=True,
            )
        except ApiError as error:
            if error.status_code != 403:
                raise

    async def aclose(self) -> None:
        """Let the checkpoint writes in flight finish (their failures are theirs), then close
        the pools."""
        await asyncio.gather(*self._saves, return_exceptions=True)
        if self._pool is not None:
            self._pool.close()
        if self._http is not None:
            await self._http.aclose()


_deadline: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "_deadline", default=None
)
"""The deadline `_within` runs the current call under (a task's own: each call is one)."""


@contextlib.asynccontextmanager
async def _deadline_paused() -> AsyncIterator[None]:
    """The current call's deadline stands still while the body waits (for the budget, a
    slot): it moves on by the time waited."""
    deadline = _deadline.get()
    when = deadline.when() if deadline is not None else None
    if deadline is None or when is None or deadline.expired():
        yield
        return
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline.reschedule(None)
    try:
        yield
    finally:
        deadline.reschedule(when + (loop.time() - started))


def _broken_connection(error: Exception) -> bool:
    """A request that failed on its connection, not on Parlant's answer nor its time: a
    reused connection the peer (or a middlebox) no longer had (closed, reset). Not a timeout
    (sent again at once, it would wait as long again), a body too large, nor TLS."""
    refused = WireConnectError | WireTlsError | WireBodyTooLarge | WireTimeout
    return isinstance(
        error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError | WireError
    ) and not isinstance(error, refused)


async def _up() -> None:
    """Without an upstream to ask: taken to be up."""


def _json(response: WireResponse) -> Any:
    """A response's JSON body (its text, when it is not JSON)."""
    try:
        return json.loads(response.content)
    except ValueError:
        return response.content.decode(errors="replace")
