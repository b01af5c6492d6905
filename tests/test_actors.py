"""The dramatiq actors on a real Redis, worked by an in-process dramatiq Worker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlmodel import Session, select

from bot import actors, dispatch
from bot import runtime as bot_runtime
from bot.app import create_app
from bot.channels import web
from bot.channels.base import TransientSendError
from bot.runtime import Runtime, get_runtime
from bot.texts import Rendered
from storage import queries
from storage.db import session_scope
from storage.models import (
    InboxMessage,
    InboxStatus,
    OutboxMessage,
    OutboxStatus,
    Person,
    WebMessage,
    utcnow,
)
from tests.utils.app import TestClient
from tests.utils.harness import Desk, Identity
from workflow import broker as broker_module

#: Upper bound of every wait, in seconds (a wait normally ends within a fraction of it).
WAIT = 20.0


@pytest.fixture
def actor_runtime(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Runtime]:
    """The process runtime the actors use (get_runtime()), on the database under test."""
    for name in list(os.environ):
        if name.startswith("REDESK_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDESK_DATABASE_URL", db_url)
    bot_runtime.reset()
    yield get_runtime()
    bot_runtime.reset()


@pytest.fixture
def redis_broker(redis_url: str) -> Iterator[RedisBroker]:
    """Redis configured as the broker; the in-process one is restored afterwards."""
    broker = broker_module.configure(redis_url)
    assert isinstance(broker, RedisBroker)
    try:
        yield broker
    finally:
        broker_module.configure(None)
        # RedisBroker.close() leaves its connection pool open.
        broker.client.connection_pool.disconnect()


@pytest.fixture
def start_worker(
    redis_broker: RedisBroker, actor_runtime: Runtime
) -> Iterator[Callable[[], dramatiq.Worker]]:
    """Starts a dramatiq worker on the Redis broker (stopped at the end of the test)."""
    started: list[dramatiq.Worker] = []

    def start() -> dramatiq.Worker:
        worker = dramatiq.Worker(redis_broker, worker_threads=2, worker_timeout=100)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def drain(broker: RedisBroker, worker: dramatiq.Worker) -> None:
    """Waits (bounded) until every queued job, and the jobs those enqueued, has been done."""
    for queue in ("maintenance", "inbound", "outbound"):
        broker.join(queue, timeout=int(WAIT * 1000))
    worker.join()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Polls `condition` until it holds, failing after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def store(runtime: Runtime, identity: Identity, client_id: str, text: str) -> int:
    """Stores a web message in the inbox, as the app does, without enqueueing it."""
    _, payload = web.parse_body({"id": client_id, "text": text}, runtime.settings.max_text_length)
    with session_scope(runtime.engine) as session:
        inbox_id = queries.add_inbox(
            session=session,
            channel=web.CHANNEL,
            natural_key=f"{identity.chat_id}:{client_id}",
            chat_id=identity.chat_id,
            payload=payload,
        )
    assert inbox_id is not None
    return inbox_id


def inbox_status(runtime: Runtime, inbox_id: int) -> str:
    """An inbox row's status, fresh."""
    with Session(runtime.engine) as session:
        row = session.get(InboxMessage, inbox_id)
        assert row is not None
        return row.status


def web_messages_of(runtime: Runtime, identity: Identity) -> list[WebMessage]:
    """Every message delivered to an identity."""
    with Session(runtime.engine) as session:
        return list(
            session.exec(select(WebMessage).where(WebMessage.person_id == identity.person_id)).all()
        )


def resident_desk(runtime: Runtime) -> tuple[Desk, Identity]:
    """A harness with a catch-all category, and a resident."""
    desk = Desk(runtime)
    desk.add_category("其他", [], fallback=True)
    return desk, desk.identity("张三")


def test_a_web_message_enqueued_on_redis_is_answered_by_a_worker(
    actor_runtime: Runtime,
    redis_broker: RedisBroker,
    start_worker: Callable[[], dramatiq.Worker],
) -> None:
    # Given a stored message and a running worker
    desk, resident = resident_desk(actor_runtime)
    inbox_id = store(actor_runtime, resident, "m1", "小区路灯坏了")
    worker = start_worker()

    # When its chat is enqueued
    actors.handle_inbound.send(web.CHANNEL, resident.chat_id)
    drain(redis_broker, worker)

    # Then it is handled and the receipt was delivered to the web identity
    assert inbox_status(actor_runtime, inbox_id) == InboxStatus.DONE
    [request] = desk.requests()
    received = web_messages_of(actor_runtime, resident)
    assert len(received) == 1
    assert request.number in received[0].text


def test_a_message_posted_to_the_app_comes_back_through_redis_and_the_long_poll(
    actor_runtime: Runtime,
    start_worker: Callable[[], dramatiq.Worker],
) -> None:
    # Given the app on the actors' runtime, with Redis as the broker and a worker
    desk, _ = resident_desk(actor_runtime)
    start_worker()
    with TestClient(create_app(actor_runtime)) as client:
        token = client.post("/api/web/session", json={"name": "李四"}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}

        # When a message is posted
        posted = client.post(
            "/api/web/messages", json={"id": "p1", "text": "楼道灯不亮"}, headers=headers
        )

        # Then the long poll returns the receipt once the worker has answered
        found: list[dict[str, object]] = []

        def answered() -> bool:
            found.extend(
                client.get("/api/web/messages?after=0&wait=2", headers=headers).json()["messages"]
            )
            return bool(found)

        assert posted.status_code == 202
        wait_until(answered, "the receipt")
    assert desk.requests()[0].number in str(found[0]["text"])


def test_the_same_message_enqueued_three_times_makes_one_request_and_one_receipt(
    actor_runtime: Runtime,
    redis_broker: RedisBroker,
    start_worker: Callable[[], dramatiq.Worker],
) -> None:
    # Given one stored message
    desk, resident = resident_desk(actor_runtime)
    store(actor_runtime, resident, "m1", "路边井盖丢了")
    worker = start_worker()

    # When its chat is enqueued three times (at-least-once delivery, a sweep, a retry)
    for _ in range(3):
        actors.handle_inbound.send(web.CHANNEL, resident.chat_id)
    drain(redis_broker, worker)

    # Then there is one request and one receipt
    assert len(desk.requests()) == 1
    assert len(web_messages_of(actor_runtime, resident)) == 1

    # And delivering the receipt again sends nothing twice
    with Session(actor_runtime.engine) as session:
        [outbox] = session.exec(select(OutboxMessage)).all()
    assert outbox.status == OutboxStatus.SENT and outbox.id is not None
    for _ in range(3):
        actors.deliver.send(outbox.id)
    drain(redis_broker, worker)
    assert len(web_messages_of(actor_runtime, resident)) == 1


def test_messages_of_one_chat_are_answered_in_order(
    actor_runtime: Runtime,
    redis_broker: RedisBroker,
    start_worker: Callable[[], dramatiq.Worker],
) -> None:
    # Given three messages of one chat, each enqueued
    desk, resident = resident_desk(actor_runtime)
    worker = start_worker()
    for index, text in enumerate(["路灯坏了", "井盖丢了", "垃圾没人收"]):
        store(actor_runtime, resident, f"m{index}", text)
        actors.handle_inbound.send(web.CHANNEL, resident.chat_id)

    # When the workers have done everything
    drain(redis_broker, worker)

    # Then the requests and their receipts follow the order the messages came in
    requests = desk.requests()
    assert [r.text for r in requests] == ["路灯坏了", "井盖丢了", "垃圾没人收"]
    received = sorted(web_messages_of(actor_runtime, resident), key=lambda m: m.seq)
    assert [r.number in m.text for r, m in zip(requests, received, strict=True)] == [True] * 3


def test_the_sweep_re_enqueues_a_message_lost_with_an_emptied_redis(
    actor_runtime: Runtime,
    redis_broker: RedisBroker,
    redis_url: str,
    start_worker: Callable[[], dramatiq.Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stored message whose job Redis lost (it restarted empty)
    desk, resident = resident_desk(actor_runtime)
    inbox_id = store(actor_runtime, resident, "lost", "路灯坏了")
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    worker = start_worker()

    # When a sweep runs within the grace period
    actors.sweep.send()
    drain(redis_broker, worker)

    # Then the fresh row is left to the job that normally follows it
    assert inbox_status(actor_runtime, inbox_id) == InboxStatus.PENDING
    assert web_messages_of(actor_runtime, resident) == []

    # When a sweep runs once the row is older than sweep_grace
    monkeypatch.setenv("REDESK_SWEEP_GRACE", "0")
    bot_runtime.reset()
    assert get_runtime().settings.sweep_grace == 0
    actors.sweep.send()
    drain(redis_broker, worker)

    # Then the message is handled after all, once
    assert inbox_status(actor_runtime, inbox_id) == InboxStatus.DONE
    assert len(desk.requests()) == 1
    assert len(web_messages_of(actor_runtime, resident)) == 1


def add_outbox_for(runtime: Runtime, channel: str, external_id: str) -> int:
    """A pending outbox row for a person on `channel`."""
    with session_scope(runtime.engine) as session:
        person = queries.get_or_create_person(
            session=session, channel=channel, external_id=external_id
        )
        assert person.id is not None
        row = queries.add_outbox(
            session=session,
            idempotency_key=f"test:{channel}:{external_id}",
            person_id=person.id,
            key="error.internal",
            params={},
            request_id=None,
            at=utcnow(),
        )
        session.flush()
        assert row.id is not None
        return row.id


def outbox_row(runtime: Runtime, outbox_id: int) -> OutboxMessage:
    """An outbox row, fresh."""
    with Session(runtime.engine) as session:
        row = session.get(OutboxMessage, outbox_id)
        assert row is not None
        return row


class FlakyPlatform:
    """A platform that is busy at the first attempt and accepts the second (a faked edge)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.received: list[str] = []
        self._lock = threading.Lock()

    def send(self, session: Session, person: Person, message: Rendered, row: OutboxMessage) -> None:
        """Refuses the first message with a short retry-after, then takes them."""
        with self._lock:
            self.attempts += 1
            if self.attempts == 1:
                raise TransientSendError("429 Too Many Requests", retry_after=0.2)
            self.received.append(message.text)


def test_a_delivery_refused_for_now_is_retried_after_a_delay(
    actor_runtime: Runtime,
    redis_broker: RedisBroker,
    start_worker: Callable[[], dramatiq.Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a platform that answers "too many requests" once
    platform = FlakyPlatform()
    monkeypatch.setitem(dispatch.SENDERS, "flaky", platform)
    outbox_id = add_outbox_for(actor_runtime, "flaky", "user-1")
    start_worker()

    # When the delivery is enqueued once
    actors.deliver.send(outbox_id)

    # Then the actor schedules itself again and the second attempt is sent
    wait_until(
        lambda: outbox_row(actor_runtime, outbox_id).status == OutboxStatus.SENT,
        "the retried delivery",
    )
    row = outbox_row(actor_runtime, outbox_id)
    assert row.attempts == 1  # the rate limit is not counted as a failed attempt
    assert row.last_error == "429 Too Many Requests"
    assert platform.attempts == 2
    assert len(platform.received) == 1


def test_a_delivery_to_a_switched_off_channel_waits_in_the_delay_queue(
    actor_runtime: Runtime,
    redis_broker: RedisBroker,
    redis_url: str,
    start_worker: Callable[[], dramatiq.Worker],
) -> None:
    # Given a message to someone on a channel that is off in this process
    outbox_id = add_outbox_for(actor_runtime, "offline", "user-2")
    start_worker()
    client = redis.Redis.from_url(redis_url)

    # When its delivery runs
    actors.deliver.send(outbox_id)

    # Then the message stays pending, and a delayed delivery waits in Redis
    try:
        wait_until(lambda: client.hlen("dramatiq:outbound.DQ.msgs") == 1, "the delayed job")
        [raw] = client.hvals("dramatiq:outbound.DQ.msgs")
    finally:
        client.close()
    assert isinstance(raw, bytes)
    delayed = dramatiq.Message.decode(raw)
    assert delayed.actor_name == "deliver"
    assert list(delayed.args) == [outbox_id]
    assert delayed.options["eta"] - delayed.message_timestamp >= 300_000
    row = outbox_row(actor_runtime, outbox_id)
    assert row.status == OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.last_error is not None and "offline" in row.last_error
