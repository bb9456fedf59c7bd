"""`ParlantServer` itself: clear errors when the server cannot start, nothing left running."""

from __future__ import annotations

import os
import socket

import pytest

from supervisor.testing import ParlantServer, ParlantServerError
from tests.helpers import require_parlant


def test_a_port_already_taken_is_refused_before_anything_starts() -> None:
    require_parlant()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ParlantServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            ParlantServer(port=port)


def test_a_reply_function_that_does_not_import_fails_at_start_not_at_the_first_turn() -> None:
    require_parlant()
    with pytest.raises(ParlantServerError, match="no_such_module"):
        ParlantServer(reply="no_such_module:answer", startup_timeout=120)


def test_an_agent_name_the_command_line_cannot_carry_is_refused_before_anything_starts() -> None:
    require_parlant()
    with pytest.raises(ValueError, match="a=b"):
        ParlantServer(agents={"a=b": "ambiguous"})


def test_stop_ends_the_process_and_removes_its_files() -> None:
    require_parlant()
    server = ParlantServer()
    pid, home = server.pid, server.log_path.parent
    assert pid is not None

    server.stop()
    server.stop()  # idempotent

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not home.exists()
    assert server.pid is None
