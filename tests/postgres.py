"""A PostgreSQL for the tests: locate the server CI started, or start a private one, and make a fresh database on it.

CI (``.ci/run``) starts a server with ``python -m tests.postgres start FOLDER``, which prints its URL, and exports that
URL as ``DIPLOTONE_TEST_POSTGRES_URL``; without the variable the PostgreSQL tests are skipped, saying how to run them.
Each test gets a database of its own (``fresh_database``), dropped afterwards, so tests never see each other's rows.

A test that must stop and restart its server (an outage), or run several services on one database, starts a
``PostgresServer`` of its own: it needs only the PostgreSQL binaries (Debian's ``postgresql`` package). As root the
server runs as the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

URL_VARIABLE = "DIPLOTONE_TEST_POSTGRES_URL"
SKIP_REASON = (
    f"no PostgreSQL server: set {URL_VARIABLE}=postgresql+psycopg://USER@HOST:PORT/DATABASE "
    "(`python -m tests.postgres start /tmp/diplotone-pg` starts one and prints its URL; .ci/run does this)"
)
BACKENDS = ("sqlite", "postgresql")  # a module runs its store tests on each with a ``backend`` fixture of these
SERVER_USER = "postgres"  # the superuser initdb creates, and the system user a root caller runs the server as


def server_url() -> str | None:
    """The URL of the test server named by ``DIPLOTONE_TEST_POSTGRES_URL``, if any."""
    return os.environ.get(URL_VARIABLE) or None


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return debian[-1].parent if debian else None


@contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new, empty database on ``server`` (a URL naming any database on it), dropped when the block ends."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    name = f"diplotone_test_{secrets.token_hex(6)}"
    # NullPool: a fresh connection for the drop, should the server have restarted in between.
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            # FORCE closes whatever connections a test left open (PostgreSQL 13 and later).
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class PostgresServer:
    """A private PostgreSQL server in ``folder`` on a free local port: ``start``, ``stop``, ``start`` again.

    >>> with PostgresServer.temporary() as server:  # doctest: +SKIP
    ...     Database.open(server.url)
    """

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or _free_port()
        found = binaries()
        if found is None:
            raise FileNotFoundError(
                "expected the PostgreSQL binaries (initdb, pg_ctl) on the PATH or under /usr/lib/postgresql/*/bin; "
                "found none: install Debian's postgresql package"
            )
        self.bin = found

    @classmethod
    @contextmanager
    def temporary(cls) -> Iterator[PostgresServer]:
        """A server in a new folder under the system's temporary directory, stopped and removed afterwards."""
        folder = Path(tempfile.mkdtemp(prefix="diplotone-pg-"))
        server = cls(folder)
        try:
            yield server.start()
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        """Create the cluster on first start (trust authentication, local connections only), then start it."""
        if not (self.data / "PG_VERSION").is_file():
            if os.geteuid() == 0:
                shutil.chown(self.folder, SERVER_USER)
            self._run("initdb", "-D", str(self.data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder}"
        log = self.folder / "server.log"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(log), "-o", options)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, then shut down cleanly; ``immediate``: like a crash)."""
        if (self.data / "postmaster.pid").is_file():
            self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.postgres start FOLDER`` prints the URL of a server started there; ``stop FOLDER`` stops it."""
    parser = argparse.ArgumentParser(prog="python -m tests.postgres", description=main.__doc__)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(args.folder.resolve(), args.port)
    if args.action == "stop":
        server.stop()
        return
    server.start()
    print(server.url)


if __name__ == "__main__":
    sys.exit(main())
