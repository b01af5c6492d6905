"""Tick benchmark: what one tick of the reminders costs with many open requests.

`python -m bench tick [--open 10000,100000] [--ticks 30]`, for each size:

1. a fresh PostgreSQL database (`redesk db upgrade`), filled with psycopg COPY: one worker, one
   leader, one resident, and N open requests in the states a desk has open (new 20 %,
   handling / forwarded / dept_handling / review 50 %, replied 30 %), with deadlines such that
   nothing falls within the next hour, each with `tick_at` = its last change (as migration 0010
   and every change set it); then VACUUM (ANALYZE);
2. in this process, on the product's code (workflow/reminders.py `tick`, one transaction per
   tick as bot/dispatch.py runs it): the first tick, which reads every request once and puts
   each off to its next instant; then `--ticks` ticks one second apart with nothing due (ms per
   tick, and the rows each read); then ticks with 100 and 1,000 requests made due (their
   `tick_at` set to now, as a change would), to show the cost follows what is due;
3. for comparison, the selection the tick used before `tick_at`: every open request read and
   evaluated on every tick (`open_requests` + the reminder keys + the schedule of each; the
   keys asked for in pieces of 10,000 ids, since PostgreSQL refuses a statement with more than
   65,535 parameters, which made that tick fail outright past 65,535 open requests).

"Now" is Tuesday 2026-11-24 08:30 Asia/Shanghai, before the digest hour, so no tick sends the
daily digest (its cost is one claim per tick, the same at any size).
"""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench import common

SHANGHAI = ZoneInfo("Asia/Shanghai")

#: The benchmark's "now": a working Tuesday, before working hours and the digest.
NOW = datetime(2026, 11, 24, 8, 30, tzinfo=SHANGHAI).astimezone(UTC)

#: Open states and their shares.
STATES: tuple[tuple[str, float], ...] = (
    ("new", 0.2),
    ("handling", 0.2),
    ("forwarded", 0.1),
    ("dept_handling", 0.15),
    ("review", 0.05),
    ("replied", 0.3),
)

#: Requests made due in the proportionality check.
DUE_SIZES: tuple[int, ...] = (100, 1000)


@dataclass
class TickFigures:
    """What the ticks of one size cost."""

    open_requests: int
    load_seconds: float = 0.0
    first_ms: float = 0.0
    first_read: int = 0
    first_done: dict[str, int] = field(default_factory=dict)
    idle_ms: list[float] = field(default_factory=list)
    idle_read: list[int] = field(default_factory=list)
    due_ms: dict[int, float] = field(default_factory=dict)
    due_read: dict[int, int] = field(default_factory=dict)
    scan_ms: list[float] = field(default_factory=list)
    plan: str = ""

    @property
    def idle_median(self) -> float:
        """Median ms of a tick with nothing due."""
        return float(statistics.median(self.idle_ms)) if self.idle_ms else float("nan")

    @property
    def idle_p90(self) -> float:
        """90th percentile ms of a tick with nothing due."""
        if len(self.idle_ms) < 2:
            return self.idle_median
        return float(statistics.quantiles(self.idle_ms, n=10)[-1])


def _ts(moment: datetime | None) -> str:
    return "\\N" if moment is None else moment.astimezone(UTC).isoformat()


def load(url: str, count: int, seed: int = 20261124) -> float:
    """One worker, one leader, one resident and `count` open requests; seconds taken."""
    import psycopg

    began = time.monotonic()
    rng = random.Random(seed)
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain) as connection:
        centre = connection.execute("SELECT id FROM centres WHERE is_default").fetchone()
        assert centre is not None
        centre_id = centre[0]
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO people (id, channel, external_id, display_name, role, unreachable, "
                "web_seq, window_sent, created_at, centre_id) "
                "VALUES (%s, 'web', %s, %s, %s, false, 0, 0, %s, %s)",
                [
                    (1, "w1", "王书记", "worker", NOW - timedelta(days=60), centre_id),
                    (2, "l1", "李书记", "leader", NOW - timedelta(days=60), centre_id),
                    (3, "r1", "居民", "requester", NOW - timedelta(days=60), centre_id),
                ],
            )
            columns = (
                "id, number, requester_id, channel, text, state, reopen_count, created_at, "
                "updated_at, response_due_at, resolution_due_at, deadlines_set_at, replied_at, "
                "centre_id, tick_at"
            )
            states = [state for state, _ in STATES]
            weights = [share for _, share in STATES]
            with cursor.copy(f"COPY requests ({columns}) FROM STDIN") as copy:
                lines: list[str] = []
                for number in range(1, count + 1):
                    state = rng.choices(states, weights=weights)[0]
                    replied = None
                    if state == "new":
                        # Came in before the office opened: the 30-minute ping is at 09:30.
                        created = NOW - timedelta(minutes=rng.uniform(0, 25))
                        changed = created
                    else:
                        created = NOW - timedelta(days=rng.uniform(0, 2))
                        changed = created + (NOW - created) * rng.random()
                        if state == "replied":
                            replied = NOW - timedelta(days=rng.uniform(0, 6))
                            changed = replied
                    response_due = created + timedelta(days=1)
                    resolution_due = NOW + timedelta(days=rng.uniform(5, 20))
                    lines.append(
                        f"{number}\tSQ-20261124-{number:06d}\t3\tweb\t路灯坏了\t{state}\t0\t"
                        f"{_ts(created)}\t{_ts(changed)}\t{_ts(response_due)}\t"
                        f"{_ts(resolution_due)}\t{_ts(created)}\t{_ts(replied)}\t{centre_id}\t"
                        f"{_ts(changed)}\n"
                    )
                    if len(lines) >= 5000:
                        copy.write("".join(lines))
                        lines = []
                copy.write("".join(lines))
            for table in ("people", "requests"):
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
        connection.commit()
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE)")
    return time.monotonic() - began


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return (time.perf_counter() - began) * 1000, result


def measure(url: str, count: int, ticks: int, *, scans: int = 3) -> TickFigures:
    """The ticks of one loaded database (see the module's docstring)."""
    from sqlalchemy import update
    from sqlmodel import Session, col

    from storage import queries
    from storage.db import get_engine, session_scope
    from storage.models import Request
    from workflow import reminders
    from workflow.machine import TERMINAL
    from workflow.service import Tx

    engine = get_engine(url)
    policy = reminders.Policy()
    figures = TickFigures(open_requests=count)
    sequence = iter(range(1, 10**9))

    def tick(at: datetime) -> reminders.TickResult:
        with session_scope(engine) as session:
            tx = Tx(session=session, now=at, source=f"bench-tick:{next(sequence)}")
            return reminders.tick(tx, policy)

    figures.first_ms, first = _timed(lambda: tick(NOW))
    figures.first_read = first.read
    figures.first_done = dict(first.done)
    for second in range(1, ticks + 1):
        elapsed, result = _timed(lambda second=second: tick(NOW + timedelta(seconds=second)))
        figures.idle_ms.append(elapsed)
        figures.idle_read.append(result.read)
    rng = random.Random(count)
    at = NOW + timedelta(seconds=ticks + 1)
    for size in DUE_SIZES:
        chosen = rng.sample(range(1, count + 1), min(size, count))
        with session_scope(engine) as session:
            session.execute(update(Request).where(col(Request.id).in_(chosen)).values(tick_at=at))
        figures.due_ms[size], result = _timed(lambda at=at: tick(at))
        figures.due_read[size] = result.read
        at += timedelta(seconds=1)
    excluded = [state.value for state in TERMINAL]

    def scan() -> int:
        """The selection before tick_at: every open request, evaluated."""
        with Session(engine) as session:
            tx = Tx(session=session, now=at, source="bench-scan")
            candidates = list(queries.open_requests(session=session, excluded=excluded))
            ids = [r.id for r in candidates if r.id is not None]
            # In pieces: one IN list of more than 65,535 ids is refused by PostgreSQL (the
            # tick before tick_at failed so with that many open requests).
            for start in range(0, len(ids), 10_000):
                queries.reminder_keys(session=session, request_ids=ids[start : start + 10_000])
            return sum(len(reminders._due(tx, request, policy)) for request in candidates)

    for _ in range(scans):
        elapsed, _due = _timed(scan)
        figures.scan_ms.append(elapsed)
    figures.plan = selection_plan(engine, at)
    engine.dispose()
    return figures


def selection_plan(engine: Any, now: datetime) -> str:
    """EXPLAIN ANALYZE of the tick's selection (its first batch) at `now`, on one line."""
    from sqlalchemy import text
    from sqlalchemy.dialects import postgresql
    from sqlmodel import Session

    from storage import queries
    from workflow import reminders

    with Session(engine) as session:
        captured: list[Any] = []
        original = session.exec

        def capture(statement: Any, *args: Any, **kwargs: Any) -> Any:
            captured.append(statement)
            return original(statement, *args, **kwargs)

        session.exec = capture  # type: ignore[method-assign]
        queries.requests_to_tick(session=session, now=now, limit=reminders.TICK_BATCH)
        sql = str(
            captured[0].compile(
                dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
                compile_kwargs={"literal_binds": True},
            )
        )
    with engine.connect() as connection:
        rows = connection.execute(text("EXPLAIN (ANALYZE, COSTS OFF) " + sql))
        return " / ".join(str(row[0]).strip() for row in rows)


def _upgrade(url: str, directory: Path) -> None:
    answer = subprocess.run(
        [common.redesk_executable(), "db", "upgrade"],
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith("REDESK_")},
            "REDESK_DATABASE_URL": url,
        },
        cwd=directory,
        capture_output=True,
        timeout=300,
    )
    if answer.returncode != 0:
        raise RuntimeError(f"redesk db upgrade failed:\n{answer.stderr.decode()}")


@contextlib.contextmanager
def loaded(count: int) -> Iterator[tuple[str, float]]:
    """A fresh database with `count` open requests: (URL, load seconds)."""
    with (
        common.fresh_database("tick") as url,
        tempfile.TemporaryDirectory(prefix="redesk-bench-tick-") as temp,
    ):
        _upgrade(url, Path(temp))
        yield url, load(url, count)


def run(sizes: list[int], ticks: int) -> list[TickFigures]:
    """Every size in its own database; prints Markdown."""
    results = []
    for count in sizes:
        print(f"  tick with {count:,} open requests ...", file=sys.stderr)
        with common.CpuMonitor() as monitor, loaded(count) as (url, seconds):
            figures = measure(url, count, ticks)
            figures.load_seconds = seconds
        results.append(figures)
        print(f"\n{count:,} open requests: {monitor.summary()}")
    print_report(results, ticks)
    return results


def print_report(results: list[TickFigures], ticks: int) -> None:
    """The figures as Markdown."""
    print(
        f"\n| open requests | first tick: ms (read) | nothing due: median ms | p90 ms | "
        f"rows read | {' | '.join(f'{size:,} due: ms (read)' for size in DUE_SIZES)} | "
        "every open request scanned (before tick_at): ms |"
    )
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(DUE_SIZES) + "---:|")
    for item in results:
        due = " | ".join(
            f"{item.due_ms.get(size, float('nan')):,.1f} ({item.due_read.get(size, 0):,})"
            for size in DUE_SIZES
        )
        scan = statistics.median(item.scan_ms) if item.scan_ms else float("nan")
        print(
            f"| {item.open_requests:,} | {item.first_ms:,.0f} ({item.first_read:,}) | "
            f"{item.idle_median:.2f} | {item.idle_p90:.2f} | "
            f"{max(item.idle_read, default=0)} | {due} | {scan:,.0f} |"
        )
    print(f"\n{ticks} ticks with nothing due per size, one second apart; one transaction each.")
    for item in results:
        print(f"\nPlan of the selection ({item.open_requests:,}): {item.plan}")


def add_arguments(parser: Any) -> None:
    """The options of `python -m bench tick`."""
    parser.add_argument(
        "--open",
        default="10000,100000",
        help="comma-separated numbers of open requests, each in its own database",
    )
    parser.add_argument("--ticks", type=int, default=30, help="ticks with nothing due per size")


def main_from_args(args: Any) -> None:
    """Runs the benchmark with parsed options."""
    run([int(size) for size in args.open.split(",") if size.strip()], args.ticks)
