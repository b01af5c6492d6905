"""Fault injection: real `redesk` processes, real PostgreSQL and Redis servers the test owns,
and the fake Telegram Bot API (tests/fakes/telegram.py) in the test process.

Residents write through the real webhook the way Telegram delivers updates: each update is
POSTed until it is answered 200 (Telegram retries what is not). Every answer redesk gives is
read from the calls the fake recorded, so "answered once" is counted where the resident would
see it.

Each test records its figures (sent, stored, answered, duplicates, recovery time) with the
`figures` fixture; they are printed at the end of the run (docs/reliability.md quotes them).
Nothing here asserts on time: waits are bounded only so a broken build ends.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.conftest import Deployment, base_env
from tests.e2e.test_telegram_story import telegram_env
from tests.fakes.telegram import FakeTelegram
from tests.faults.servers import PostgresServer, RedisServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/faults/ is in the faults tier (no marker needed in each file)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.faults)


#: The words of the receipt a resident gets for a new request (texts.py "requester.receipt").
RECEIPT = "已受理登记"

#: Seconds the tests wait at most for a load to settle (a bound for broken builds only).
SETTLE_TIMEOUT = 600.0

#: Seconds between two attempts of a webhook POST that was not answered 200.
POST_RETRY_PAUSE = 0.5

#: Seconds one webhook POST may take.
POST_TIMEOUT = 15.0

#: Threads posting updates at once (Telegram opens up to 40 connections per webhook).
POSTING_THREADS = 16

#: Production's processes: (name, verb) of `redesk run`, `redesk worker`, `redesk scheduler`.
PRODUCTION = (("run", "run"), ("worker", "worker"), ("scheduler", "scheduler"))

#: Figures of every fault test of this run, printed at its end.
FIGURES: list[tuple[str, dict[str, Any]]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Prints the figures the fault tests recorded."""
    if not FIGURES:
        return
    terminalreporter.section("fault injection figures")
    for name, values in FIGURES:
        terminalreporter.write_line(f"{name}: {json.dumps(values, ensure_ascii=False)}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures (printed at the end of the run)."""
    values: dict[str, Any] = {}
    yield values
    if values:
        FIGURES.append((request.node.name, values))


class FaultDeployment(Deployment):
    """A deployment whose processes may also be killed (their logs are kept)."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        super().__init__(directory, env)
        #: Processes that ended (killed or stopped) before the end: name -> exit code.
        self.ended: dict[str, int | None] = {}

    def kill(self, name: str) -> None:
        """SIGKILLs the process `name` and waits for it to be gone."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        self.ended[name] = process.wait(timeout=60)

    def terminate(self, name: str) -> int:
        """SIGTERMs the process `name` and waits for its exit code."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            raise AssertionError(f"redesk {name} did not end within 60 s of SIGTERM") from None
        self.ended[name] = code
        return code

    def logs(self) -> str:
        parts = [super().logs()]
        for name, code in self.ended.items():
            path = self.directory / f"{name}.log"
            body = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"===== redesk {name} (ended, exit code {code}) =====\n{body[-20000:]}")
        return "\n".join(parts)


@dataclass
class Desk:
    """A redesk deployment with Telegram on (webhook mode) against the fake."""

    deployment: FaultDeployment
    fake: FakeTelegram
    secret: str
    database_url: str
    #: Every status a webhook POST got (0: no connection / no answer).
    statuses: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def webhook_url(self) -> str:
        return f"{self.deployment.base_url}/telegram/webhook"

    # --- residents -----------------------------------------------------------------------

    def residents(self, count: int, first_id: int = 500_000) -> list[dict[str, Any]]:
        """`count` residents of the fake (Telegram users with private chats)."""
        return [self.fake.user(first_id + index, f"居民{index}") for index in range(count)]

    def reports(self, residents: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
        """One text update per resident: `words` with "{index}" replaced by its index."""
        return [
            self.fake.text_update(resident, words.replace("{index}", str(index)))
            for index, resident in enumerate(residents)
        ]

    def post(self, update: dict[str, Any], *, give_up: float = SETTLE_TIMEOUT) -> list[int]:
        """POSTs `update` like Telegram: again and again until it is answered 200.

        Returns:
            The status of every attempt (0 when nothing answered).
        """
        seen: list[int] = []
        deadline = time.monotonic() + give_up
        while True:
            started = time.monotonic()
            failure: BaseException | None = None
            try:
                status, _ = self.fake.post_webhook(
                    self.webhook_url, update, secret_token=self.secret, timeout=POST_TIMEOUT
                )
            except (urllib.error.URLError, OSError) as exc:
                status, failure = 0, exc
            seen.append(status)
            self.attempted(update, started, status, failure)
            if status == 200:
                return seen
            assert time.monotonic() < deadline, (
                f"update {update['update_id']} never accepted: {seen}\n{self.deployment.logs()}"
            )
            time.sleep(POST_RETRY_PAUSE)

    def attempted(
        self, update: dict[str, Any], started: float, status: int, failure: BaseException | None
    ) -> None:
        """Called after each attempt of `post` (started at `started`, answered `status`, 0
        with `failure` when nothing answered): counts the status."""
        with self._lock:
            self.statuses[status] += 1

    def post_all(
        self,
        updates: Iterable[dict[str, Any]],
        *,
        pause: float = 0.0,
        threads: int = POSTING_THREADS,
    ) -> list[list[int]]:
        """POSTs every update (`threads` at once, `pause` seconds between two starts)."""
        with ThreadPoolExecutor(threads) as pool:
            futures = []
            for update in updates:
                futures.append(pool.submit(self.post, update))
                if pause:
                    time.sleep(pause)
            return [future.result() for future in futures]

    def post_in_background(
        self, updates: list[dict[str, Any]], *, pause: float = 0.0, threads: int = POSTING_THREADS
    ) -> Callable[[], list[list[int]]]:
        """Starts post_all in a thread; returns a function that waits for its result."""
        result: list[list[list[int]]] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                result.append(self.post_all(updates, pause=pause, threads=threads))
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, name="webhook-load", daemon=True)
        thread.start()

        def wait() -> list[list[int]]:
            thread.join(SETTLE_TIMEOUT)
            assert not thread.is_alive(), "the load did not end"
            if failure:
                raise failure[0]
            return result[0]

        return wait

    # --- what redesk did -----------------------------------------------------------------

    def receipts(self) -> Counter[int]:
        """Chat id -> receipts (new-request acknowledgements) the fake delivered to it."""
        return Counter(
            int(call.chat_id)
            for call in self.fake.sent()
            if call.method == "sendMessage"
            and call.chat_id is not None
            and RECEIPT in str(call.params.get("text") or "")
        )

    def delivered(self) -> int:
        """Receipts the fake delivered so far, to everyone."""
        return sum(self.receipts().values())

    def wait_delivered(self, count: int) -> None:
        """Waits until at least `count` receipts were delivered."""
        self.wait_until(f"{count} receipts delivered", lambda: self.delivered() >= count)

    def hold_next_answers(self, sends: int, seconds: float) -> None:
        """The Bot API takes the next `sends` messages but answers them `seconds` late;
        returns once it has taken one (a send is then under way)."""
        before = self.delivered()
        self.fake.delay_next(sends, seconds, "sendMessage")
        self.wait_delivered(before + 1)

    def wait_until(
        self, what: str, predicate: Callable[[], bool], timeout: float = SETTLE_TIMEOUT
    ) -> float:
        """Polls `predicate` until it holds; returns the seconds it took (fails after
        `timeout`, a bound for broken builds, not a speed check)."""
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < timeout, (
                f"{what}: not within {timeout:g} s\n{self.deployment.logs()}"
            )
            time.sleep(0.2)
        return time.monotonic() - started

    def settled(self, residents: list[dict[str, Any]]) -> bool:
        """Every resident has a receipt and nothing is left to do in the database."""
        got = self.receipts()
        if any(got[resident["id"]] == 0 for resident in residents):
            return False
        state = database_state(self.database_url)
        return bool(state["inbox_pending"] == 0 and state["outbox_pending"] == 0)


def database_state(url: str) -> dict[str, Any]:
    """Counts that show whether work is left, lost or repeated."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:

            def one(sql: str) -> int:
                return int(connection.execute(text(sql)).scalar_one())

            per_requester = connection.execute(
                text(
                    "SELECT p.external_id, count(*) FROM requests r JOIN people p "
                    "ON p.id = r.requester_id WHERE p.channel = 'telegram' GROUP BY p.external_id"
                )
            ).all()
            return {
                "inbox": one("SELECT count(*) FROM inbox WHERE channel = 'telegram'"),
                "inbox_pending": one("SELECT count(*) FROM inbox WHERE status = 'pending'"),
                "inbox_failed": one("SELECT count(*) FROM inbox WHERE status = 'failed'"),
                "requests": one("SELECT count(*) FROM requests"),
                "submit_events": one(
                    "SELECT count(*) FROM events WHERE action = 'submit' AND outcome = 'ok'"
                ),
                "requests_without_submit": one(
                    "SELECT count(*) FROM requests r WHERE NOT EXISTS (SELECT 1 FROM events e "
                    "WHERE e.request_id = r.id AND e.action = 'submit')"
                ),
                "receipt_rows": one("SELECT count(*) FROM outbox WHERE key = 'requester.receipt'"),
                "outbox_pending": one("SELECT count(*) FROM outbox WHERE status = 'pending'"),
                "outbox_failed": one("SELECT count(*) FROM outbox WHERE status = 'failed'"),
                "requests_per_requester": {str(chat): int(n) for chat, n in per_requester},
            }
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[Any]:
    """The rows of one SELECT on the database at `url` (its own short-lived engine)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)).all())
    finally:
        engine.dispose()


def pending_receipt_chats(url: str) -> set[int]:
    """Chats whose receipt row is not marked sent yet."""
    rows = query(
        url,
        "SELECT p.external_id FROM outbox o JOIN people p ON p.id = o.person_id "
        "WHERE o.key = 'requester.receipt' AND o.status = 'pending'",
    )
    return {int(row[0]) for row in rows}


def assert_each_stored_and_answered_once(
    desk: Desk, residents: list[dict[str, Any]], *, may_repeat: set[int] | None = None
) -> dict[str, int]:
    """Every resident's update made exactly one request and got exactly one receipt (a chat
    in `may_repeat` may have got two); nothing pending or failed. Returns the figures."""
    state = database_state(desk.database_url)
    got = desk.receipts()
    ids = [resident["id"] for resident in residents]
    missing = [chat for chat in ids if got[chat] == 0]
    repeated = {chat: got[chat] for chat in ids if got[chat] > 1}
    allowed = may_repeat or set()
    assert not missing, f"{len(missing)} residents never got a receipt: {missing[:20]}"
    assert all(got[chat] <= 2 and chat in allowed for chat in repeated), (
        f"receipts repeated outside the unknowable window: {repeated} (allowed: {allowed})"
    )
    per_requester = state["requests_per_requester"]
    wrong = {
        chat: per_requester.get(str(chat), 0)
        for chat in ids
        if per_requester.get(str(chat), 0) != 1
    }
    assert not wrong, f"residents without exactly one request: {wrong}"
    assert state["requests"] == len(residents), state["requests"]
    assert state["inbox"] == len(residents), state["inbox"]
    assert state["submit_events"] == len(residents), state["submit_events"]
    assert state["requests_without_submit"] == 0
    assert state["receipt_rows"] == len(residents)
    assert (state["inbox_pending"], state["inbox_failed"]) == (0, 0), state
    assert (state["outbox_pending"], state["outbox_failed"]) == (0, 0), state
    return {
        "updates_sent": len(residents),
        "inbox_rows": state["inbox"],
        "requests": state["requests"],
        "receipts_delivered": sum(got[chat] for chat in ids),
        "residents_answered": sum(1 for chat in ids if got[chat] > 0),
        "duplicates": sum(count - 1 for count in repeated.values()),
        "lost": len(missing),
    }


@contextmanager
def open_desk(
    directory: Path,
    database_url: str,
    redis_url: str | None,
    *,
    processes: tuple[tuple[str, str], ...],
    extra_env: dict[str, str] | None = None,
) -> Iterator[Desk]:
    """Starts the fake Bot API and the (name, verb) processes of a deployment loaded with
    `redesk demo`; yields once `redesk run` is healthy; then stops what still runs with
    SIGTERM (each must exit 0) and the fake (which must have seen no error of its own)."""
    fake = FakeTelegram().start()
    try:
        secret = secrets.token_urlsafe(24)
        env = telegram_env(base_env(directory, database_url), fake, secret=secret, committee=False)
        if redis_url:
            env["REDESK_REDIS_URL"] = redis_url
        env.update(extra_env or {})
        deployment = FaultDeployment(directory, env)
        if not database_url.startswith("sqlite"):
            deployment.cli("db", "upgrade")
        deployment.cli("demo")
        for name, verb in processes:
            deployment.start(verb, name=name)
        clean = False
        try:
            deployment.wait_until_healthy()
            yield Desk(deployment, fake, secret, database_url)
            clean = True
        finally:
            codes = deployment.stop()
        if clean:
            assert all(code == 0 for code in codes.values()), (
                f"redesk did not shut down cleanly on SIGTERM: {codes}\n{deployment.logs()}"
            )
            assert not fake.errors, fake.errors
    finally:
        fake.stop()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test alone (it may be stopped and started)."""
    server = PostgresServer()
    try:
        yield server.create()
    finally:
        server.destroy()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis server of this test alone (it may be killed and started empty)."""
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.destroy()
