"""PostgreSQL and Redis servers owned by one fault test, so it may stop, kill and restart them.

The machine's own PostgreSQL and Redis serve every other test (and other test runs); a fault
test must never stop those. So each fault test starts its own: a PostgreSQL cluster made with
`initdb` in a temporary directory, and a `redis-server` that keeps nothing on disk, each on a
free port. Both are the machine's installed binaries, so the processes under test meet real
servers going away and coming back.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import missing_service
from tests.e2e.conftest import free_port

#: Seconds a server may take to start or stop.
SERVER_TIMEOUT = 60

#: The operating-system user that runs PostgreSQL when the tests run as root (initdb and the
#: server refuse to run as root).
PG_OS_USER = "postgres"


def _pg_bin() -> Path | None:
    """The directory of initdb and pg_ctl (REDESK_TEST_PG_BIN, Debian's layout, or PATH)."""
    configured = os.environ.get("REDESK_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication, database `redesk`)."""

    def __init__(self) -> None:
        binaries = _pg_bin()
        if binaries is None or not (binaries / "initdb").exists():
            missing_service("PostgreSQL binaries (initdb, pg_ctl)", "not found")
        assert binaries is not None
        self.bin = binaries
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: its parents are private to root, and the server runs
        # as the postgres user when the tests run as root.
        self.root = Path(tempfile.mkdtemp(prefix="redesk-faults-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.log = self.root / "postgres.log"
        self.port = free_port()
        if self.as_root:
            for path in (self.root, self.sockets):
                shutil.chown(path, PG_OS_USER, PG_OS_USER)

    @property
    def url(self) -> str:
        """The database the deployment uses."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/redesk"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", PG_OS_USER, "--", *command]
        done = subprocess.run(
            command, capture_output=True, timeout=SERVER_TIMEOUT, check=False, cwd=self.root
        )
        assert done.returncode == 0, (
            f"{' '.join(args[:2])} exited {done.returncode}: "
            f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            f"\n{self.log_text()}"
        )

    def log_text(self) -> str:
        """The server's log (for failure messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def create(self) -> PostgresServer:
        """initdb, start, and create the database `redesk`."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C",
        )
        self.start()
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        try:
            with admin.connect() as connection:
                connection.execute(text('CREATE DATABASE "redesk"'))
        finally:
            admin.dispose()
        return self

    def start(self) -> None:
        """Starts the server and waits until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(SERVER_TIMEOUT),
            "-o",
            options,
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stops the server: `immediate` ends every process at once, like a crash (the next
        start recovers from the WAL); `fast` rolls back open transactions first."""
        self._run(
            "pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(SERVER_TIMEOUT)
        )

    def running(self) -> bool:
        """Whether the postmaster runs."""
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stops the server if it runs and removes its files."""
        if self.running():
            try:
                self.stop("immediate")
            except AssertionError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A throw-away redis-server on 127.0.0.1 that keeps nothing on disk."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            missing_service("redis-server", "not found on PATH")
        self.root = Path(tempfile.mkdtemp(prefix="redesk-faults-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        #: How many times the server was started.
        self.starts = 0

    @property
    def url(self) -> str:
        """Database 0 of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Starts an empty server and waits until it answers PING."""
        import redis

        assert self.binary is not None
        assert self.process is None or self.process.poll() is not None, "it runs already"
        log = (self.root / "redis.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self.starts += 1
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + SERVER_TIMEOUT
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                assert self.process.poll() is None, (
                    f"redis-server exited {self.process.returncode}: "
                    f"{(self.root / 'redis.log').read_text(errors='replace')}"
                )
                assert time.monotonic() < deadline, "redis-server did not answer PING"
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """Ends the server at once (SIGKILL): everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=SERVER_TIMEOUT)

    def keys(self) -> int:
        """How many keys the server holds."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    def destroy(self) -> None:
        """Ends the server and removes its directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
