"""The process `ParlantServer` starts: a real Parlant server with the deterministic NLP service.

    python -m supervisor.testing._parlant_main --port 8800 --tool-port 8818 \
        --policy null --reply supervisor.testing._parlant_server:echo_reply \
        --agent "Echo=Answers with what it was told" [--stream Echo] [--chunk-delay 0.02] \
        [--authorization production] [--parlant-module]

Transient stores: a restart forgets every session and customer (the agents are created again at
each start; docs/PARLANT.md, "Running a real server offline"). With `--parlant-module` it
loads `supervisor.parlant_module` (waiting requests woken by the session's writes) through the
SDK's `configure_container`. `GET /_harness/listener` tells which `SessionListener` the server
runs (this harness's route, not Parlant's). Exits 0 on SIGTERM or SIGINT once Parlant has shut
down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import threading
import time
from collections.abc import Sequence

import parlant.sdk as p
from fastapi import FastAPI
from lagom import Container

from supervisor.testing._parlant_nlp import service_factory
from supervisor.testing._parlant_server import ReplyFunction


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m supervisor.testing._parlant_main")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tool-port", type=int, required=True)
    parser.add_argument("--policy", choices=("null", "stock"), default="null")
    parser.add_argument("--reply", default="supervisor.testing._parlant_server:echo_reply")
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=DESCRIPTION")
    parser.add_argument("--stream", action="append", default=[], metavar="NAME")
    parser.add_argument("--chunk-delay", type=float, default=0.02)
    parser.add_argument(
        "--authorization", choices=("development", "production"), default="development"
    )
    parser.add_argument("--parlant-module", action="store_true")
    args = parser.parse_args(argv)
    agents = [_agent(spec) for spec in args.agent]
    # Parlant's server stops on SIGINT (asyncio.run cancels it); SIGTERM is what process
    # managers and `ParlantServer.stop()` send, so it means the same here. A process started
    # in the background by a non-interactive shell inherits SIGINT *ignored*, and then Python
    # installs no handler for it at all: restore the default first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):  # how Parlant's server ends: a clean exit
        asyncio.run(_serve(args, agents))


async def _serve(args: argparse.Namespace, agents: list[tuple[str, str]]) -> None:
    async def configure(container: Container) -> Container:
        if args.policy == "null":  # no deliberate 2-3 s delays, no preamble
            container[p.PerceivedPerformancePolicyProvider] = p.PerceivedPerformancePolicyProvider(
                p.NullPerceivedPerformancePolicy()
            )
        if args.authorization == "production":  # what PARLANT_ENV=production installs
            # lagom keys services by their abstract type, which mypy's type-abstract refuses
            container[p.AuthorizationPolicy] = p.ProductionAuthorizationPolicy()  # type: ignore[type-abstract]
        if args.parlant_module:
            from supervisor import parlant_module

            container = await parlant_module.configure_container(container)
        return container

    built: list[Container] = []

    async def initialize(container: Container) -> None:
        built.append(container)
        if args.parlant_module:
            from supervisor import parlant_module

            await parlant_module.initialize_container(container)

    async def harness_routes(app: FastAPI) -> None:
        @app.get("/_harness/listener")
        async def listener() -> dict[str, object]:
            from parlant.core.sessions import SessionListener

            running = built[0][SessionListener]  # type: ignore[type-abstract]
            return {
                "listener": type(running).__name__,
                "observed": bool(getattr(running, "observed", False)),
                "waiting": getattr(running, "waiting", None),
            }

    streaming = set(args.stream)
    server = p.Server(
        host=args.host,
        port=args.port,
        tool_service_port=args.tool_port,
        nlp_service=service_factory(_reply_function(args.reply), chunk_delay=args.chunk_delay),
        session_store="transient",
        customer_store="transient",
        configure_container=configure,
        initialize_container=initialize,
        configure_api=harness_routes,
        log_level=p.LogLevel.WARNING,
    )
    async with server:
        for name, description in agents:
            mode = p.OutputMode.STREAM if name in streaming else p.OutputMode.BLOCK
            # the name as id: the production policy forbids listing agents, so clients that
            # cannot look an agent up by name can still name it
            await server.create_agent(name=name, description=description, output_mode=mode, id=name)


def _end_with_parent(parent: int) -> None:
    """Stop when the process that started this one is gone (killed, crashed): a test run
    that dies must not leave a Parlant server behind."""
    while os.getppid() == parent:
        time.sleep(0.5)
    signal.raise_signal(signal.SIGINT)


def _agent(spec: str) -> tuple[str, str]:
    name, _, description = spec.partition("=")
    if not name or not description:
        raise SystemExit(f"--agent wants NAME=DESCRIPTION, got {spec!r}")
    return name, description


def _reply_function(path: str) -> ReplyFunction:
    module, _, attribute = path.partition(":")
    function: ReplyFunction = getattr(importlib.import_module(module), attribute)
    return function


if __name__ == "__main__":
    main()
