"""bot/dispatch: the inbox is handled once and in order, the outbox delivered once and in order,
failures are retried or given up, and the sweeper finds what was left."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from bot import dispatch, handlers
from bot.channels import web
from bot.channels.base import PermanentSendError, TransientSendError, Unreachable
from bot.runtime import Runtime
from bot.texts import Rendered
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import (
    InboxMessage,
    InboxStatus,
    OutboxMessage,
    OutboxStatus,
    Person,
    WebMessage,
    utcnow,
)
from storage.settings import Settings
from tests.utils.harness import Desk, Identity

_keys = itertools.count(1)


def store(desk: Desk, who: Identity, *texts: str) -> list[int]:
    """Stores messages in the inbox without handling them; their inbox ids."""
    ids = []
    with session_scope(desk.runtime.engine) as session:
        for text in texts:
            inbox_id = queries.add_inbox(
                session=session,
                channel=web.CHANNEL,
                natural_key=f"{who.chat_id}:stored-{next(_keys)}",
                chat_id=who.chat_id,
                payload={"text": text},
            )
            assert inbox_id is not None
            ids.append(inbox_id)
    return ids


def inbox_row(desk: Desk, inbox_id: int) -> InboxMessage:
    with Session(desk.runtime.engine) as session:
        row = session.get(InboxMessage, inbox_id)
        assert row is not None
        return row


def outbox_rows(desk: Desk, person_id: int) -> list[OutboxMessage]:
    with Session(desk.runtime.engine) as session:
        return list(
            session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.person_id == person_id)
                .order_by(OutboxMessage.id)  # type: ignore[arg-type]
            ).all()
        )


def web_messages(desk: Desk, person_id: int) -> list[WebMessage]:
    with Session(desk.runtime.engine) as session:
        return list(
            session.exec(
                select(WebMessage).where(WebMessage.person_id == person_id).order_by(WebMessage.id)  # type: ignore[arg-type]
            ).all()
        )


def count(desk: Desk, model: Any) -> int:
    with Session(desk.runtime.engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


# --- inbox --------------------------------------------------------------------------------


def test_the_same_client_message_id_posted_twice_is_handled_once(desk: Desk) -> None:
    # Given a resident
    resident = desk.identity("张三")

    # When the web client posts the same message id twice (a retry after a timeout)
    first = resident.send("路灯坏了", client_id="c-1")
    second = resident.send("路灯坏了", client_id="c-1")

    # Then there is one inbox row, one request and one receipt
    assert count(desk, InboxMessage) == 1
    assert len(desk.requests()) == 1
    assert len(first) == 1 and second == []
    assert len(web_messages(desk, resident.person_id)) == 1


def test_a_new_client_message_id_is_a_new_message(desk: Desk) -> None:
    resident = desk.identity()

    resident.send("路灯坏了", client_id="c-1")
    resident.send("路灯坏了", client_id="c-2")

    assert len(desk.requests()) == 2


def test_the_messages_of_one_chat_are_handled_in_the_order_they_came(desk: Desk) -> None:
    # Given three messages stored before anything is handled
    resident = desk.identity()
    store(desk, resident, "第一件：路灯坏了", "第二件：下水道堵了", "第三件：噪音扰民")

    # When the chat is processed
    dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)
    desk.work()

    # Then the requests are numbered in that order, and the receipts came in that order
    requests = desk.requests()
    assert [r.text[:3] for r in requests] == ["第一件", "第二件", "第三件"]
    assert [r.number for r in requests] == sorted(r.number for r in requests)
    receipts = resident.new_messages()
    assert [m.seq for m in receipts] == [1, 2, 3]
    assert [r.number in m.text for r, m in zip(requests, receipts, strict=True)] == [True] * 3


def test_a_command_that_depends_on_an_earlier_one_of_the_same_chat_succeeds(desk: Desk) -> None:
    # Given a new request, and a worker's 受理 and 办结 stored together
    worker = desk.worker()
    desk.identity().send("路灯坏了")
    number = desk.requests()[0].number
    store(desk, worker, f"受理 {number}", f"办结 {number} 已修好")

    # When the worker's chat is processed
    dispatch.process_chat(desk.runtime, web.CHANNEL, worker.chat_id)

    # Then both ran, in order
    assert desk.request(number).state == "review"


def test_a_handler_crash_keeps_the_message_pending_and_asks_for_a_retry(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a handler that crashes once, and two messages of one chat
    resident = desk.identity()
    [crashing, waiting] = store(desk, resident, "路灯坏了", "下水道堵了")
    real_handle = handlers.handle
    crashes = []

    def crash_once(*args: Any, **kwargs: Any) -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("boom")
        real_handle(*args, **kwargs)

    monkeypatch.setattr(handlers, "handle", crash_once)

    # When the chat is processed
    with pytest.raises(dispatch.InboxRetry):
        dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)

    # Then the message is still pending with the attempt counted, nothing was written,
    # and the later message waits behind it
    row = inbox_row(desk, crashing)
    assert row.status == InboxStatus.PENDING and row.attempts == 1
    assert row.error is not None and "RuntimeError: boom" in row.error
    assert inbox_row(desk, waiting).status == InboxStatus.PENDING
    assert desk.requests() == []
    assert outbox_rows(desk, resident.person_id) == []

    # When it is retried
    dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)

    # Then both are handled, in order, and the first counts two attempts
    row = inbox_row(desk, crashing)
    assert row.status == InboxStatus.DONE and row.attempts == 2
    assert [r.text for r in desk.requests()] == ["路灯坏了", "下水道堵了"]


def test_a_crash_rolls_back_what_the_handler_had_written(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a handler that submits the request and then crashes
    resident = desk.identity()
    store(desk, resident, "路灯坏了")
    real_handle = handlers.handle

    def crash_after_work(*args: Any, **kwargs: Any) -> None:
        real_handle(*args, **kwargs)
        raise RuntimeError("after the work")

    monkeypatch.setattr(handlers, "handle", crash_after_work)

    # When the chat is processed
    with pytest.raises(dispatch.InboxRetry):
        dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)

    # Then neither the request, nor its events, nor its messages survive
    assert desk.requests() == []
    assert desk.events() == []
    assert count(desk, OutboxMessage) == 0


def test_a_message_that_keeps_crashing_is_given_up_and_the_person_is_told(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a handler that always crashes on one message
    resident = desk.identity()
    [bad] = store(desk, resident, "会崩溃的消息")
    real_handle = handlers.handle

    def crash_on_bad(tx: Any, person: Any, inbound: Any, natural_key: str) -> None:
        if inbound.text == "会崩溃的消息":
            raise RuntimeError("boom")
        real_handle(tx, person, inbound, natural_key=natural_key)

    monkeypatch.setattr(handlers, "handle", crash_on_bad)

    # When it is tried until the limit, with a good message arriving before the last try
    for _ in range(dispatch.MAX_INBOX_ATTEMPTS - 1):
        with pytest.raises(dispatch.InboxRetry):
            dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)
    store(desk, resident, "路灯坏了")
    written = dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)

    # Then it is failed, the person gets the internal error, and the chat goes on
    row = inbox_row(desk, bad)
    assert row.status == InboxStatus.FAILED
    assert row.attempts == dispatch.MAX_INBOX_ATTEMPTS
    assert len(desk.requests()) == 1
    assert written
    dispatch.deliver(desk.runtime, written[0])
    texts = [m.text for m in resident.new_messages()]
    assert texts[0].startswith("抱歉，系统处理您的消息时出错")
    assert "已受理登记" in texts[1]


# --- outbox -------------------------------------------------------------------------------


def three_receipts(desk: Desk) -> tuple[Identity, list[int]]:
    """A resident with three receipts queued and not delivered; their outbox ids."""
    resident = desk.identity()
    store(desk, resident, "路灯坏了", "下水道堵了", "噪音扰民")
    dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)
    ids = [row.id for row in outbox_rows(desk, resident.person_id)]
    assert len(ids) == 3 and all(i is not None for i in ids)
    return resident, [i for i in ids if i is not None]


def test_deliver_sends_a_person_s_messages_once_and_in_order(desk: Desk) -> None:
    # Given three receipts queued for one resident
    resident, ids = three_receipts(desk)

    # When delivery runs twice (at-least-once queue)
    assert dispatch.deliver(desk.runtime, ids[0]) is None
    assert dispatch.deliver(desk.runtime, ids[0]) is None
    dispatch.deliver(desk.runtime, ids[2])

    # Then each was sent once, with sequence numbers 1, 2, 3 in outbox order
    sent = web_messages(desk, resident.person_id)
    assert [m.seq for m in sent] == [1, 2, 3]
    assert [m.outbox_id for m in sent] == ids
    assert all(
        row.status == OutboxStatus.SENT and row.attempts == 1
        for row in outbox_rows(desk, resident.person_id)
    )
    assert resident.person().web_seq == 3


def test_concurrent_deliveries_to_one_person_send_each_message_once(desk: Desk) -> None:
    # Given three receipts queued
    resident, ids = three_receipts(desk)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            dispatch.deliver(desk.runtime, ids[0])
        except BaseException as exc:
            errors.append(exc)

    # When four workers deliver at once
    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then each message was sent once, without gaps in the sequence
    assert errors == []
    sent = web_messages(desk, resident.person_id)
    assert sorted(m.seq for m in sent) == [1, 2, 3]
    assert sorted(m.outbox_id for m in sent) == ids


def test_deliver_of_an_unknown_outbox_row_does_nothing(desk: Desk) -> None:
    assert dispatch.deliver(desk.runtime, 424242) is None


class ScriptedSender:
    """The web sender, preceded by scripted failures (the edge of the system)."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.real = web.WebSender()
        self.calls = 0

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.real.send(session, person, message, row)


def make_due(desk: Desk, outbox_id: int) -> None:
    """Moves a row's retry time into the past (instead of waiting for it)."""
    with session_scope(desk.runtime.engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == outbox_id)  # type: ignore[arg-type]
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def test_a_transient_failure_schedules_a_retry_and_a_later_call_sends_once(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender that fails once with a transient error
    resident, ids = three_receipts(desk)
    sender = ScriptedSender(TransientSendError("503 Service Unavailable"))
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, sender)
    before = utcnow()

    # When delivery runs
    retry_in = dispatch.deliver(desk.runtime, ids[0])

    # Then nothing was sent, and a retry is scheduled for the first message
    assert retry_in is not None and retry_in > 0
    first = outbox_rows(desk, resident.person_id)[0]
    assert first.status == OutboxStatus.PENDING and first.attempts == 1
    assert first.next_attempt_at is not None and first.next_attempt_at > before
    assert first.last_error == "503 Service Unavailable"
    assert web_messages(desk, resident.person_id) == []

    # When a later call runs after the retry time
    make_due(desk, ids[0])
    assert dispatch.deliver(desk.runtime, ids[0]) is None
    dispatch.deliver(desk.runtime, ids[0])

    # Then every message was sent once, in order
    assert [m.outbox_id for m in web_messages(desk, resident.person_id)] == ids
    assert [m.seq for m in web_messages(desk, resident.person_id)] == [1, 2, 3]


def test_a_sender_bug_counts_as_an_attempt_instead_of_retrying_for_ever(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender that fails once with an unexpected error (a bug, not a send error)
    resident, ids = three_receipts(desk)
    sender = ScriptedSender(ValueError("invalid literal for int()"))
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, sender)

    # When delivery runs
    retry_in = dispatch.deliver(desk.runtime, ids[0])

    # Then the attempt is recorded with the error and a retry is scheduled
    assert retry_in is not None and retry_in > 0
    first = outbox_rows(desk, resident.person_id)[0]
    assert first.status == OutboxStatus.PENDING and first.attempts == 1
    assert first.last_error is not None and "ValueError" in first.last_error

    # And once due again, everything goes out once, in order
    make_due(desk, ids[0])
    dispatch.deliver(desk.runtime, ids[0])
    assert [m.outbox_id for m in web_messages(desk, resident.person_id)] == ids


def test_a_transient_failure_with_retry_after_waits_that_long(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ids = three_receipts(desk)
    monkeypatch.setitem(
        dispatch.SENDERS, web.CHANNEL, ScriptedSender(TransientSendError("429", retry_after=30))
    )

    assert dispatch.deliver(desk.runtime, ids[0]) == 30.0


def test_a_message_waiting_for_a_retry_holds_back_the_later_ones(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the first of three messages failed and waits for its retry
    resident, ids = three_receipts(desk)
    monkeypatch.setitem(
        dispatch.SENDERS, web.CHANNEL, ScriptedSender(TransientSendError("timeout"))
    )
    dispatch.deliver(desk.runtime, ids[0])

    # When delivery runs again before the retry time (another message's job, the sweeper)
    retry_in = dispatch.deliver(desk.runtime, ids[1])

    # Then nothing overtakes the waiting message, and the caller is told to come back
    assert web_messages(desk, resident.person_id) == []
    assert retry_in is not None and retry_in > 0

    # When the retry time has come
    make_due(desk, ids[0])
    dispatch.deliver(desk.runtime, ids[1])

    # Then they arrive in order
    assert [m.outbox_id for m in web_messages(desk, resident.person_id)] == ids


def test_a_message_failing_transiently_too_often_is_failed(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    resident, ids = three_receipts(desk)
    failures = [TransientSendError("down") for _ in range(dispatch.MAX_OUTBOX_ATTEMPTS)]
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, ScriptedSender(*failures))

    for _ in range(dispatch.MAX_OUTBOX_ATTEMPTS):
        dispatch.deliver(desk.runtime, ids[0])
        make_due(desk, ids[0])

    rows = outbox_rows(desk, resident.person_id)
    assert rows[0].status == OutboxStatus.FAILED
    assert rows[0].attempts == dispatch.MAX_OUTBOX_ATTEMPTS
    assert [m.outbox_id for m in web_messages(desk, resident.person_id)] == ids[1:]


def test_an_unreachable_person_is_marked_and_their_messages_skipped(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sender saying the person blocked the bot
    resident, ids = three_receipts(desk)
    sender = ScriptedSender(Unreachable("403 blocked by the user"))
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, sender)

    # When delivery runs
    assert dispatch.deliver(desk.runtime, ids[0]) is None

    # Then the person is unreachable, every message is skipped, and no send is tried again
    assert resident.person().unreachable is True
    assert [row.status for row in outbox_rows(desk, resident.person_id)] == [
        OutboxStatus.SKIPPED
    ] * 3
    assert sender.calls == 1
    assert web_messages(desk, resident.person_id) == []


def test_an_unreachable_worker_gets_no_more_cards(desk: Desk) -> None:
    # Given a worker who became unreachable
    gone = desk.worker("离职的")
    present = desk.worker("在岗的")
    with session_scope(desk.runtime.engine) as session:
        session.execute(
            update(Person)
            .where(Person.id == gone.person_id)  # type: ignore[arg-type]
            .values(unreachable=True)
        )

    # When a request comes in
    desk.identity().send("路灯坏了")

    # Then only the reachable worker gets the card
    assert [row.key for row in outbox_rows(desk, gone.person_id)] == ["reply.bound"]
    assert [row.key for row in outbox_rows(desk, present.person_id)] == ["reply.bound", "card.new"]


def test_a_permanent_failure_fails_one_message_and_the_next_ones_go_out(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    resident, ids = three_receipts(desk)
    monkeypatch.setitem(
        dispatch.SENDERS,
        web.CHANNEL,
        ScriptedSender(PermanentSendError("400 message is malformed")),
    )

    dispatch.deliver(desk.runtime, ids[0])

    rows = outbox_rows(desk, resident.person_id)
    assert [row.status for row in rows] == [
        OutboxStatus.FAILED,
        OutboxStatus.SENT,
        OutboxStatus.SENT,
    ]
    assert [m.seq for m in web_messages(desk, resident.person_id)] == [1, 2]


def test_first_per_person_picks_one_outbox_row_per_recipient(desk: Desk) -> None:
    desk.worker("甲")
    desk.worker("乙")
    resident = desk.identity()
    store(desk, resident, "路灯坏了")

    written = dispatch.process_chat(desk.runtime, web.CHANNEL, resident.chat_id)
    chosen = dispatch.first_per_person(desk.runtime, written)

    # The receipt and a card for each worker: three recipients
    assert len(written) == 3 and len(chosen) == 3
    assert dispatch.first_per_person(desk.runtime, written + written) == chosen


# --- the sweeper --------------------------------------------------------------------------


@pytest.fixture
def patient(db_url: str) -> Runtime:
    """A runtime whose sweeper leaves rows alone for a minute."""
    settings = Settings(database_url=db_url, redis_url=None, sweep_grace=60, _env_file=None)  # type: ignore[call-arg]
    return Runtime(settings=settings, engine=get_engine(db_url))


def age(desk: Desk, model: Any, row_id: int, **columns: Any) -> None:
    with session_scope(desk.runtime.engine) as session:
        session.execute(update(model).where(model.id == row_id).values(**columns))


def test_stale_work_returns_only_rows_older_than_the_grace(desk: Desk, patient: Runtime) -> None:
    # Given pending inbox rows of two chats (one fresh, one old) and a finished old one
    old_chat, fresh_chat, done_chat = desk.identity(), desk.identity(), desk.identity()
    long_ago = utcnow() - timedelta(minutes=5)
    [old] = store(desk, old_chat, "路灯坏了")
    store(desk, fresh_chat, "下水道堵了")
    [done] = store(desk, done_chat, "噪音扰民")
    age(desk, InboxMessage, old, received_at=long_ago)
    age(desk, InboxMessage, done, received_at=long_ago, status=InboxStatus.DONE)

    # And outbox rows: old and due, old but retrying later, old and sent, fresh
    with session_scope(desk.runtime.engine) as session:
        rows = [
            queries.add_outbox(
                session=session,
                idempotency_key=f"t:{i}",
                person_id=fresh_chat.person_id,
                key="reply.empty_todo",
                params={},
                request_id=None,
                at=at,
            )
            for i, at in enumerate([long_ago, long_ago, long_ago, utcnow()])
        ]
        session.flush()
        due, later, sent, _ = (row.id for row in rows)
    age(desk, OutboxMessage, later, next_attempt_at=utcnow() + timedelta(minutes=5))
    age(desk, OutboxMessage, sent, status=OutboxStatus.SENT)

    # When the sweeper looks
    chats, outbox = dispatch.stale_work(patient)

    # Then it finds the old pending chat and the old due message only
    assert chats == [(web.CHANNEL, old_chat.chat_id)]
    assert outbox == [due]


def test_stale_work_returns_each_chat_once(desk: Desk, patient: Runtime) -> None:
    chat = desk.identity()
    ids = store(desk, chat, "一", "二", "三")
    for inbox_id in ids:
        age(desk, InboxMessage, inbox_id, received_at=utcnow() - timedelta(minutes=5))

    chats, _ = dispatch.stale_work(patient)

    assert chats == [(web.CHANNEL, chat.chat_id)]


def test_nothing_is_stale_right_after_it_was_stored(desk: Desk, patient: Runtime) -> None:
    store(desk, desk.identity(), "路灯坏了")

    assert dispatch.stale_work(patient) == ([], [])
    assert dispatch.stale_work(patient, grace=-86400)[0] != []


class PlatformSender:
    """A sender standing for a platform: every call is recorded where the platform would be,
    and a button token is stored for it (as the Telegram sender stores its buttons')."""

    def __init__(self, after_call: Any) -> None:
        self.platform: list[int | None] = []
        self.after_call = after_call

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        assert person.id is not None
        self.platform.append(row.id)
        queries.add_button_token(
            session=session,
            token=f"button-{row.id}",
            person_id=person.id,
            action=f"查询 {row.id}",
            at=utcnow(),
        )
        self.after_call()


def test_a_send_the_platform_took_while_the_database_failed_is_recorded_not_repeated(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a platform sender after each of whose calls the flush that records it fails (the
    # database went away between the platform's answer and the commit), and the first
    # attempt to record it again fails too (it is still away)
    resident, ids = three_receipts(desk)
    failing = {"flush": False, "record": 1}

    def database_goes_away() -> None:
        failing["flush"] = True

    def flushed(session: Any, _context: Any) -> None:
        if failing["flush"] and any(isinstance(obj, OutboxMessage) for obj in session.dirty):
            failing["flush"] = False
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    real_write = dispatch._Writes.write

    def write(self: Any, session: Session) -> None:
        if failing["record"]:
            failing["record"] -= 1
            raise OperationalError("UPDATE", {}, Exception("connection refused"))
        real_write(self, session)

    monkeypatch.setattr(dispatch._Writes, "write", write)
    sender = PlatformSender(database_goes_away)
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, sender)
    monkeypatch.setattr(dispatch, "LOCAL_CHANNELS", frozenset())
    monkeypatch.setattr(dispatch, "CONFIRM_PAUSE", 0.0)
    event.listen(Session, "after_flush", flushed)
    try:
        # When delivery runs
        assert dispatch.deliver(desk.runtime, ids[0]) is None
    finally:
        event.remove(Session, "after_flush", flushed)

    # Then the platform got each message once, in order, and each row is recorded as sent
    # after one attempt, with what the send wrote (its button token)
    assert sender.platform == ids
    rows = outbox_rows(desk, resident.person_id)
    assert [(row.status, row.attempts) for row in rows] == [(OutboxStatus.SENT, 1)] * 3
    assert all(row.sent_at is not None for row in rows)
    with Session(desk.runtime.engine) as session:
        for outbox_id in ids:
            token = queries.get_button_token(session=session, token=f"button-{outbox_id}")
            assert token is not None and token.action == f"查询 {outbox_id}"
            assert token.person_id == resident.person_id

    # And a later delivery finds nothing left to send
    assert dispatch.deliver(desk.runtime, ids[0]) is None
    assert sender.platform == ids


def test_a_database_failure_before_the_platform_is_called_is_raised_for_a_retry(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a database that fails the first write of a delivery, before any send
    resident, ids = three_receipts(desk)
    sender = PlatformSender(lambda: None)
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, sender)
    monkeypatch.setattr(dispatch, "LOCAL_CHANNELS", frozenset())
    calls = {"n": 0}

    def next_row(**kwargs: Any) -> OutboxMessage | None:
        calls["n"] += 1
        if calls["n"] == 2:  # the first is _pace's read; the second opens the delivery
            raise OperationalError("SELECT", {}, Exception("connection refused"))
        return original(**kwargs)

    original = queries.next_outbox_for
    monkeypatch.setattr(queries, "next_outbox_for", next_row)

    # When delivery runs, the error reaches the actor (which retries it)
    with pytest.raises(OperationalError):
        dispatch.deliver(desk.runtime, ids[0])

    # Then nothing went to the platform and nothing was recorded
    assert sender.platform == []
    assert [row.status for row in outbox_rows(desk, resident.person_id)] == [
        OutboxStatus.PENDING
    ] * 3


def test_rate_limit_answers_do_not_use_up_the_attempts(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a platform that answers "too many requests, come back in 1 s" more times than a
    # message may fail, then takes it
    resident, ids = three_receipts(desk)
    limits = [
        TransientSendError("429 Too Many Requests", retry_after=1.0)
        for _ in range(dispatch.MAX_OUTBOX_ATTEMPTS + 3)
    ]
    sender = ScriptedSender(*limits)
    monkeypatch.setitem(dispatch.SENDERS, web.CHANNEL, sender)

    # When delivery runs again each time the platform said to
    for _ in range(len(limits)):
        assert dispatch.deliver(desk.runtime, ids[0]) == 1.0
        first = outbox_rows(desk, resident.person_id)[0]
        assert (first.status, first.attempts) == (OutboxStatus.PENDING, 0)
        make_due(desk, ids[0])
    assert dispatch.deliver(desk.runtime, ids[0]) is None

    # Then every message went out once, in order, none given up
    assert [row.status for row in outbox_rows(desk, resident.person_id)] == [OutboxStatus.SENT] * 3
    assert [m.outbox_id for m in web_messages(desk, resident.person_id)] == ids
