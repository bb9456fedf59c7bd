"""A throwaway PostgreSQL server for tests: Debian's initdb/pg_ctl on 127.0.0.1, a free port.

PostgreSQL refuses to run as root (as the tests do here and in CI), so under root the server
runs as the `postgres` user (Debian's package makes it; `nobody` otherwise), in a temporary
directory that user owns. Without PostgreSQL installed the tests needing it skip, except under
CI=true, where they fail: .ci/postgresql.sh installs it there.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = (
    "PostgreSQL's initdb and pg_ctl are not installed (on PATH or under "
    "/usr/lib/postgresql/*/bin): `bash .ci/postgresql.sh` as root installs Debian's postgresql"
)


def find_binaries() -> tuple[Path, Path] | None:
    """initdb and pg_ctl: from PATH, else from the newest /usr/lib/postgresql/<version>/bin."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb), Path(pg_ctl)
    directories = sorted(
        (Path(directory) for directory in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda directory: _version(directory.parent.name),
        reverse=True,
    )
    for directory in directories:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory / "initdb", directory / "pg_ctl"
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def require_binaries() -> tuple[Path, Path]:
    """initdb and pg_ctl, or skip (fail under CI=true: CI installs PostgreSQL)."""
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return binaries


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def postgresql_server() -> Iterator[str]:
    """Run a fresh PostgreSQL cluster; yields its base URL for SQLAlchemy,
    `postgresql+asyncpg://postgres@127.0.0.1:<port>` (trust authentication: append `/<db>`).
    The server is stopped and its directory removed on exit."""
    initdb, pg_ctl = require_binaries()
    account: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                account = pwd.getpwnam(name)
                break
        if account is None:
            pytest.fail("running as root, and there is no postgres (nor nobody) user to run as")
    # Not under pytest's tmp_path: its parents are root's, mode 0700, closed to `postgres`.
    root = Path(tempfile.mkdtemp(prefix="pytest-postgresql-"))
    env = dict(os.environ, LC_ALL="C", TZ="UTC")
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
        env["HOME"] = str(root)
    data, log = root / "data", root / "server.log"

    def run(*command: str | Path) -> None:
        done = subprocess.run(
            [str(part) for part in command],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            # Under root: the server's own account, without root's groups.
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            extra_groups=None if account is None else [],
        )
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(map(str, command))} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{server_log}"
            )

    port = _free_port()
    try:
        run(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
        run(pg_ctl, "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start")
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}"
        finally:
            run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
