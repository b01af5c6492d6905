"""Deadlines end to end: the tick of real redesk processes reminds, escalates (督办) and closes
unrated answers (自动办结), each exactly once.

Deadlines are hours or days away, so the stories move them: they update the request's row in the
deployment's database (`response_due_at`, `resolution_due_at` or `replied_at` a moment in the
past) and wait, polling, for what the tick (REDESK_TICK_INTERVAL=1) does about it.

"Exactly once" is checked after more ticks have run. Once a story's reminder has arrived, it
moves the response deadlines of PROBE_TICKS probe requests one after the other, each after the
previous probe's reminders arrived. A probe's reminder is written by a tick that read the
database after the move, so the probes prove that many later ticks saw the story's request with
its reminder already done. Each person's messages are delivered in order, so once a probe's
reminder is in a chat, any duplicate written before it is there too. The probes are made before
any worker is bound, so they add no new-request cards to the Telegram worker's chat (paced at
about a message a second).

Two deployments, each with the fake Telegram Bot API in polling mode (tests/fakes/telegram.py):

- the embedded default: SQLite and `redesk run` (in-process worker and scheduler);
- production's shape: PostgreSQL, Redis, `redesk run`, `redesk worker` and two
  `redesk scheduler` (one holds the lease and enqueues; each reminder must still go out once).

Staff: a worker on Telegram, a worker and a leader (党委负责人) on the web desk. No committee
group: a group takes 20 messages a minute, which would slow every story. The 30-working-minute
ping and the 09:00 digest may fire too, depending on the wall clock, so messages are matched by
their content and number, never counted all together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select, update
from sqlmodel import col

from storage.db import get_engine
from storage.models import Event, Reminder, Request
from tests.e2e.client import WebChat
from tests.e2e.conftest import Deployment, held_redis
from tests.e2e.test_telegram_story import TelegramDesk, run_desk

#: Every process ticks once a second.
TICK_ENV = {"REDESK_TICK_INTERVAL": "1"}

#: Later ticks that must have seen a reminder already done before it is counted.
PROBE_TICKS = 3

#: The Redis database of the production-shaped deployment (emptied, held exclusively).
REMINDER_REDIS_URL = "redis://127.0.0.1:6379/13"

#: Seconds a reminder may take to reach the Telegram worker's chat.
STEP = 30.0


@dataclass
class ReminderDesk:
    """A deployment with Telegram on, its staff on both channels, and its database."""

    telegram: TelegramDesk
    http: httpx.Client
    web_worker: WebChat
    leader: WebChat
    engine: Engine
    #: Probe requests not used yet (still 待受理, made before any worker was bound).
    spare_probes: list[str] = field(default_factory=list)

    @property
    def deployment(self) -> Deployment:
        """The redesk processes."""
        return self.telegram.deployment

    @property
    def telegram_worker(self) -> int:
        """The Telegram worker's private chat."""
        assert self.telegram.worker is not None
        worker_id: int = self.telegram.worker["id"]
        return worker_id

    # --- requests -----------------------------------------------------------------------

    def submit(self, *reports: str) -> list[str]:
        """Each report comes from a fresh web resident (sent side by side); their numbers."""
        residents = [WebChat.open(self.http, f"居民{index}") for index in range(len(reports))]
        for resident, report in zip(residents, reports, strict=True):
            resident.send(report)
        return [resident.wait_for("已受理登记").number for resident in residents]

    def probes(self) -> list[str]:
        """PROBE_TICKS requests whose deadlines will later prove that ticks ran."""
        assert len(self.spare_probes) >= PROBE_TICKS, "make more probes in the fixture"
        taken, self.spare_probes = (
            self.spare_probes[:PROBE_TICKS],
            self.spare_probes[PROBE_TICKS:],
        )
        return taken

    # --- the database ---------------------------------------------------------------------

    def set_request(self, number: str, **values: Any) -> None:
        """Updates the request's row (deadlines, timestamps) as if time had passed: the
        moment the tick was to look at it again (`tick_at`) has come too."""
        values.setdefault("tick_at", datetime.now(UTC))
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(Request).where(col(Request.number) == number).values(**values)
            )
        assert changed.rowcount == 1, number

    def overdue(self, number: str, deadline: str) -> None:
        """The request's `deadline` (response_due_at or resolution_due_at) passed a moment
        ago; it was set a minute before."""
        now = datetime.now(UTC)
        self.set_request(
            number,
            deadlines_set_at=now - timedelta(minutes=1),
            **{deadline: now - timedelta(seconds=5)},
        )

    def state(self, number: str) -> str:
        """The request's state."""
        with self.engine.connect() as connection:
            found: str = connection.execute(
                select(Request.state).where(col(Request.number) == number)
            ).scalar_one()
        return found

    def events(self, number: str, action: str) -> list[tuple[str | None, str | None]]:
        """(note, to_state) of the request's events of `action`."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Event.note, Event.to_state)
                .join(Request, col(Request.id) == col(Event.request_id))
                .where(col(Request.number) == number, col(Event.action) == action)
            ).all()
        return [(row[0], row[1]) for row in rows]

    def reminders(self, number: str, kind: str) -> int:
        """How many times the reminder `kind` of the request was claimed."""
        with self.engine.connect() as connection:
            count: int = connection.execute(
                select(func.count())
                .select_from(Reminder)
                .join(Request, col(Request.id) == col(Reminder.request_id))
                .where(col(Request.number) == number, col(Reminder.kind) == kind)
            ).scalar_one()
        return count

    # --- what people got -------------------------------------------------------------------

    def wait_telegram(self, *needles: str) -> None:
        """Waits for a message holding every needle in the Telegram worker's chat."""
        self.telegram.wait_message(self.telegram_worker, *needles, timeout=STEP)

    def telegram_count(self, needle: str) -> int:
        """Messages of the Telegram worker's chat that contain `needle`."""
        return sum(needle in words for words in self.telegram.fake.texts(self.telegram_worker))

    def wait_response_due(self, number: str, *, telegram: bool = True) -> None:
        """Both workers (the web one only, unless `telegram`) get 已超过响应时限 and the leader
        the 督办 for `number`."""
        if telegram:
            self.wait_telegram(f"【{number}】已超过响应时限", "已报告领导督办")
        self.web_worker.wait_for(f"【{number}】已超过响应时限", "已报告领导督办")
        self.leader.wait_for(f"【{number}】督办：已超过响应时限")

    def run_more_ticks(self, probes: list[str], *, telegram: bool = True) -> None:
        """Moves each probe's response deadline after the previous probe's reminders
        arrived: every probe's reminders come from a later tick than everything before.
        Without `telegram`, only the web chats are waited for (the Telegram worker's chat,
        paced at a message a second, may lag behind)."""
        for number in probes:
            self.overdue(number, "response_due_at")
            self.wait_response_due(number, telegram=telegram)

    def assert_response_due_once(self, number: str, *, telegram: bool = True) -> None:
        """Each worker (the web one only, unless `telegram`) got the reminder of `number`
        once, the leader its 督办 once."""
        reminder, escalation = f"【{number}】已超过响应时限", f"【{number}】督办：已超过响应时限"
        got = {
            "web worker": count(self.web_worker, reminder),
            "leader": count(self.leader, escalation),
        }
        if telegram:
            got["telegram worker"] = self.telegram_count(reminder)
        assert set(got.values()) == {1}, f"{number}: {got}\n{self.deployment.logs()}"


def count(chat: WebChat, needle: str) -> int:
    """Messages read so far by a web identity that contain `needle`."""
    return sum(needle in words for words in chat.texts())


def staffed(telegram: TelegramDesk, *, stories: int) -> Iterator[ReminderDesk]:
    """`telegram` with probe requests for `stories` stories, then a worker bound on Telegram,
    and a worker and a leader bound on the web desk."""
    deployment = telegram.deployment
    engine = get_engine(deployment.env["REDESK_DATABASE_URL"])
    try:
        with deployment.http() as http:
            desk = ReminderDesk(
                telegram, http, WebChat.open(http, "网格员刘"), WebChat.open(http, "陈书记"), engine
            )
            residents = [
                WebChat.open(http, f"探针{index}") for index in range(stories * PROBE_TICKS)
            ]
            for resident in residents:
                resident.send(f"{resident.name}：楼道里的声控灯不亮了")
            codes = deployment.invites(("worker",), ("worker",), ("leader",))
            desk.spare_probes = [resident.wait_for("已受理登记").number for resident in residents]
            telegram.worker = telegram.fake.user(2001, "王书记")
            telegram.say(telegram.worker, f"绑定 {codes[0]}")
            desk.web_worker.send(f"绑定 {codes[1]}")
            desk.leader.send(f"绑定 {codes[2]}")
            desk.wait_telegram("绑定成功", "党务工作者")
            desk.web_worker.wait_for("绑定成功", "党务工作者")
            desk.leader.wait_for("绑定成功", "党委负责人")
            yield desk
    finally:
        engine.dispose()


# --- the embedded default ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReminderDesk]:
    """SQLite and `redesk run` (in-process worker and scheduler), Telegram polling."""
    directory: Path = tmp_path_factory.mktemp("redesk-e2e-reminders")
    for telegram in run_desk(
        directory,
        f"sqlite:///{directory / 'redesk.db'}",
        webhook=False,
        committee=False,
        staff=False,
        extra_env=TICK_ENV,
    ):
        yield from staffed(telegram, stories=3)


def response_deadline_story(desk: ReminderDesk, resident_id: int) -> None:
    """A Telegram resident's request passes its response deadline while still 待受理."""
    telegram = desk.telegram
    resident = telegram.fake.user(resident_id, "张三")

    # Given a resident's request on Telegram, which both workers see as a new card
    number = telegram.submit(resident, "我家楼下的路灯坏了，晚上很黑")
    probes = desk.probes()
    desk.wait_telegram(f"【{number}】新诉求")
    desk.web_worker.wait_for(f"【{number}】新诉求")

    # When its response deadline passes and nobody has acted on it
    desk.overdue(number, "response_due_at")

    # Then both workers are reminded, and the leader gets the 督办
    desk.wait_response_due(number)

    # And after more ticks each got it exactly once, with one escalation on record
    desk.run_more_ticks(probes)
    for each in (number, *probes):
        desk.assert_response_due_once(each)
    assert desk.reminders(number, "response_due") == 1
    notes = [note for note, _ in desk.events(number, "escalate")]
    assert len(notes) == 1 and (notes[0] or "").startswith("超期：响应时限"), notes
    assert desk.state(number) == "new"

    # And the resident was not told about the escalation
    assert not any(
        "督办" in words or "时限" in words for words in telegram.fake.texts(resident["id"])
    ), telegram.fake.texts(resident["id"])


def test_a_request_past_its_response_deadline_is_reminded_and_escalated_once(
    embedded: ReminderDesk,
) -> None:
    response_deadline_story(embedded, 1001)


def test_an_accepted_request_past_its_resolution_deadline_reminds_its_handler_only(
    embedded: ReminderDesk,
) -> None:
    desk = embedded

    # Given a request the web worker accepted (做单)
    [number] = desk.submit("小区东门的井盖松动了，车过会响")
    probes = desk.probes()
    desk.web_worker.wait_for(f"【{number}】新诉求")
    desk.web_worker.send(f"受理 {number}")
    desk.web_worker.wait_for(f"【{number}】已受理（做单）")

    # When its resolution deadline passes before it is done
    desk.overdue(number, "resolution_due_at")

    # Then the worker handling it is reminded, and the leader gets the 督办 naming them
    desk.web_worker.wait_for(f"【{number}】已超过办结时限", "请立即办理")
    escalation = desk.leader.wait_for(f"【{number}】督办：已超过办结时限")
    assert "当前处理：网格员刘" in escalation.text, escalation.text

    # And after more ticks: once each, and never to the worker on Telegram (not its holder)
    desk.run_more_ticks(probes)
    reminder = f"【{number}】已超过办结时限"
    got = {
        "web worker": count(desk.web_worker, reminder),
        "leader": count(desk.leader, f"【{number}】督办：已超过办结时限"),
        "telegram worker": desk.telegram_count(reminder),
    }
    assert got == {"web worker": 1, "leader": 1, "telegram worker": 0}, got
    for each in probes:
        desk.assert_response_due_once(each)
    assert desk.reminders(number, "resolution_due") == 1
    notes = [note for note, _ in desk.events(number, "escalate")]
    assert len(notes) == 1 and (notes[0] or "").startswith("超期：办结时限"), notes
    assert desk.state(number) == "handling"


def test_an_answer_nobody_rated_for_eight_days_is_closed_automatically_once(
    embedded: ReminderDesk,
) -> None:
    desk = embedded
    resident = WebChat.open(desk.http, "王五")

    # Given a request the web worker handled and answered (回单)
    resident.send("单元门的门禁坏了，关不上")
    number = resident.wait_for("已受理登记").number
    probes = desk.probes()
    worker = desk.web_worker
    worker.wait_for(f"【{number}】新诉求")
    worker.send(f"受理 {number}")
    worker.wait_for(f"【{number}】已受理（做单）")
    worker.send(f"办结 {number} 已联系物业更换门禁锁")
    worker.wait_for(f"【{number}】待审核回单", "更换门禁锁")
    worker.send(f"回单 {number}")
    worker.wait_for(f"【{number}】已回单")
    resident.wait_for(f"【{number}】您的诉求已办结", "更换门禁锁")

    # When the answer was sent eight days ago and the resident never rated it
    desk.set_request(number, replied_at=datetime.now(UTC) - timedelta(days=8))

    # Then the request is closed and the resident told so
    resident.wait_for(f"【{number}】", "已自动办结")

    # And after more ticks: once, closed as 未评价, with one auto_close event
    desk.run_more_ticks(probes, telegram=False)
    resident.ask(f"查询 {number}", f"【{number}】已办结")
    assert count(resident, "已自动办结") == 1, resident.texts()
    assert desk.state(number) == "closed"
    assert desk.events(number, "auto_close") == [("未评价", "closed")]
    assert desk.reminders(number, "auto_close") == 1
    for each in probes:
        desk.assert_response_due_once(each, telegram=False)


# --- production's shape: PostgreSQL, Redis, two schedulers ------------------------------------


@pytest.fixture(scope="module")
def reminder_redis_url() -> Iterator[str]:
    """Redis database 13, emptied and held exclusively for the module."""
    with held_redis(REMINDER_REDIS_URL) as url:
        yield url


@pytest.fixture(scope="module")
def production(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, reminder_redis_url: str
) -> Iterator[ReminderDesk]:
    """PostgreSQL, Redis, `redesk worker`, two `redesk scheduler` and `redesk run` (polling)."""
    directory: Path = tmp_path_factory.mktemp("redesk-e2e-reminders-redis")
    for telegram in run_desk(
        directory,
        postgres_url,
        webhook=False,
        committee=False,
        processes=(
            ("worker", "worker"),
            ("scheduler-1", "scheduler"),
            ("scheduler-2", "scheduler"),
            ("run", "run"),
        ),
        staff=False,
        extra_env={**TICK_ENV, "REDESK_REDIS_URL": reminder_redis_url},
    ):
        yield from staffed(telegram, stories=1)


def test_two_schedulers_still_remind_and_escalate_once(production: ReminderDesk) -> None:
    # Given two schedulers of one deployment, each ticking every second while it holds the lease
    directory = production.deployment.directory
    logs = [(directory / f"scheduler-{index}.log").read_text() for index in (1, 2)]
    assert all("a tick every 1 s" in log for log in logs), logs

    # Then a request past its response deadline is still reminded and escalated once
    response_deadline_story(production, 1501)
