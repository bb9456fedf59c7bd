"""The command line: `python -m supervisor serve | demo | drill` (installed as
`parlant-supervisor`)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from supervisor._extras import install_command, missing_modules

if _missing := missing_modules(
    "typer", "rich", "fastapi", "uvicorn", "sqlalchemy", "sse_starlette"
):
    sys.exit(
        f"parlant-supervisor's command line needs the [backend] extra "
        f"({', '.join(_missing)} not installed): {install_command('backend')}"
    )

import structlog
import typer
from rich.console import Console

from actors import RequestBudget
from supervisor._config import SupervisorConfig
from supervisor._demo import run_demo
from supervisor._drill import SCENARIOS, DrillOptions, scenarios_named
from supervisor._drill_cli import run_drills
from supervisor.backend import BackendSettings, HttpLimits, Intent, StoreUnusable
from supervisor.backend import serve as serve_backend
from supervisor.backend._embedded import local_parlant
from supervisor.testing import ParlantServerError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,  # help texts name extras in brackets: `[parlant-server]`, not markup
    no_args_is_help=True,
    help="Keep conversations with Parlant agents alive and correct.",
)


@app.callback()
def _root() -> None:
    """Keep conversations with Parlant agents alive and correct."""


_PARLANT_HELP = (
    "Which Parlant: 'embedded' (the in-process emulator, no server needed), 'local' (a real "
    "Parlant server started here and stopped at exit; needs the [parlant-server] extra) or a "
    "server's http(s) URL."
)


def _parlant_choice(value: str) -> str:
    if value in ("embedded", "local") or value.startswith(("http://", "https://")):
        return value
    raise typer.BadParameter(f"expected embedded, local or an http(s) URL, got {value!r}")


ParlantOption = Annotated[
    str,
    typer.Option("--parlant", envvar="PARLANT_URL", help=_PARLANT_HELP, callback=_parlant_choice),
]
ParlantModuleOption = Annotated[
    bool,
    typer.Option(
        help="With --parlant local: load supervisor.parlant_module into that server, so that "
        "requests waiting on a session are woken by its writes instead of re-reading Parlant's "
        "store every 0.25 s."
    ),
]


class _Signalled(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _cleanup_before_dying_by(signum: signal.Signals) -> Iterator[None]:
    """Let `with` blocks inside end (a local Parlant server stopped) when `signum` arrives, then
    die by it as before. uvicorn re-raises the signal that stopped it once it has shut down,
    which, left at its default action, would end the process before any cleanup."""

    def unwind(received: int, frame: object) -> None:
        raise _Signalled(received)

    previous = signal.signal(signum, unwind)
    try:
        yield
    except _Signalled as signalled:
        signal.signal(signalled.signum, signal.SIG_DFL)
        signal.raise_signal(signalled.signum)
    finally:
        signal.signal(signum, previous)


@contextlib.contextmanager
def _parlant(choice: str, console: Console, *, parlant_module: bool) -> Iterator[str | None]:
    """The Parlant URL for `choice` (None: the embedded emulator), a local server running
    until the block ends (with `supervisor.parlant_module` if `parlant_module`)."""
    if choice != "local":
        yield None if choice == "embedded" else choice
        return
    with console.status("Starting a local Parlant server (a few seconds)..."):
        try:
            server = local_parlant(parlant_module=parlant_module)
        except ParlantServerError as error:
            console.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(1) from None
    with server:
        waiting = "woken by writes (supervisor.parlant_module)" if parlant_module else "polled"
        console.print(
            f"Parlant: a local real server at {server.url} (pid {server.pid}); waiting {waiting}"
        )
        yield server.url


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="SUPERVISOR_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="SUPERVISOR_PORT", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    parlant: ParlantOption = "embedded",
    parlant_module: ParlantModuleOption = True,
    ask_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a chat request waits for its reply (then 504).")
    ] = 60.0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds SIGINT/SIGTERM lets asks and streams in flight finish (new requests "
            "get 503 at once; what is still running then gets 503 or an error event).",
        ),
    ] = 10.0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="SUPERVISOR_WORKERS",
            help="Worker processes on one port, any of them serving any conversation (they "
            "share the conversation store; needs --parlant local or a URL).",
        ),
    ] = 1,
    trusted_proxy: Annotated[
        str,
        typer.Option(
            envvar="SUPERVISOR_TRUSTED_PROXIES",
            help="Comma-separated proxy addresses or networks whose X-Forwarded-For names the "
            "client (per-client quotas); from others the header is ignored. Empty: none.",
        ),
    ] = "",
    new_conversations_per_minute: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="SUPERVISOR_NEW_CONVERSATIONS_PER_MINUTE",
            help="New conversations one client address may start a minute (429 past it; "
            "0: no limit).",
        ),
    ] = 30,
    history_reads_per_minute: Annotated[
        int,
        typer.Option(
            min=0,
            envvar="SUPERVISOR_HISTORY_READS_PER_MINUTE",
            help="GET .../messages calls one conversation may make a minute, one client "
            "address four times that (429 past either; 0: no limit).",
        ),
    ] = 30,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="SUPERVISOR_CORS_ORIGINS",
            help="A browser origin (https://app.example.com, http://localhost:5173) whose "
            "pages may call the API and read its streams; repeat it for several (the "
            "variable: separated by spaces). None by default: same-origin pages need none.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="PARLANT_SUPERVISOR_DATA_DIR",
            help="Where the conversations are kept (SQLite) when no --store-url is given "
            "[default: $XDG_DATA_HOME/parlant-supervisor].",
            show_default=False,
        ),
    ] = None,
    store_url: Annotated[
        str | None,
        typer.Option(
            envvar="SUPERVISOR_STORE_URL",
            help="The conversation store as an SQLAlchemy URL, e.g. "
            "postgresql+asyncpg://user:password@host/db (the [postgresql] extra) for backends "
            "on several machines.",
        ),
    ] = None,
    conversation_ttl: Annotated[
        float,
        typer.Option(min=1, help="Seconds without a message after which a conversation expires."),
    ] = 86_400.0,
    shards: Annotated[
        int,
        typer.Option(
            min=0,
            help="0: one supervisor in this process. N: sessions sharded over N Ray actors "
            "(needs the [ray] extra).",
        ),
    ] = 0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="The Ray cluster for --shards ('auto', 'ray://head:10001'); none starts a "
            "local Ray instance.",
        ),
    ] = None,
    request_budget: Annotated[
        str | None,
        typer.Option(
            envvar="SUPERVISOR_REQUEST_BUDGET",
            help="Requests a minute to stay within, per Parlant operation: 'parlant-production' "
            "(Parlant's production policy, per client IP) or OPERATION=N,... (list_events, "
            "create_customer_event, read_session, create_guest_session, other). None: unshaped.",
        ),
    ] = None,
    agent_id: Annotated[
        list[str] | None,
        typer.Option(
            help="INTENT=ID: the Parlant agent of an intent (research_paper, medical_welfare), "
            "for a Parlant that forbids listing agents (its production policy). Repeatable; "
            "intents left out are found by name.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Run the reference backend: POST /api/chat, /api/chat/stream, /metrics, /healthz, /readyz."""
    _configure_logging(verbose)
    console = Console(stderr=True, soft_wrap=True)  # lines whole, also into a file or pipe
    if workers > 1 and parlant == "embedded":
        raise typer.BadParameter(
            "several workers need one Parlant server they all reach: --parlant local or a URL "
            "(each worker would embed an emulator of its own)",
            param_hint="--workers",
        )
    try:  # said now, not as a traceback from the lifespan
        BackendSettings(cors_origins=tuple(cors_origin or ()))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--cors-origin") from None
    if shards and missing_modules("ray"):  # said now, not as a traceback from the lifespan
        raise typer.BadParameter(
            f"sessions sharded over Ray need the [ray] extra: {install_command('ray')}",
            param_hint="--shards",
        )
    with (
        _cleanup_before_dying_by(signal.SIGTERM),
        _parlant(parlant, console, parlant_module=parlant_module) as parlant_url,
    ):
        where = parlant_url or "the embedded emulator (no Parlant server needed)"
        console.print(f"[bold]parlant-supervisor[/bold] backend; Parlant: {where}")
        shown = "localhost" if host in ("0.0.0.0", "::", "") else host
        console.print(f"chat page: http://{f'[{shown}]' if ':' in shown else shown}:{port}/")
        if shards:
            console.print(f"sessions sharded over {shards} Ray actors")
        settings = BackendSettings(
            parlant_url=parlant_url,
            ask_timeout=ask_timeout,
            supervisor=SupervisorConfig(request_budget=_budget(request_budget)),
            agent_ids=_agent_ids(agent_id or []),
            shards=shards,
            ray_address=ray_address,
            shard_log_level=logging.INFO if verbose else logging.WARNING,
            limits=HttpLimits(trusted_proxies=_proxies(trusted_proxy)),
            new_conversations_per_minute=new_conversations_per_minute,
            history_reads_per_minute=history_reads_per_minute,
            cors_origins=tuple(cors_origin or ()),
            data_dir=data_dir,
            store_url=store_url,
            conversation_ttl=conversation_ttl,
        )
        try:
            serve_backend(
                settings,
                host=host,
                port=port,
                workers=workers,
                drain_timeout=drain_timeout,
                log_level=logging.INFO if verbose else logging.WARNING,
            )
        except StoreUnusable as error:
            console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
            raise typer.Exit(1) from None


@app.command()
def demo(
    parlant: ParlantOption = "embedded",
    parlant_module: ParlantModuleOption = True,
    timeout: Annotated[float, typer.Option(help="Seconds each reply may take.", min=1)] = 60.0,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Start the backend on a free port and hold two conversations through its HTTP API."""
    _configure_logging(verbose)
    console = Console(soft_wrap=True)  # lines whole, also into a file or pipe
    with _parlant(parlant, console, parlant_module=parlant_module) as parlant_url:
        if not run_demo(console, parlant_url, timeout):
            raise typer.Exit(1)
    console.print("[bold green]demo finished: every reply arrived, nothing left running[/]")


@app.command()
def drill(
    scenario: Annotated[
        str, typer.Option(help="A scenario's name, or all. See the list with --list.")
    ] = "all",
    sessions: Annotated[int, typer.Option(min=1, help="Sessions per scenario.")] = 30,
    turns: Annotated[int, typer.Option(min=1, help="Asks per session.")] = 5,
    faults: Annotated[int, typer.Option(min=1, help="Faults each scenario aims at.")] = 120,
    seed: Annotated[int, typer.Option(help="Seeds every random choice.")] = 0,
    parlant: ParlantOption = "embedded",
    parlant_module: ParlantModuleOption = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    list_scenarios: Annotated[
        bool, typer.Option("--list", help="List the scenarios and exit.")
    ] = False,
) -> None:
    """Inject faults into live conversations and prove nothing is lost or duplicated."""
    console = Console(width=None if sys.stdout.isatty() else 140)
    if list_scenarios:
        for known in SCENARIOS:
            console.print(f"[bold]{known.name:<22}[/] {known.description}")
        return
    try:
        chosen = scenarios_named(scenario)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scenario") from None
    _configure_logging(verbose=False, quiet=True)
    # the proxy goes in front of a server
    with _parlant(parlant, console, parlant_module=parlant_module) as parlant_url:
        options = DrillOptions(
            sessions=sessions, turns=turns, faults=faults, seed=seed, parlant_url=parlant_url
        )
        passed = run_drills(console, chosen, options, json_path)
    if not passed:
        console.print("[bold red]drill failed: see the rows marked FAIL[/]")
        raise typer.Exit(1)
    console.print("[bold green]drill passed: nothing lost, duplicated or mis-attributed[/]")


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 8800,
    agent: Annotated[
        list[str] | None,
        typer.Option(help="An agent to serve, answering 'echo: <message>' (repeatable)."),
    ] = None,
) -> None:
    """Run the Parlant emulator, a Parlant-compatible server with scripted agents, until Ctrl-C:
    a server to try the library against without installing Parlant."""
    from supervisor.emulator import EmulatedAgent, EmulatorServer, ParlantEmulator, echo

    names = agent or ["Echo"]
    console = Console(soft_wrap=True)
    served = ParlantEmulator([EmulatedAgent(name, echo()) for name in names])
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with EmulatorServer(served, host=host, port=port) as server:
            console.print(f"Parlant emulator on {server.url} (Ctrl-C stops it)")
            for body in server.call(served.agents):
                console.print(f"agent {body['name']}: {body['id']}")
            stop.wait()
    except OSError as error:
        console.print(f"[bold red]error:[/] cannot listen on {host}:{port}: {error}")
        raise typer.Exit(1) from None
    console.print("emulator stopped")


def _budget(value: str | None) -> RequestBudget | None:
    """--request-budget: `parlant-production`, or `operation=requests,...` a minute."""
    if value is None:
        return None
    if value == "parlant-production":
        return RequestBudget.parlant_production()
    try:
        limits = {op.strip(): int(n) for op, _, n in (p.partition("=") for p in value.split(","))}
        return RequestBudget(limits)
    except ValueError as error:
        raise typer.BadParameter(
            f"expected parlant-production or OPERATION=N,..., got {value!r} ({error})",
            param_hint="--request-budget",
        ) from None


def _agent_ids(values: list[str]) -> dict[str, str]:
    """--agent-id INTENT=ID, repeated."""
    ids: dict[str, str] = {}
    for value in values:
        intent, _, agent = (part.strip() for part in value.partition("="))
        known = [i.value for i in Intent]
        if intent not in known or not agent:
            raise typer.BadParameter(
                f"expected INTENT=ID with INTENT one of {known}, got {value!r}",
                param_hint="--agent-id",
            )
        ids[intent] = agent
    return ids


def _proxies(value: str) -> tuple[str, ...]:
    """--trusted-proxy's addresses and networks, checked (a typo would silently trust nobody
    behind that proxy, and make all its clients one for the quota)."""
    proxies = tuple(p.strip() for p in value.split(",") if p.strip())
    for proxy in proxies:
        if proxy == "*":
            continue
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise typer.BadParameter(
                f"{proxy!r} is not an address or network", param_hint="--trusted-proxy"
            ) from None
    return proxies


def _configure_logging(verbose: bool, quiet: bool = False) -> None:
    """The CLI is an application, so it (not the library) decides what is logged."""
    level = logging.INFO if verbose else logging.CRITICAL if quiet else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    if quiet:  # a drill's injected faults make servers log by design: only the report counts
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        logging.getLogger("pykka").setLevel(logging.CRITICAL)


def main() -> None:
    """Entry point of the `parlant-supervisor` console script."""
    app()


if __name__ == "__main__":
    main()
