"""The command line: `python -m supervisor serve | demo` (installed as `parlant-supervisor`)."""

from __future__ import annotations

import logging
from typing import Annotated

import structlog
import typer
import uvicorn
from rich.console import Console

from supervisor._config import SupervisorConfig
from supervisor._demo import run_demo
from supervisor.backend import BackendSettings, create_app

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Keep conversations with Parlant agents alive and correct.",
)


@app.callback()
def _root() -> None:
    """Keep conversations with Parlant agents alive and correct."""


_PARLANT_URL_HELP = "A Parlant server (default: $PARLANT_URL, else the embedded emulator)."


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="SUPERVISOR_HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="SUPERVISOR_PORT", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    parlant_url: Annotated[
        str | None, typer.Option(envvar="PARLANT_URL", help=_PARLANT_URL_HELP)
    ] = None,
    ask_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a chat request waits for its reply (then 504).")
    ] = 60.0,
    drain_timeout: Annotated[
        int, typer.Option(min=0, help="Seconds SIGINT/SIGTERM lets requests in flight finish.")
    ] = 10,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Run the reference backend: POST /api/chat, /api/chat/stream, /metrics, /healthz, /readyz."""
    _configure_logging(verbose)
    where = parlant_url or "the embedded emulator (no Parlant server needed)"
    Console(stderr=True).print(f"[bold]parlant-supervisor[/bold] backend; Parlant: {where}")
    settings = BackendSettings(
        parlant_url=parlant_url, ask_timeout=ask_timeout, supervisor=SupervisorConfig()
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        timeout_graceful_shutdown=drain_timeout,
        log_level="info",
    )


@app.command()
def demo(
    parlant_url: Annotated[
        str | None, typer.Option(envvar="PARLANT_URL", help=_PARLANT_URL_HELP)
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each reply may take.", min=1)] = 60.0,
    verbose: Annotated[bool, typer.Option(help="Show the supervisor's info logs.")] = False,
) -> None:
    """Start the backend on a free port and hold two conversations through its HTTP API."""
    _configure_logging(verbose)
    console = Console()
    if not run_demo(console, parlant_url or None, timeout):
        raise typer.Exit(1)
    console.print("[bold green]demo finished: every reply arrived, nothing left running[/]")


def _configure_logging(verbose: bool) -> None:
    """The CLI is an application, so it (not the library) decides what is logged."""
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def main() -> None:
    """Entry point of the `parlant-supervisor` console script."""
    app()


if __name__ == "__main__":
    main()
