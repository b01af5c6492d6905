"""What every benchmark needs: machine facts, a fresh database and Redis, processes, figures."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: The repository root (the bench package's parent): where `python -m bench.*` helpers run.
ROOT = Path(__file__).resolve().parents[1]

#: A PostgreSQL database the benchmarks may create other databases from.
PG_ADMIN_URL = os.environ.get(
    "REDESK_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

#: The Redis database the Telegram benchmarks flush before and after (not the tests' 14/15).
REDIS_URL = os.environ.get("REDESK_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")

#: The fake Bot API's token.
TOKEN = "123456:BENCH-TOKEN"

#: The webhook secret the benchmarks configure.
WEBHOOK_SECRET = "bench-secret-0123456789"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of `values` (share 0.5 is the median); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def redesk_executable() -> str:
    """The virtualenv's `redesk` console script."""
    return str(Path(sys.executable).with_name("redesk"))


def machine_facts() -> dict[str, str]:
    """The machine, the software and the load on it right now."""
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    postgres = "?"
    with contextlib.suppress(Exception):
        postgres = pg_scalar(PG_ADMIN_URL, "SHOW server_version").split()[0]
    redis_version = "?"
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        redis_version = str(client.info("server")["redis_version"])
        client.close()
    load = os.getloadavg()
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "python": platform.python_version(),
        "postgresql": postgres,
        "redis": redis_version,
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


def print_facts(facts: dict[str, str]) -> None:
    """The machine facts as one Markdown line."""
    print(
        f"\n_{facts['date']} — {facts['cpu']}, {facts['memory']}, Python {facts['python']}, "
        f"PostgreSQL {facts['postgresql']}, Redis {facts['redis']}; load average before the "
        f"run {facts['load']}. Load generator, server, workers, fake Bot API, PostgreSQL and "
        "Redis all share these cores._\n"
    )


# --- PostgreSQL and Redis -------------------------------------------------------------------


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def pg_scalar(url: str, query: str, params: Sequence[Any] = ()) -> Any:
    """One value from PostgreSQL (a short autocommit connection)."""
    import psycopg

    with psycopg.connect(_psycopg_url(url), autocommit=True) as connection:
        row = connection.execute(query, params).fetchone()
        return row[0] if row else None


@contextlib.contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one run; dropped afterwards. Yields its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"redesk_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = _psycopg_url(PG_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_redis() -> Iterator[str]:
    """The benchmarks' Redis database, emptied before and after. Yields its URL."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


# --- processes ------------------------------------------------------------------------------


class Processes:
    """Child processes of one run, each logging to its own file; stopped (SIGTERM) on exit."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def run(self, *args: str, timeout: float = 120) -> None:
        """Runs a `redesk` verb to completion (raises with its output when it fails)."""
        answer = subprocess.run(
            [redesk_executable(), *args],
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            timeout=timeout,
        )
        if answer.returncode != 0:
            raise RuntimeError(
                f"redesk {' '.join(args)} failed:\n{answer.stdout.decode()}{answer.stderr.decode()}"
            )

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Starts a process whose output goes to <directory>/<name>.log."""
        log_path = self.directory / f"{name}.log"
        log = open(log_path, "wb")
        process = subprocess.Popen(
            command,
            env=env or self.env,
            cwd=cwd or self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started.append((name, process, log_path))
        return process

    def redesk(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Starts a long-running `redesk` verb (run, worker, scheduler)."""
        return self.start(name, [redesk_executable(), *args])

    def wait_for_log(self, name: str, needle: str, timeout: float = 60) -> None:
        """Waits until the process called `name` wrote `needle` to its log."""
        deadline = time.monotonic() + timeout
        for started_name, process, log_path in self.started:
            if started_name != name:
                continue
            while time.monotonic() < deadline:
                if needle in log_path.read_text(errors="replace"):
                    return
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")
                time.sleep(0.1)
            raise RuntimeError(
                f"{name} did not log {needle!r} in {timeout:g} s:\n{self.tail(name)}"
            )
        raise KeyError(name)

    def tail(self, name: str, lines: int = 30) -> str:
        """The end of a process's log."""
        for started_name, _, log_path in self.started:
            if started_name == name:
                return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def errors(self) -> list[str]:
        """Log lines of every process that look like errors or tracebacks."""
        found = []
        for name, _, log_path in self.started:
            for line in log_path.read_text(errors="replace").splitlines():
                if " ERROR " in line or "Traceback" in line or " WARNING " in line:
                    found.append(f"{name}: {line}")
        return found

    def stop(self) -> None:
        """SIGTERM to every process, newest first; SIGKILL to one that does not stop in 30 s."""
        for _, process, _ in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, _ in reversed(self.started):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_healthy(base: str, timeout: float = 60) -> None:
    """Waits until GET /healthz answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{base}/healthz did not answer 200 in {timeout:g} s")


def fmt(value: float, digits: int = 0) -> str:
    """A number for a Markdown table (thousands separated; "—" for NaN)."""
    if value != value:  # NaN
        return "—"
    return f"{value:,.{digits}f}"


# --- where the CPU went ---------------------------------------------------------------------


def _proc_stat(pid: str) -> tuple[str, int, int] | None:
    """(command name, parent pid, user + system clock ticks) of a process, None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, int(fields[1]), int(fields[11]) + int(fields[12])


def _busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


class CpuMonitor:
    """Samples every process's CPU time once a second, to say where the cores went during a
    run: the processes of the benchmark (by label), PostgreSQL, Redis, and everything else
    on the machine (other people's work competes for the same two cores)."""

    def __init__(self, labels: dict[int, str] | None = None) -> None:
        self.labels = dict(labels or {})
        self._first: dict[int, int] = {}
        self._last: dict[int, tuple[str, int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._began = (0, 0)
        self._ended = (0, 0)
        self._wall = 0.0
        self._seen_before: set[int] = set()

    def _sample(self, first: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = _proc_stat(entry.name)
            if stat is None:
                continue
            pid = int(entry.name)
            if first:
                self._first[pid] = stat[2]
            elif pid not in self._first and pid not in self._last:
                self._first[pid] = 0  # started during the run: all of its time counts
            self._last[pid] = stat

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def __enter__(self) -> CpuMonitor:
        self._began = _busy_ticks()
        self._wall = time.monotonic()
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._ended = _busy_ticks()
        self._wall = time.monotonic() - self._wall

    def _label(self, pid: int, name: str, parent: int) -> str:
        me = os.getpid()
        seen = set()
        cursor, cursor_parent = pid, parent
        while cursor not in seen:
            seen.add(cursor)
            if cursor in self.labels:
                return self.labels[cursor]
            if cursor == me:
                return "bench (load generator)" if pid == me else "bench: other children"
            if cursor_parent <= 1 or cursor_parent not in self._last:
                break
            cursor = cursor_parent
            cursor_parent = self._last[cursor][1]
        if name == "postgres":
            return "PostgreSQL"
        if name.startswith("redis-server"):
            return "Redis"
        return "other processes"

    def shares(self) -> dict[str, float]:
        """CPU used per label in cores (1.0 = one core busy all the run); "machine busy" is
        every process together."""
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        capacity = self._wall
        used: dict[str, float] = {}
        for pid, (name, parent, ticks) in self._last.items():
            spent = (ticks - self._first.get(pid, 0)) / ticks_per_second
            if spent <= 0:
                continue
            label = self._label(pid, name, parent)
            used[label] = used.get(label, 0.0) + spent
        busy = (
            (self._ended[0] - self._began[0])
            / max(1, self._ended[1] - self._began[1])
            * (os.cpu_count() or 1)
        )
        result = {label: seconds / capacity for label, seconds in used.items()}
        result["machine busy"] = busy
        return result

    def summary(self) -> str:
        """One line: where the cores went."""
        shares = self.shares()
        busy = shares.pop("machine busy")
        parts = [
            f"{label} {share:.2f}"
            for label, share in sorted(shares.items(), key=lambda item: -item[1])
            if share >= 0.005
        ]
        return (
            f"CPU over {self._wall:.0f} s, in cores: {busy:.2f} of {os.cpu_count()} busy — "
            + ", ".join(parts)
        )
