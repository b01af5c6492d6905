"""Telegram benchmarks: webhook ingest, resident message -> receipt, and bulk delivery.

Every run is self-contained: a new PostgreSQL database (created, upgraded, dropped), the Redis
database REDESK_BENCH_REDIS_URL (default db 11, flushed before and after), the fake Bot API of
the tests (tests/fakes/telegram.py) in a process of its own, and real `redesk run` /
`redesk worker` processes, stopped at the end.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.common import (
    ROOT,
    TOKEN,
    WEBHOOK_SECRET,
    CpuMonitor,
    Processes,
    fmt,
    free_port,
    fresh_database,
    fresh_redis,
    percentile,
    pg_scalar,
    wait_healthy,
)
from bench.fakeapi import FakeApi

#: Telegram's overall sending limit for one bot, messages per second.
CEILING = 30

#: First chat id of the residents (private chats have positive ids).
FIRST_CHAT = 5_000_000

#: Chats of the warm-up messages, apart from the measured ones.
WARMUP_CHAT = 9_000_000

#: Telegram's default number of concurrent webhook connections (setWebhook max_connections).
TELEGRAM_CONNECTIONS = 40


@dataclass
class Deployment:
    """The processes and addresses of one run."""

    directory: Path
    env: dict[str, str]
    processes: Processes
    fake: FakeApi
    database_url: str
    redis_url: str
    port: int

    @property
    def base(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> CpuMonitor:
        """A CPU monitor that knows this run's processes."""
        names = {"run": "redesk run", "bare": "bare app"}
        labels = {
            process.pid: names.get(name, "redesk workers" if name.startswith("worker") else name)
            for name, process, _ in self.processes.started
        }
        labels[self.fake.process.pid] = "fake Bot API"
        return CpuMonitor(labels)


@contextlib.contextmanager
def deployment(
    label: str, *, limits: bool, workers: int, server: bool = True, demo: bool = True
) -> Iterator[Deployment]:
    """A fresh database, Redis and fake Bot API; `redesk run` (webhook mode) and workers."""
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redesk-bench-")))
        database_url = stack.enter_context(fresh_database(label))
        redis_url = stack.enter_context(fresh_redis())
        fake = stack.enter_context(FakeApi(limits=limits, log_path=directory / "fake.log"))
        port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("REDESK_") or key == "REDESK_WORKER_THREADS"
        }
        env.update(
            {
                "REDESK_ENV": "production",
                "REDESK_DATABASE_URL": database_url,
                "REDESK_REDIS_URL": redis_url,
                "REDESK_HOST": "127.0.0.1",
                "REDESK_PORT": str(port),
                "REDESK_TELEGRAM_TOKEN": TOKEN,
                "REDESK_TELEGRAM_API_URL": fake.url,
                "REDESK_PUBLIC_URL": "https://bench.example",
                "REDESK_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "PTB_TIMEDELTA": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        processes = stack.enter_context(Processes(directory, env))
        processes.run("db", "upgrade")
        if demo:
            processes.run("demo")
        if server:
            processes.redesk("run", "run")
            wait_healthy(f"http://127.0.0.1:{port}")
        for index in range(workers):
            processes.redesk(f"worker{index + 1}", "worker")
        for index in range(workers):
            processes.wait_for_log(f"worker{index + 1}", "redesk worker:")
        yield Deployment(directory, env, processes, fake, database_url, redis_url, port)


def update_body(index: int, chat: int, text: str | None = None) -> bytes:
    """A private text message Update as Telegram posts it to the webhook."""
    user = {"id": chat, "is_bot": False, "first_name": "居民", "language_code": "zh-hans"}
    update = {
        "update_id": 100_000_000 + index,
        "message": {
            "message_id": index + 1,
            "from": user,
            "chat": {"id": chat, "type": "private", "first_name": "居民"},
            "date": int(time.time()),
            "text": text or f"小区{index % 97}号楼门口的路灯不亮了，晚上出行不便（{index}）",
        },
    }
    return json.dumps(update, ensure_ascii=False).encode()


def webhook_request(index: int, chat: int) -> bytes:
    """The bytes of one POST /telegram/webhook."""
    return loadgen.post(
        "/telegram/webhook",
        update_body(index, chat),
        {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
    )


# --- 1. ingest ------------------------------------------------------------------------------


def ingest(*, seconds: float, concurrency: int, chats: int) -> list[dict[str, Any]]:
    """POST /telegram/webhook against GET /static/desk.css on the same server and against a
    bare app (same uvicorn configuration, separate process). No workers run: the jobs wait in
    Redis, so the figures are the ingest path alone (check, parse, store, enqueue)."""
    rows: list[dict[str, Any]] = []
    with deployment("ingest", limits=True, workers=0) as run:
        bare_port = free_port()
        run.processes.start(
            "bare", [sys.executable, "-m", "bench.bare", "--port", str(bare_port)], cwd=ROOT
        )
        wait_healthy(f"http://127.0.0.1:{bare_port}")
        posted = [0]

        def webhook(index: int) -> bytes:
            posted[0] += 1
            return webhook_request(index, FIRST_CHAT + index % chats)

        static = loadgen.get("/static/desk.css")
        bare = loadgen.post(
            "/telegram/webhook",
            update_body(0, FIRST_CHAT),
            {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
        )
        targets = [
            ("POST /telegram/webhook (redesk)", run.port, webhook),
            ("GET /static/desk.css (redesk, same server)", run.port, lambda _: static),
            ("POST /telegram/webhook (bare Starlette app)", bare_port, lambda _: bare),
        ]
        next_index = 0
        for clients, length, warmup in ((concurrency, seconds, 3.0), (1, min(seconds, 5.0), 1.0)):
            for name, port, make in targets:
                with run.cpu() as cpu:
                    result = asyncio.run(
                        loadgen.closed_loop(
                            "127.0.0.1",
                            port,
                            make,
                            concurrency=clients,
                            seconds=length,
                            warmup=warmup,
                            start=next_index,
                        )
                    )
                next_index += 1_000_000
                rows.append(
                    {
                        "endpoint": name,
                        "concurrency": clients,
                        "requests": result.count,
                        "per_second": result.per_second,
                        "p50_ms": percentile(result.latencies, 0.5) * 1000,
                        "p99_ms": percentile(result.latencies, 0.99) * 1000,
                        "not_ok": sum(n for status, n in result.statuses.items() if status != 200),
                        "cpu": cpu.summary(),
                    }
                )
        stored = pg_scalar(run.database_url, "SELECT count(*) FROM inbox")
        errors = run.processes.errors()
    if stored != posted[0]:
        print(
            f"WARNING: {posted[0]} updates answered or sent, {stored} stored in the inbox",
            file=sys.stderr,
        )
    for line in errors[:10]:
        print(f"log: {line}", file=sys.stderr)
    return rows


def print_ingest(rows: list[dict[str, Any]]) -> None:
    """Markdown table of the ingest run, with the ratios."""
    print("| endpoint | clients | requests | req/s | p50 ms | p99 ms | non-200 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['endpoint']} | {row['concurrency']} | {fmt(row['requests'])} | "
            f"{fmt(row['per_second'])} | {fmt(row['p50_ms'], 1)} | {fmt(row['p99_ms'], 1)} | "
            f"{row['not_ok']} |"
        )
    print()
    for row in rows:
        print(f"- {row['endpoint']}, {row['concurrency']} client(s): {row['cpu']}")
    for clients in sorted({row["concurrency"] for row in rows}, reverse=True):
        group = [row for row in rows if row["concurrency"] == clients]
        webhook, static, bare = group[0], group[1], group[2]
        print(
            f"\nRatio at {clients} client(s): webhook / static file = "
            f"{webhook['per_second'] / static['per_second']:.2f} of the throughput; webhook / "
            f"bare app = {webhook['per_second'] / bare['per_second']:.2f}."
        )


# --- 2. end to end --------------------------------------------------------------------------


@dataclass
class Trial:
    """One steady-rate run: resident messages in, receipts out."""

    rate: float
    seconds: float
    messages: int = 0
    post_p50_ms: float = float("nan")
    post_p99_ms: float = float("nan")
    post_not_ok: int = 0
    acked: int = 0
    ack_rate_late: float = 0.0
    backlog_at_end: int = 0
    backlog_growth: float = 0.0
    post_rate: float = 0.0
    e2e_p50: str = "—"
    e2e_p99: str = "—"
    drained_after_s: float = float("nan")
    drain_receipt_rate: float = 0.0
    drain_handled_rate: float = 0.0
    lock_waiters: float = 0.0
    lock_busy: float = 0.0
    waiting_query: str = ""
    samples: list[tuple[float, int, int, int, int, int]] = field(default_factory=list)
    cpu: str = ""
    log_errors: list[str] = field(default_factory=list)

    @property
    def sustained(self) -> bool:
        """Every receipt arrived, and when the load stopped no more than two seconds' worth of
        messages were waiting for theirs (the backlog did not build up)."""
        return self.acked == self.messages and self.backlog_at_end <= 2 * self.rate


def _database_state(database_url: str) -> tuple[int, int, int, str]:
    """Pending inbox rows, pending outbox rows, sessions waiting for a lock (and the query of
    one of them) in the run's database."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as connection:
        inbox = connection.execute("SELECT count(*) FROM inbox WHERE status = 'pending'").fetchone()
        outbox = connection.execute(
            "SELECT count(*) FROM outbox WHERE status = 'pending'"
        ).fetchone()
        waiting = connection.execute(
            "SELECT left(query, 60) FROM pg_stat_activity WHERE datname = %s "
            "AND wait_event_type = 'Lock'",
            (name,),
        ).fetchall()
    return (
        int(inbox[0] if inbox else 0),
        int(outbox[0] if outbox else 0),
        len(waiting),
        str(waiting[0][0]) if waiting else "",
    )


def end_to_end(*, rate: float, seconds: float, chats: int, workers: int, drain: float) -> Trial:
    """Resident messages at `rate` a second for `seconds` from `chats` chats; every receipt's
    arrival at the fake Bot API (limits off) is matched to its message, chat by chat."""
    trial = Trial(rate=rate, seconds=seconds)
    with deployment("e2e", limits=False, workers=workers) as run:
        # Warm-up: connections, caches, the Bot clients of every process.
        warm = 20
        asyncio.run(
            loadgen.open_loop(
                "127.0.0.1",
                run.port,
                lambda i: webhook_request(90_000_000 + i, WARMUP_CHAT + i),
                rate=10,
                seconds=warm / 10,
            )
        )
        deadline = time.monotonic() + 30
        while run.fake.stats()["sent"] < warm and time.monotonic() < deadline:
            time.sleep(0.2)
        baseline = run.fake.stats()["sent"]

        sent_at: dict[int, list[float]] = defaultdict(list)
        posted = [0]

        def on_sent(index: int, at: float) -> None:
            sent_at[FIRST_CHAT + index % chats].append(at)
            posted[0] += 1

        stop = threading.Event()
        waiting_queries: Counter[str] = Counter()

        def sample() -> None:
            began = time.monotonic()
            while not stop.is_set():
                acked = run.fake.stats()["sent"] - baseline
                inbox, outbox, waiting, query = _database_state(run.database_url)
                if query:
                    waiting_queries[query] += 1
                trial.samples.append(
                    (time.monotonic() - began, posted[0], acked, inbox, outbox, waiting)
                )
                stop.wait(0.5)

        monitor = run.cpu().__enter__()
        load_began = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = asyncio.run(
            loadgen.open_loop(
                "127.0.0.1",
                run.port,
                lambda i: webhook_request(i, FIRST_CHAT + i % chats),
                rate=rate,
                seconds=seconds,
                max_connections=TELEGRAM_CONNECTIONS,
                on_sent=on_sent,
            )
        )
        load_ended = time.monotonic()
        monitor.__exit__(None, None, None)
        trial.cpu = monitor.summary()
        trial.messages = posted[0]
        trial.post_rate = result.count / (load_ended - load_began)
        # The second half of the load: acknowledgements per second and backlog growth.
        load_seconds = load_ended - load_began
        acked_end = run.fake.stats()["sent"] - baseline
        mid = min(trial.samples, key=lambda s: abs(s[0] - seconds / 2))
        late = max(load_seconds - mid[0], 1e-9)
        trial.ack_rate_late = (acked_end - mid[2]) / late
        trial.backlog_at_end = trial.messages - acked_end
        trial.backlog_growth = (trial.backlog_at_end - (mid[1] - mid[2])) / late
        during = [s for s in trial.samples if s[0] <= load_seconds]
        if during:
            trial.lock_waiters = sum(s[5] for s in during) / len(during)
            trial.lock_busy = sum(1 for s in during if s[5]) / len(during)
        # Drain: wait for the rest, as long as it keeps coming.
        last_progress, last_acked = time.monotonic(), acked_end
        while True:
            acked = run.fake.stats()["sent"] - baseline
            now = time.monotonic()
            if acked >= trial.messages:
                trial.drained_after_s = now - load_ended
                break
            if acked > last_acked:
                last_progress, last_acked = now, acked
            if now - load_ended > drain or now - last_progress > 15:
                break
            time.sleep(0.25)
        stop.set()
        sampler.join()
        observed_until = time.monotonic()
        after = [sample for sample in trial.samples if sample[0] >= load_seconds]
        if len(after) >= 2 and after[-1][0] - after[0][0] >= 2:
            span = after[-1][0] - after[0][0]
            trial.drain_receipt_rate = (after[-1][2] - after[0][2]) / span
            trial.drain_handled_rate = (after[0][3] - after[-1][3]) / span
        calls = run.fake.dump(run.directory / "calls.json")
        trial.log_errors = run.processes.errors()
    trial.waiting_query = waiting_queries.most_common(1)[0][0] if waiting_queries else ""

    received: dict[int, list[float]] = defaultdict(list)
    for method, chat, status, at in calls:
        if (
            method == "sendMessage"
            and status == 200
            and isinstance(chat, int)
            and FIRST_CHAT <= chat < FIRST_CHAT + chats
        ):
            received[chat].append(at)
    latencies: list[float] = []
    waited: list[float] = []  # unacknowledged: how long they had waited when we stopped
    for chat, sends in sent_at.items():
        arrivals = sorted(received.get(chat, []))
        latencies += [arrival - sent for sent, arrival in zip(sends, arrivals, strict=False)]
        waited += [observed_until - sent for sent in sends[len(arrivals) :]]
    trial.acked = len(latencies)
    extra = sum(max(0, len(received[c]) - len(sent_at.get(c, []))) for c in received)
    if extra:
        print(f"WARNING: {extra} more receipts than messages (duplicates?)", file=sys.stderr)
    trial.post_p50_ms = percentile(result.latencies, 0.5) * 1000
    trial.post_p99_ms = percentile(result.latencies, 0.99) * 1000
    trial.post_not_ok = sum(n for status, n in result.statuses.items() if status != 200)
    # Percentiles over every message; one not acknowledged counts with the time it had
    # waited, a lower bound (shown as "> x").
    everything = sorted(
        [(value, False) for value in latencies] + [(value, True) for value in waited]
    )
    trial.e2e_p50 = _bounded(everything, 0.5)
    trial.e2e_p99 = _bounded(everything, 0.99)
    return trial


def _bounded(ordered: list[tuple[float, bool]], share: float) -> str:
    """A percentile of (value, is a lower bound) pairs, in seconds, as text."""
    if not ordered:
        return "—"
    value, lower = ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]
    return f"> {value:.1f}" if lower else f"{value:.2f}"


def print_trials(trials: list[Trial], workers: int, chats: int) -> None:
    """Markdown table of end-to-end trials."""
    print(
        f"{workers} `redesk worker` processes ({os.environ.get('REDESK_WORKER_THREADS', '4')} "
        f"threads each), {chats} resident chats, fake Bot API limits off.\n"
    )
    print(
        "| offered msg/s | s | messages | POSTs answered/s | POST p99 ms | receipts/s "
        "(2nd half) | backlog at end of load | backlog growth msg/s | receipt p50 s | "
        "receipt p99 s | unacknowledged | sustained |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t in trials:
        print(
            f"| {fmt(t.rate)} | {fmt(t.seconds)} | {fmt(t.messages)} | {fmt(t.post_rate)} | "
            f"{fmt(t.post_p99_ms)} | {fmt(t.ack_rate_late, 1)} | "
            f"{fmt(t.backlog_at_end)} | {fmt(t.backlog_growth, 1)} | {t.e2e_p50} | "
            f"{t.e2e_p99} | {fmt(t.messages - t.acked)} | {'yes' if t.sustained else 'no'} |"
        )
    print(
        "\nLatencies are from the instant a message was due to be posted to the instant the "
        'fake Bot API received its receipt; "> x": receipts still missing when the run '
        "stopped, counted with the time they had waited. Sustained: every receipt arrived "
        "and at the end of the load at most two seconds' worth of messages waited for theirs."
    )


def print_samples(trial: Trial) -> None:
    """The backlog over time of one trial (every ~5 s), the lock waits and the CPU."""
    print(
        f"\nAt {fmt(trial.rate)} msg/s — t s: posted / receipts / inbox pending / outbox pending:"
    )
    shown = trial.samples[::10] + trial.samples[-1:]
    print("; ".join(f"{s[0]:.0f}: {s[1]}/{s[2]}/{s[3]}/{s[4]}" for s in shown) + ".")
    if trial.lock_busy:
        print(
            f"Database sessions waiting for a lock during the load: {trial.lock_waiters:.1f} "
            f"on average, at least one in {trial.lock_busy:.0%} of the samples; mostly "
            f"`{trial.waiting_query}…`."
        )
    print(f"{trial.cpu} (during the load).")


def end_to_end_series(
    *,
    rates: list[float] | None,
    seconds: float,
    overload_seconds: float,
    chats: int,
    workers: int,
    drain: float,
    steps: int = 3,
) -> list[Trial]:
    """The given rates; by default 200/s, then a ladder of steady rates (5 msg/s apart) from
    an estimate of the capacity, up while they hold, down while they do not."""
    trials: list[Trial] = []
    if rates:
        for rate in rates:
            trials.append(
                end_to_end(rate=rate, seconds=seconds, chats=chats, workers=workers, drain=drain)
            )
            _report_trial(trials[-1])
        return trials
    first = end_to_end(
        rate=200, seconds=overload_seconds, chats=chats, workers=workers, drain=drain
    )
    trials.append(first)
    _report_trial(first)
    if first.sustained:
        return trials
    # Under overload the server takes CPU from the workers; after the load (the drain) they
    # have it to themselves. The better of the two is the estimate.
    estimate = max(first.ack_rate_late, first.drain_receipt_rate, first.drain_handled_rate)
    rate = max(5.0, 5 * round(estimate / 5))
    tried: dict[float, bool] = {}
    for _ in range(steps):
        trial = end_to_end(rate=rate, seconds=seconds, chats=chats, workers=workers, drain=drain)
        trials.append(trial)
        _report_trial(trial)
        tried[rate] = trial.sustained
        rate = rate + 5 if trial.sustained else rate - 5
        if rate < 5 or rate in tried:
            break
    return sorted(trials, key=lambda t: -t.rate)


def _report_trial(trial: Trial) -> None:
    print(
        f"[e2e] {trial.rate:g} msg/s for {trial.seconds:g} s: {trial.acked}/{trial.messages} "
        f"receipts, {trial.ack_rate_late:.1f}/s in the 2nd half, p50 {trial.e2e_p50} s, "
        f"p99 {trial.e2e_p99} s, sustained: {trial.sustained}"
        + (
            f", drained {trial.drained_after_s:.1f} s after the load"
            if trial.drained_after_s == trial.drained_after_s
            else ""
        ),
        file=sys.stderr,
    )
    if trial.post_not_ok:
        print(
            f"  WARNING: {trial.post_not_ok} webhook POSTs were not answered 200", file=sys.stderr
        )
    for line in trial.log_errors[:5]:
        print(f"  log: {line}", file=sys.stderr)


# --- 3. delivery ----------------------------------------------------------------------------


@dataclass
class Delivery:
    """What the delivery run measured."""

    notifications: int
    chats: int
    workers: int
    sent: int = 0
    seconds: float = float("nan")
    too_many: int = 0
    finished: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    per_chat_ok: bool = False
    steady_rate: float = float("nan")
    other_calls: dict[str, int] = field(default_factory=dict)
    cpu: str = ""
    idle_in_transaction: float = 0.0
    too_many_kinds: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    log_errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Successful sends per second, from the first enqueue to the last send."""
        return self.sent / self.seconds if self.seconds else 0.0


def _create_outbox(database_url: str, notifications: int, chats: int) -> list[int]:
    """`chats` Telegram residents and `notifications` pending outbox rows for them, in turns.

    Returns the first outbox id of every chat: one deliver job per recipient, as
    bot.actors.enqueue_deliveries enqueues them.
    """
    from sqlmodel import Session, create_engine

    from storage.models import OutboxMessage, Person

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            people = [
                Person(channel="telegram", external_id=str(FIRST_CHAT + n), display_name=f"居民{n}")
                for n in range(chats)
            ]
            session.add_all(people)
            session.flush()
            rows = [
                OutboxMessage(
                    idempotency_key=f"bench:{n}",
                    person_id=people[n % chats].id,  # type: ignore[arg-type]
                    key="requester.accepted",
                    params={"number": f"SQ-BENCH-{n:05d}"},
                )
                for n in range(notifications)
            ]
            session.add_all(rows)
            session.flush()
            first: dict[int, int | None] = {}
            for row in rows:
                first.setdefault(row.person_id, row.id)
            session.commit()
            return [int(i) for i in first.values() if i is not None]
    finally:
        engine.dispose()


def _classify_429s(calls: list[list[Any]]) -> dict[str, int]:
    """Which limit each refused send hit, from the fake's record: "overall" when 30 sends had
    arrived in the second before it, "per chat" when the chat had one less than 0.9 s before."""
    kinds: Counter[str] = Counter()
    ok: list[float] = []
    last_in_chat: dict[Any, float] = {}
    for method, chat, status, at in sorted(calls, key=lambda call: call[3]):
        if method != "sendMessage":
            continue
        if status == 200:
            ok.append(at)
            last_in_chat[chat] = at
        elif status == 429:
            recent = len(ok) - bisect.bisect_right(ok, at - 1.0)
            if recent >= CEILING:
                kinds["overall"] += 1
            elif chat in last_in_chat and at - last_in_chat[chat] < 0.9:
                kinds["per chat"] += 1
            else:
                kinds["unclear"] += 1
    return dict(kinds)


def _sessions(database_url: str, state: str) -> int:
    """Sessions of the run's database in `state` (e.g. "idle in transaction")."""
    name = database_url.rsplit("/", 1)[1]
    return int(
        pg_scalar(
            database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = %s",
            (name, state),
        )
    )


def delivery(*, notifications: int, chats: int, workers: int, timeout: float) -> Delivery:
    """`notifications` outbox rows to `chats` chats, delivered by `workers` processes through
    the fake Bot API with Telegram's limits (1/s per chat, 30/s overall, real 429s)."""
    outcome = Delivery(notifications=notifications, chats=chats, workers=workers)
    with deployment("delivery", limits=True, workers=workers, server=False, demo=False) as run:
        first_ids = _create_outbox(run.database_url, notifications, chats)
        from workflow import broker

        broker.configure(run.redis_url)
        from bot import actors

        idle_in_transaction: list[int] = []
        with run.cpu() as monitor:
            began = time.monotonic()
            for outbox_id in first_ids:
                actors.deliver.send(outbox_id)
            deadline = began + timeout
            while time.monotonic() < deadline:
                stats = run.fake.stats()
                if stats["sent"] >= notifications:
                    break
                idle_in_transaction.append(_sessions(run.database_url, "idle in transaction"))
                time.sleep(0.5)
        outcome.cpu = monitor.summary()
        if idle_in_transaction:
            outcome.idle_in_transaction = sum(idle_in_transaction) / len(idle_in_transaction)
        stats = run.fake.stats()
        outcome.sent = stats["sent"]
        outcome.too_many = stats["too_many"]
        outcome.finished = outcome.sent >= notifications
        end = stats["last_sent_at"] if outcome.finished else time.monotonic()
        outcome.seconds = (end - began) if end else float("nan")
        outcome.other_calls = {
            k: v
            for k, v in stats["by"].items()
            if not k.startswith(("sendMessage:200", "getMe", "setWebhook", "deleteWebhook"))
        }
        calls = run.fake.dump(run.directory / "calls.json")
        sends = sorted(
            at for method, _, status, at in calls if method == "sendMessage" and status == 200
        )
        if len(sends) >= 20:
            low, high = sends[len(sends) // 10], sends[len(sends) * 9 // 10]
            outcome.steady_rate = (len(sends) * 8 // 10) / (high - low) if high > low else 0
        outcome.too_many_kinds = _classify_429s(calls)
        per_chat: dict[Any, int] = defaultdict(int)
        for method, chat, status, _ in calls:
            if method == "sendMessage" and status == 200:
                per_chat[chat] += 1
        expected = notifications // chats
        outcome.per_chat_ok = (
            outcome.finished
            and all(n == expected for n in per_chat.values())
            and len(per_chat) == chats
        )
        outcome.duplicates = sum(max(0, n - expected) for n in per_chat.values())
        import psycopg

        url = run.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True) as connection:
            outcome.statuses = dict(
                connection.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
            )
        outcome.log_errors = run.processes.errors()
    for line in outcome.log_errors[:5]:
        print(f"log: {line}", file=sys.stderr)
    return outcome


def _once(result: Delivery) -> str:
    if result.duplicates:
        return f"no: {result.duplicates} sent twice"
    if not result.finished:
        return "none twice (stopped early)"
    return "yes" if result.per_chat_ok else "no"


def _kinds(kinds: dict[str, int]) -> str:
    return f" ({', '.join(f'{v} {k}' for k, v in kinds.items())})" if kinds else ""


def print_delivery(result: Delivery) -> None:
    """Markdown table of the delivery run."""
    threads = os.environ.get("REDESK_WORKER_THREADS", "4")
    print(
        f"{result.workers} `redesk worker` processes ({threads} threads each), shared Redis "
        "limiter; fake Bot API enforcing 1 msg/s per chat and 30 msg/s overall.\n"
    )
    print(
        "| notifications | chats | sent | seconds | msg/s | share of 30/s | steady msg/s "
        "(10–90 %) | 429s | each chat got all, once | outbox rows |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
    print(
        f"| {fmt(result.notifications)} | {fmt(result.chats)} | {fmt(result.sent)} | "
        f"{fmt(result.seconds, 1)}{'' if result.finished else ' (stopped)'} | "
        f"{fmt(result.rate, 1)} | {result.rate / CEILING:.0%} | {fmt(result.steady_rate, 1)} | "
        f"{result.too_many}{_kinds(result.too_many_kinds)} | "
        f"{_once(result)} | {statuses} |"
    )
    if result.other_calls:
        print(f"\nOther answers of the fake: {result.other_calls}")
    print(f"\n{result.cpu}.")
    print(
        f"Database sessions idle in a transaction while sending: "
        f"{result.idle_in_transaction:.1f} on average."
    )
