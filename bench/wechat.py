"""WeChat ingest benchmark: POST /wechat in safe mode against the Telegram webhook and a bare
endpoint, in one run.

WeChat's server waits 5 seconds for the answer to a callback, then drops the connection and
retries (three times in all), so what matters is the tail latency at the highest rate the
server sustains, not only its throughput.

One self-contained run (like bench/telegram.py `ingest`): a new PostgreSQL database, the Redis
database REDESK_BENCH_REDIS_URL (flushed before and after), the tests' fake Bot API in a process
of its own (webhook mode needs its getMe and setWebhook at start), a real `redesk run` with
Telegram in webhook mode and WeChat on in safe mode, **no workers** (the jobs wait in Redis, so
only the ingest path is measured), and the bare app (bench/bare.py) as a separate process.

The callbacks are built like WeChat's by the tests' fake (tests/fakes/wechat.py, `safe=True`):
signed, AES-encrypted text messages, a new MsgId each, from a pool of distinct openids. They are
built shortly before each phase (redesk refuses timestamps more than five minutes old), so the
load generator only writes prepared bytes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen, telegram
from bench.common import (
    ROOT,
    TOKEN,
    WEBHOOK_SECRET,
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

#: Seconds WeChat's server waits for the answer to a callback before it retries.
WECHAT_DEADLINE = 5.0

#: A steady rate is sustained when the p99 latency (from the scheduled instant) stays below this,
#: every callback is answered "success", and the server keeps up (see MAX_GROWTH).
SUSTAINED_P99 = 1.0

#: ... and callbacks waiting for their answer grew by less than this share of the offered rate
#: a second over the second half of the load. An overloaded rate takes a while to push the p99
#: over a second (at 110 % of capacity the queue grows by a tenth of the rate a second), so a
#: short step needs this as well.
MAX_GROWTH = 0.05

#: The open-loop rates tried by default, as shares of the closed-loop throughput POST /wechat
#: showed at full concurrency in the same run (climbed until the first one not sustained).
LADDER = (0.5, 0.75, 0.9, 1.0, 1.1)

#: Largest number of callbacks in flight at once in the open loop. WeChat does not publish how
#: many connections it opens; this is Telegram's default, for comparison.
CONNECTIONS = 40

#: Upper bound of req/s used to size the pool of callbacks built before a closed-loop phase
#: (more are built on the fly, which costs the load generator about 45 µs each).
POOL_RATE = 800

#: The bare answer WeChat expects.
SUCCESS = b"success"


# --- callbacks ------------------------------------------------------------------------------


def callback_request(path: str, query: str, body: bytes) -> bytes:
    """The bytes of one POST of a WeChat callback (XML body, signature in the query)."""
    head = (
        f"POST {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Callbacks:
    """Signed, encrypted text callbacks from `openids` distinct openids, a new MsgId each.

    `prepare(start, count)` builds requests `start` .. `start + count - 1` ahead of a phase;
    calling the object with an index returns that request's bytes (built on the spot, and
    counted in `built_late`, when it was not prepared). `msg_ids` maps every index to its MsgId.
    """

    def __init__(self, openids: int) -> None:
        from tests.fakes.wechat import FakeWeChat, new_openid

        self.fake = FakeWeChat(safe=True)
        self.openids = [new_openid() for _ in range(openids)]
        self.msg_ids: dict[int, int] = {}
        self.built_late = 0
        self._ready: dict[int, bytes] = {}

    def settings_env(self, api_url: str) -> dict[str, str]:
        """REDESK_WECHAT_* for safe mode, with the API at `api_url` (ingest never calls it)."""
        self.fake.start()
        try:
            env = self.fake.settings_env()
        finally:
            self.fake.stop()
        env["REDESK_WECHAT_API_URL"] = api_url
        return env

    def _build(self, index: int) -> bytes:
        callback = self.fake.text(
            self.openids[index % len(self.openids)],
            f"小区{index % 97}号楼门口的路灯不亮了，晚上出行不便（{index}）",
        )
        assert callback.msg_id is not None
        self.msg_ids[index] = callback.msg_id
        return callback_request("/wechat", callback.query, callback.body)

    def prepare(self, start: int, count: int) -> float:
        """Builds the requests of the next phase (dropping unused ones); seconds it took."""
        began = time.perf_counter()
        self._ready = {index: self._build(index) for index in range(start, start + count)}
        return time.perf_counter() - began

    def __call__(self, index: int) -> bytes:
        raw = self._ready.pop(index, None)
        if raw is None:
            self.built_late += 1
            raw = self._build(index)
        return raw


# --- load -----------------------------------------------------------------------------------


@dataclass
class Answers:
    """What one load phase measured."""

    #: Latency of every counted request (after the warm-up), seconds.
    latencies: list[float] = field(default_factory=list)
    #: Status of every counted request.
    statuses: Counter[int] = field(default_factory=Counter)
    #: Every request sent, warm-up included: index -> (status, start of the body).
    replies: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    #: Seconds the counted part lasted.
    seconds: float = 0.0
    #: Open loop: most requests due and not answered at once (on the wire or waiting for a
    #: connection).
    most_in_flight: int = 0
    #: Open loop: the instant of every answer (time.perf_counter), and of the first send.
    completed: list[float] = field(default_factory=list)
    began: float = 0.0

    @property
    def count(self) -> int:
        """Requests counted."""
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        """Counted requests answered per second."""
        return self.count / self.seconds if self.seconds else 0.0


async def closed_loop(
    port: int,
    make: Callable[[int], bytes],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    start: int,
) -> Answers:
    """`concurrency` clients, each sending its next request when the last is answered (as
    bench/loadgen.py `closed_loop`, but every answer is kept for the checks)."""
    answers = Answers()
    counter = iter(range(start, 1 << 62))
    began = time.perf_counter()
    counting_from = began + warmup
    until = counting_from + seconds

    async def client() -> None:
        connection = loadgen.Connection("127.0.0.1", port)
        try:
            while True:
                sent = time.perf_counter()
                if sent >= until:
                    return
                index = next(counter)
                status, body = await connection.request(make(index))
                answers.replies[index] = (status, body[:16])
                if sent >= counting_from:
                    answers.latencies.append(time.perf_counter() - sent)
                    answers.statuses[status] += 1
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    answers.seconds = time.perf_counter() - counting_from
    return answers


async def open_loop(
    port: int,
    make: Callable[[int], bytes],
    *,
    rate: float,
    seconds: float,
    start: int,
    max_connections: int,
) -> Answers:
    """`rate` requests a second on schedule whatever the answers take (as bench/loadgen.py
    `open_loop`); latency runs from the scheduled instant. `seconds` of the answers is the time
    from the first scheduled send to the last answer."""
    answers = Answers()
    idle: list[loadgen.Connection] = []
    free = asyncio.Semaphore(max_connections)
    in_flight = 0
    tasks = []

    async def send(index: int, scheduled: float) -> None:
        nonlocal in_flight
        in_flight += 1
        answers.most_in_flight = max(answers.most_in_flight, in_flight)
        async with free:
            connection = idle.pop() if idle else loadgen.Connection("127.0.0.1", port)
            try:
                status, body = await connection.request(make(index))
            finally:
                idle.append(connection)
        in_flight -= 1
        answers.latencies.append(time.perf_counter() - scheduled)
        answers.statuses[status] += 1
        answers.replies[index] = (status, body[:16])
        answers.completed.append(time.perf_counter())

    began = answers.began = time.perf_counter()
    for offset in range(int(rate * seconds)):
        due = began + offset / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(start + offset, due)))
    await asyncio.gather(*tasks)
    answers.seconds = time.perf_counter() - began
    for connection in idle:
        connection.close()
    return answers


def backlog_growth(answers: Answers, rate: float, seconds: float) -> float:
    """How fast the callbacks waiting for an answer (sent or due, not answered) grew over the
    second half of an open-loop load, per second."""
    total = int(rate * seconds)
    completed = sorted(answers.completed)

    def waiting(at: float) -> int:
        due = min(total, int((at - answers.began) * rate) + 1)
        return due - bisect.bisect_right(completed, at)

    middle, end = answers.began + seconds / 2, answers.began + seconds
    return (waiting(end) - waiting(middle)) / (seconds / 2)


def _successes(answers: Answers) -> set[int]:
    """Indexes of the requests answered 200 "success"."""
    return {
        index
        for index, (status, body) in answers.replies.items()
        if status == 200 and body == SUCCESS
    }


# --- the run --------------------------------------------------------------------------------


@dataclass
class Step:
    """One open-loop rate: POST /wechat at `rate` a second for `seconds`."""

    rate: float
    seconds: float
    requests: int = 0
    answered_per_second: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    success: int = 0
    over_deadline: int = 0
    most_in_flight: int = 0
    growth: float = 0.0
    server_ms: float = float("nan")
    cpu: str = ""

    @property
    def sustained(self) -> bool:
        """Every callback answered "success", p99 below SUSTAINED_P99, and the callbacks waiting
        did not grow by MAX_GROWTH of the rate a second or more (the server kept up)."""
        return (
            self.requests > 0
            and self.success == self.requests
            and self.p99_ms < SUSTAINED_P99 * 1000
            and self.growth < MAX_GROWTH * self.rate
        )


@dataclass
class Report:
    """Everything the WeChat ingest run measured."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    wechat_posted: int = 0
    wechat_success: int = 0
    wechat_stored: int = 0
    wechat_refusals: Counter[str] = field(default_factory=Counter)
    telegram_posted: int = 0
    telegram_ok: int = 0
    telegram_stored: int = 0
    built_late: int = 0
    build_seconds: float = 0.0
    log_errors: list[str] = field(default_factory=list)
    concurrency: int = 0
    max_connections: int = 0


@contextlib.contextmanager
def deployment(wechat_env: dict[str, str]) -> Iterator[telegram.Deployment]:
    """A fresh database, Redis and fake Bot API; `redesk run` with Telegram (webhook mode) and
    WeChat (safe mode) on, no workers; the bare app as process "bare" (its port in
    `env["BENCH_BARE_PORT"]`)."""
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="redesk-bench-")))
        database_url = stack.enter_context(fresh_database("wechat"))
        redis_url = stack.enter_context(fresh_redis())
        fake = stack.enter_context(FakeApi(limits=True, log_path=directory / "fake.log"))
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("REDESK_")}
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
        env.update(wechat_env)
        processes = stack.enter_context(Processes(directory, env))
        processes.run("db", "upgrade")
        processes.run("demo")
        processes.redesk("run", "run")
        wait_healthy(f"http://127.0.0.1:{port}")
        processes.wait_for_log("run", "channel wechat: on")
        bare_port = free_port()
        processes.start(
            "bare", [sys.executable, "-m", "bench.bare", "--port", str(bare_port)], cwd=ROOT
        )
        wait_healthy(f"http://127.0.0.1:{bare_port}")
        env = {**env, "BENCH_BARE_PORT": str(bare_port)}
        yield telegram.Deployment(directory, env, processes, fake, database_url, redis_url, port)


def _server_ms(shares: dict[str, float], label: str, per_second: float) -> float:
    """Milliseconds of CPU the server process spent per answered request."""
    return shares.get(label, 0.0) / per_second * 1000 if per_second else float("nan")


def ingest(
    *,
    seconds: float,
    concurrency: int,
    openids: int,
    chats: int,
    rates: list[float] | None,
    rate_seconds: float,
    max_connections: int,
    refine: bool,
) -> Report:
    """(a) closed loop, `concurrency` clients then one: POST /wechat (redesk, safe mode), POST
    /telegram/webhook (redesk) and the bare app's POST /telegram/webhook and POST /wechat;
    (b) open loop, POST /wechat at the steady `rates` (by default LADDER times the closed-loop
    throughput of (a); stopping after the first rate not sustained, then one rate between the
    last sustained and it when `refine`); then checks that every callback answered "success" is
    in the inbox, once."""
    report = Report(concurrency=concurrency, max_connections=max_connections)
    callbacks = Callbacks(openids)
    wechat_env = callbacks.settings_env(f"http://127.0.0.1:{free_port()}")
    wechat_answers: list[Answers] = []
    telegram_answers: list[Answers] = []
    with deployment(wechat_env) as run:
        bare_port = int(run.env["BENCH_BARE_PORT"])
        bare_telegram = loadgen.post(
            "/telegram/webhook",
            telegram.update_body(0, telegram.FIRST_CHAT),
            {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
        )
        sample = callbacks.fake.text(callbacks.openids[0], "路灯不亮了")
        bare_wechat = callback_request("/wechat", sample.query, sample.body)

        def webhook(index: int) -> bytes:
            return telegram.webhook_request(index, telegram.FIRST_CHAT + index % chats)

        targets: list[tuple[str, str, int, Callable[[int], bytes], str]] = [
            ("POST /wechat (redesk, safe mode)", "wechat", run.port, callbacks, "redesk run"),
            ("POST /telegram/webhook (redesk)", "telegram", run.port, webhook, "redesk run"),
            (
                "POST /telegram/webhook (bare Starlette app)",
                "bare",
                bare_port,
                lambda _: bare_telegram,
                "bare app",
            ),
            (
                "POST /wechat (bare Starlette app)",
                "bare",
                bare_port,
                lambda _: bare_wechat,
                "bare app",
            ),
        ]
        next_index = 0
        for clients, length, warmup in ((concurrency, seconds, 3.0), (1, min(seconds, 5.0), 1.0)):
            for name, kind, port, make, server in targets:
                if kind == "wechat":
                    report.build_seconds += callbacks.prepare(
                        next_index, int((length + warmup) * POOL_RATE)
                    )
                with run.cpu() as cpu:
                    answers = asyncio.run(
                        closed_loop(
                            port,
                            make,
                            concurrency=clients,
                            seconds=length,
                            warmup=warmup,
                            start=next_index,
                        )
                    )
                next_index += 1_000_000
                if kind == "wechat":
                    wechat_answers.append(answers)
                elif kind == "telegram":
                    telegram_answers.append(answers)
                shares = cpu.shares()
                report.rows.append(
                    {
                        "endpoint": name,
                        "kind": kind,
                        "concurrency": clients,
                        "requests": answers.count,
                        "per_second": answers.per_second,
                        "p50_ms": percentile(answers.latencies, 0.5) * 1000,
                        "p99_ms": percentile(answers.latencies, 0.99) * 1000,
                        "not_ok": sum(n for status, n in answers.statuses.items() if status != 200),
                        "server_ms": _server_ms(shares, server, answers.per_second),
                        "cpu": cpu.summary(),
                    }
                )

        def step(rate: float) -> Step:
            nonlocal next_index
            count = int(rate * rate_seconds)
            report.build_seconds += callbacks.prepare(next_index, count)
            with run.cpu() as cpu:
                answers = asyncio.run(
                    open_loop(
                        run.port,
                        callbacks,
                        rate=rate,
                        seconds=rate_seconds,
                        start=next_index,
                        max_connections=max_connections,
                    )
                )
            next_index += 1_000_000
            wechat_answers.append(answers)
            result = Step(
                rate=rate,
                seconds=rate_seconds,
                requests=answers.count,
                answered_per_second=answers.per_second,
                p50_ms=percentile(answers.latencies, 0.5) * 1000,
                p99_ms=percentile(answers.latencies, 0.99) * 1000,
                max_ms=max(answers.latencies, default=float("nan")) * 1000,
                success=len(_successes(answers)),
                over_deadline=sum(1 for x in answers.latencies if x > WECHAT_DEADLINE),
                most_in_flight=answers.most_in_flight,
                growth=backlog_growth(answers, rate, rate_seconds),
                server_ms=_server_ms(cpu.shares(), "redesk run", answers.per_second),
                cpu=cpu.summary(),
            )
            report.steps.append(result)
            return result

        if not rates:
            capacity = next(
                row["per_second"]
                for row in report.rows
                if row["kind"] == "wechat" and row["concurrency"] == concurrency
            )
            rates = [max(10.0, round(capacity * share / 10) * 10) for share in LADDER]
        last_held: float | None = None
        failed: float | None = None
        for rate in rates:
            if step(rate).sustained:
                last_held = rate
            else:
                failed = rate
                break
        if refine and failed is not None:
            lower = last_held if last_held is not None else 0.0
            middle = round((lower + failed) / 2 / 5) * 5 if lower else round(failed / 2)
            if lower < middle < failed:
                step(middle)

        report.wechat_stored = int(
            pg_scalar(run.database_url, "SELECT count(*) FROM inbox WHERE channel = 'wechat'")
        )
        report.telegram_stored = int(
            pg_scalar(run.database_url, "SELECT count(*) FROM inbox WHERE channel = 'telegram'")
        )
        report.log_errors = run.processes.errors()
    for answers in wechat_answers:
        report.wechat_posted += len(answers.replies)
        for status, body in answers.replies.values():
            if not (status == 200 and body == SUCCESS):
                report.wechat_refusals[f"{status} {body.decode(errors='replace')}"] += 1
    report.wechat_success = len(
        {callbacks.msg_ids[index] for answers in wechat_answers for index in _successes(answers)}
    )
    for answers in telegram_answers:
        report.telegram_posted += len(answers.replies)
        report.telegram_ok += sum(1 for status, _ in answers.replies.values() if status == 200)
    report.built_late = callbacks.built_late
    return report


# --- printing -------------------------------------------------------------------------------


def sustained_rate(report: Report) -> Step | None:
    """The highest rate tried that was sustained."""
    held = [step for step in report.steps if step.sustained]
    return max(held, key=lambda step: step.rate) if held else None


def print_report(report: Report) -> None:
    """Markdown tables of the run, the ratios, the CPU and the checks."""
    print("Closed loop:\n")
    print(
        "| endpoint | clients | requests | req/s | p50 ms | p99 ms | non-200 | server CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in report.rows:
        print(
            f"| {row['endpoint']} | {row['concurrency']} | {fmt(row['requests'])} | "
            f"{fmt(row['per_second'])} | {fmt(row['p50_ms'], 1)} | {fmt(row['p99_ms'], 1)} | "
            f"{row['not_ok']} | {fmt(row['server_ms'], 2)} |"
        )
    for clients in sorted({row["concurrency"] for row in report.rows}, reverse=True):
        group = {row["endpoint"]: row for row in report.rows if row["concurrency"] == clients}
        wechat = group["POST /wechat (redesk, safe mode)"]["per_second"]
        webhook = group["POST /telegram/webhook (redesk)"]["per_second"]
        bare_wechat = group["POST /wechat (bare Starlette app)"]["per_second"]
        bare_telegram = group["POST /telegram/webhook (bare Starlette app)"]["per_second"]
        print(
            f"\nRatios of the throughput at {clients} client(s): WeChat / bare /wechat = "
            f"**{wechat / bare_wechat:.3f}**; WeChat / bare /telegram/webhook = "
            f"{wechat / bare_telegram:.3f}; WeChat / Telegram webhook = "
            f"**{wechat / webhook:.2f}** (Telegram webhook / bare /telegram/webhook = "
            f"{webhook / bare_telegram:.3f})."
        )
    print()
    for row in report.rows:
        print(f"- {row['endpoint']}, {row['concurrency']} client(s): {row['cpu']}")

    print(
        f"\nOpen loop, POST /wechat (redesk, safe mode), at most {report.max_connections} "
        "connections, latency from the scheduled instant (most waiting: callbacks due and not "
        "answered at once, on the wire or waiting for a connection):\n"
    )
    print(
        "| offered req/s | s | requests | answered req/s | p50 ms | p99 ms | max ms | "
        'answered "success" | over 5 s | most waiting | backlog growth /s | '
        "server CPU ms/req | sustained |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for step in sorted(report.steps, key=lambda s: s.rate):
        share = step.success / step.requests if step.requests else float("nan")
        print(
            f"| {fmt(step.rate)} | {fmt(step.seconds)} | {fmt(step.requests)} | "
            f"{fmt(step.answered_per_second)} | {fmt(step.p50_ms, 1)} | {fmt(step.p99_ms, 1)} | "
            f"{fmt(step.max_ms)} | {share:.1%} | {step.over_deadline} | {step.most_in_flight} | "
            f"{fmt(step.growth, 1)} | {fmt(step.server_ms, 2)} | "
            f"{'yes' if step.sustained else 'no'} |"
        )
    print()
    for step in sorted(report.steps, key=lambda s: s.rate):
        print(f"- {fmt(step.rate)} req/s: {step.cpu}")
    best = sustained_rate(report)
    if best is None:
        print(
            "\nNo rate tried was sustained (p99 below "
            f'{SUSTAINED_P99 * 1000:.0f} ms, every callback answered "success", backlog '
            f"growth below {MAX_GROWTH:.0%} of the rate a second)."
        )
    else:
        print(
            f"\nHighest steady rate sustained (p99 below {SUSTAINED_P99 * 1000:.0f} ms, every "
            f'callback answered "success", backlog growth below {MAX_GROWTH:.0%} of the '
            f"rate a second): **{fmt(best.rate)} callbacks/s**, p99 "
            f"{fmt(best.p99_ms, 1)} ms = {best.p99_ms / (WECHAT_DEADLINE * 1000):.1%} of "
            f"WeChat's {WECHAT_DEADLINE:g} s deadline (max {fmt(best.max_ms)} ms)."
        )

    same = report.wechat_stored == report.wechat_success
    print(
        f"\nStored: {fmt(report.wechat_stored)} inbox rows with channel 'wechat' for "
        f'{fmt(report.wechat_success)} distinct MsgIds answered "success" '
        f"({fmt(report.wechat_posted)} POST /wechat sent, warm-ups included) — "
        f"{'equal' if same else 'DIFFERENT'}; {fmt(report.telegram_stored)} 'telegram' rows for "
        f"{fmt(report.telegram_ok)} webhooks answered 200 of {fmt(report.telegram_posted)}."
    )
    if report.wechat_refusals:
        refusals = ", ".join(
            f"{reason!r}: {n}" for reason, n in report.wechat_refusals.most_common(5)
        )
        print(f'\nCallbacks not answered "success": {refusals}.')
    print(
        f"\nCallbacks built ahead in {report.build_seconds:.1f} s; {report.built_late} built "
        "during a phase (pool too small)."
    )
    if not same:
        print(
            'WARNING: the inbox does not hold exactly the callbacks answered "success"',
            file=sys.stderr,
        )
    for line in report.log_errors[:10]:
        print(f"log: {line}", file=sys.stderr)
