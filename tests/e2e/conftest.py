"""End-to-end fixtures: real `redesk` processes on a free port, driven over HTTP.

Each test module gets its own deployment (a temporary directory as the working directory, its
own database, `redesk demo` loaded) so a module's server is shared by its stories, and stories
stay independent by using fresh identities and their own request numbers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL, missing_service
from tests.e2e.client import WebChat

#: A Redis database the Redis variant may empty (not the one of the unit tests).
E2E_REDIS_URL = os.environ.get("REDESK_TEST_E2E_REDIS_URL", "redis://127.0.0.1:6379/14")

#: GET /healthz attempts while a server starts.
HEALTH_ATTEMPTS = 300

#: Seconds one health probe may take.
HEALTH_TIMEOUT = 2.0

#: Seconds between two probes.
HEALTH_PAUSE = 0.1

#: Seconds a CLI verb or a stopping process may take before the test gives up on it.
PROCESS_TIMEOUT = 60

#: Attempts to take the e2e Redis database from another test run, LOCK_PAUSE seconds apart.
LOCK_ATTEMPTS = 600

#: Seconds between two attempts to take the lock.
LOCK_PAUSE = 0.5


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ is in the e2e tier (no marker needed in each file)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


def redesk_executable() -> str:
    """The `redesk` console script of the virtualenv running the tests."""
    beside = Path(sys.executable).with_name("redesk")
    if beside.exists():
        return str(beside)
    found = shutil.which("redesk")
    assert found, "the `redesk` console script is not installed (pip install -e .)"
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Deployment:
    """redesk processes sharing one environment and working directory."""

    directory: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """Where `redesk run` listens."""
        return f"http://{self.env['REDESK_HOST']}:{self.env['REDESK_PORT']}"

    # --- the CLI ------------------------------------------------------------------------

    def cli(self, *args: str) -> str:
        """Runs `redesk ARGS` to its end; returns its standard output (it must succeed)."""
        done = subprocess.run(
            [redesk_executable(), *args],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        out = done.stdout.decode(errors="replace")
        assert done.returncode == 0, (
            f"redesk {' '.join(args)} exited {done.returncode}\n{out}"
            f"{done.stderr.decode(errors='replace')}"
        )
        return out

    def invites(self, *invitations: tuple[str, ...]) -> list[str]:
        """Invitation codes from `redesk invite ...`, the verbs run side by side."""
        running = [
            subprocess.Popen(
                [redesk_executable(), "invite", *args],
                cwd=self.directory,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for args in invitations
        ]
        codes = []
        for args, process in zip(invitations, running, strict=True):
            out, errors = process.communicate(timeout=PROCESS_TIMEOUT)
            assert process.returncode == 0, (
                f"redesk invite {' '.join(args)} exited {process.returncode}\n"
                f"{out.decode(errors='replace')}{errors.decode(errors='replace')}"
            )
            # The code is alone on the last line.
            codes.append(out.decode().strip().splitlines()[-1].strip())
        return codes

    # --- long-running processes ---------------------------------------------------------

    def start(self, verb: str, name: str | None = None) -> None:
        """Starts `redesk VERB` in the background, its output in NAME.log (NAME: VERB unless
        given; a second process of one verb, e.g. another worker, needs its own name)."""
        name = name or verb
        assert name not in self.processes, f"a process called {name!r} runs already"
        log = (self.directory / f"{name}.log").open("wb")
        try:
            self.processes[name] = subprocess.Popen(
                [redesk_executable(), verb],
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()  # the child holds its own descriptor

    def logs(self) -> str:
        """Every process's log so far, for failure messages."""
        parts = []
        for verb, process in self.processes.items():
            path = self.directory / f"{verb}.log"
            body = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"===== redesk {verb} (exit code {process.poll()}) =====\n{body}")
        return "\n".join(parts)

    def wait_until_healthy(self) -> None:
        """Polls GET /healthz until it answers 200 (a bounded number of attempts)."""
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=HEALTH_TIMEOUT) as http:
            for _ in range(HEALTH_ATTEMPTS):
                exited = {
                    verb: p.returncode for verb, p in self.processes.items() if p.poll() is not None
                }
                assert not exited, f"redesk exited early {exited}\n{self.logs()}"
                try:
                    response = http.get("/healthz")
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code}: {response.text}"
                time.sleep(HEALTH_PAUSE)
        raise AssertionError(f"GET /healthz never answered 200 (last: {last})\n{self.logs()}")

    def stop(self) -> dict[str, int | None]:
        """Stops every process with SIGTERM (SIGKILL if it will not end); their exit codes."""
        codes: dict[str, int | None] = {}
        for verb, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[verb] = process.wait(timeout=PROCESS_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[verb] = process.wait()
        return codes

    # --- web identities -----------------------------------------------------------------

    def http(self) -> httpx.Client:
        """An HTTP client on the server."""
        return httpx.Client(base_url=self.base_url, timeout=30)


def base_env(directory: Path, database_url: str) -> dict[str, str]:
    """The environment of every process: ours, without any REDESK_* setting from outside."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("REDESK_")}
    env.update(
        {
            # The deployment's own directory holds its media (and is where a verb without a
            # database URL would look), not the data directory of whoever runs the tests.
            "REDESK_DATA_DIR": str(directory),
            "REDESK_DATABASE_URL": database_url,
            "REDESK_HOST": "127.0.0.1",
            "REDESK_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
            # Every identity of a test run comes from 127.0.0.1; the limit's own test sets it.
            "REDESK_WEB_SESSIONS_PER_MINUTE": "0",
        }
    )
    return env


def serve(deployment: Deployment, *verbs: str) -> Iterator[Deployment]:
    """Starts the processes, yields the deployment once it is healthy, then stops them with
    SIGTERM and checks that each shut down cleanly (exit code 0)."""
    for verb in verbs:
        deployment.start(verb)
    stopped = False
    try:
        deployment.wait_until_healthy()
        yield deployment
        codes = deployment.stop()
        stopped = True
        assert all(code == 0 for code in codes.values()), (
            f"redesk did not shut down cleanly on SIGTERM: {codes}\n{deployment.logs()}"
        )
    finally:
        if not stopped:
            deployment.stop()


@pytest.fixture(scope="module")
def sqlite_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The embedded default: SQLite, `redesk run` with its in-process worker and scheduler."""
    directory = tmp_path_factory.mktemp("redesk-e2e")
    deployment = Deployment(directory, base_env(directory, f"sqlite:///{directory / 'redesk.db'}"))
    deployment.cli("demo")
    yield from serve(deployment, "run")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped at the end of the module."""
    name = f"redesk_e2e_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        missing_service("PostgreSQL", exc)
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Holds a lock file shared by every test run on this machine (waiting for it, bounded)."""
    path = Path(tempfile.gettempdir()) / f"{name}.lock"
    with path.open("a") as handle:
        for _ in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(LOCK_PAUSE)
        else:
            raise AssertionError(f"another test run held {path} for too long")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def e2e_redis_url() -> Iterator[str]:
    """The e2e Redis database, emptied before and after the module.

    Two test runs on one machine (two engineers, or make test next to an editor's run) would
    flush each other's queues and run each other's jobs, so the database is held exclusively.
    """
    with held_redis(E2E_REDIS_URL) as url:
        yield url


@contextmanager
def held_redis(url: str) -> Iterator[str]:
    """A Redis database held exclusively by this test run and emptied before and after;
    a missing Redis skips (fails on CI)."""
    import redis

    with exclusive(f"redesk-e2e-redis-{url.rsplit('/', 1)[-1]}"):
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            client.flushdb()
        except Exception as exc:
            client.close()
            missing_service("Redis", exc)
        try:
            yield url
        finally:
            client.flushdb()
            client.close()


@pytest.fixture(scope="module")
def redis_deployment(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, e2e_redis_url: str
) -> Iterator[Deployment]:
    """Production's shape: PostgreSQL, Redis, `redesk run` next to `redesk worker` and
    `redesk scheduler`, all with the same environment."""
    directory = tmp_path_factory.mktemp("redesk-e2e-redis")
    env = base_env(directory, postgres_url)
    env["REDESK_REDIS_URL"] = e2e_redis_url
    deployment = Deployment(directory, env)
    deployment.cli("db", "upgrade")
    deployment.cli("demo")
    yield from serve(deployment, "worker", "scheduler", "run")


@dataclass
class Team:
    """The bound staff of a deployment, and a way to open resident identities."""

    deployment: Deployment
    http: httpx.Client
    worker: WebChat
    city: WebChat
    estate: WebChat

    def resident(self, name: str) -> WebChat:
        """A fresh resident identity."""
        return WebChat.open(self.http, name)


#: Departments whose staff the team has (names from admin_scripts/demo.py).
CITY = "城管执法"
ESTATE = "物业服务中心"


def bind_team(deployment: Deployment, http: httpx.Client) -> Team:
    """A worker and staff of two departments, bound with codes from `redesk invite`."""
    worker_code, city_code, estate_code = deployment.invites(
        ("worker",), ("department", CITY), ("department", ESTATE)
    )
    worker = WebChat.open(http, "王书记")
    city = WebChat.open(http, "城管李")
    estate = WebChat.open(http, "物业赵")
    for chat, code in ((worker, worker_code), (city, city_code), (estate, estate_code)):
        chat.send(f"绑定 {code}")
    worker.wait_for("绑定成功", "党务工作者")
    city.wait_for("绑定成功", CITY)
    estate.wait_for("绑定成功", ESTATE)
    return Team(deployment, http, worker, city, estate)
