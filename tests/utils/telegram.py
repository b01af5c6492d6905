"""A Telegram harness: updates from the fake Bot API (tests/fakes/telegram.py) are stored the way
the webhook and the poller store them, and the inbox and outbox are worked through
synchronously, so tests read as conversations in Telegram chats."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, select

from bot.channels import telegram
from bot.ratelimit import LocalRateLimiter
from bot.runtime import Runtime
from storage import queries
from storage.db import session_scope
from storage.models import (
    Attachment,
    Event,
    InboxMessage,
    OutboxMessage,
    OutboxStatus,
    Person,
    Request,
    utcnow,
)
from tests.fakes.telegram import Call, FakeTelegram
from tests.utils.harness import Desk

#: The committee group (REDESK_TELEGRAM_COMMITTEE_CHAT).
GROUP = -1001000000001

#: The webhook secret (REDESK_TELEGRAM_WEBHOOK_SECRET).
SECRET = "webhook-secret_0123456789"

#: Seconds `TelegramDesk.work` waits at most for deliveries put off for a moment.
RETRY_WAIT = 3.0

#: A request number in a message.
NUMBER = re.compile(r"SQ-\d{8}-\d{4,}")


class QuickLimiter:
    """bot.ratelimit's LocalRateLimiter on Telegram's intervals divided by `factor`.

    The sender is exercised with the real limiter, only forty times faster, so a conversation
    does not wait a second between two messages to one chat (three in a group). The spacing
    it keeps (30 ms in a private chat) stays well clear of the fakes' own limit (4.5 ms in
    tests/test_telegram.py), so a loaded machine's scheduling jitter between two calls is
    not taken for a sender that ignores the limits.
    """

    def __init__(self, factor: float = 40.0) -> None:
        self.factor = factor
        self.inner = LocalRateLimiter()

    def _scaled(self, slots: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        return [(key, interval / self.factor) for key, interval in slots]

    def reserve_at(self, slots: Sequence[tuple[str, float]]) -> float:
        """See `RateLimiter.reserve_at`."""
        return self.inner.reserve_at(self._scaled(slots))

    def reserve(self, slots: Sequence[tuple[str, float]]) -> float:
        """See `RateLimiter.reserve`."""
        return self.inner.reserve(self._scaled(slots))

    def try_reserve(self, slots: Sequence[tuple[str, float]], within: float) -> tuple[bool, float]:
        """See `RateLimiter.try_reserve`; `within` is not scaled, so the scaled slots are
        always close enough to wait for in place (the harness delivers synchronously)."""
        return self.inner.try_reserve(self._scaled(slots), within)

    def cooldown(self, key: str, seconds: float) -> None:
        """See `RateLimiter.cooldown`."""
        self.inner.cooldown(key, seconds / self.factor)


def text_of(call: Call) -> str:
    """The text a sendMessage delivered."""
    assert isinstance(call.result, dict), call
    return str(call.result.get("text", ""))


def labels(message: Call | dict[str, Any]) -> list[str]:
    """The labels of a sent message's inline buttons."""
    return [label for label, _ in FakeTelegram.buttons(message)]


def button_data(message: Call | dict[str, Any], label: str) -> str:
    """The callback_data of the button labelled `label`."""
    for text, data in FakeTelegram.buttons(message):
        if text == label:
            assert data is not None
            return data
    raise AssertionError(f"no button {label!r} (buttons: {labels(message)})")


def number_in(call: Call) -> str:
    """The first request number a sent message mentions."""
    found = NUMBER.search(text_of(call))
    assert found, f"no request number in {text_of(call)!r}"
    return found.group(0)


class TelegramDesk:
    """redesk's Telegram channel on one database and one fake Bot API, driven synchronously."""

    def __init__(self, runtime: Runtime, fake: FakeTelegram) -> None:
        self.runtime = runtime
        self.fake = fake
        self.desk = Desk(runtime)

    # --- talking -----------------------------------------------------------------------------

    def store(self, update: dict[str, Any]) -> tuple[str | None, bool]:
        """Stores an update as the webhook and the poller do; (chat to handle, is new)."""
        with session_scope(self.runtime.engine) as session:
            return telegram.store_update(session, update)

    def work(self) -> None:
        """Handles every pending inbox row and delivers every outbox row, waiting (at most
        RETRY_WAIT s) for those put off for a moment.

        Delivery here is synchronous, except when the fake answers 429 (retry after 1 s)
        because two calls reached it closer together than they were sent (a busy machine):
        the row then waits for its retry like in production, and the message it holds is
        sent only then. Waiting for it keeps a conversation whole instead of leaving that
        message behind for the test to miss.
        """
        deadline = time.monotonic() + RETRY_WAIT
        while True:
            self.desk.work()
            wait = self._next_retry_in()
            if wait is None or time.monotonic() + wait > deadline:
                return
            time.sleep(wait)

    def _next_retry_in(self) -> float | None:
        """Seconds until the earliest pending outbox row's retry is due (None: none waits)."""
        with Session(self.runtime.engine) as session:
            due = [
                row.next_attempt_at
                for row in session.exec(
                    select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.PENDING)
                ).all()
                if row.next_attempt_at is not None
            ]
        if not due:
            return None
        return max(0.0, (min(due) - utcnow()).total_seconds())

    def feed(self, *updates: dict[str, Any]) -> None:
        """Stores updates, then works everything through."""
        for update in updates:
            self.store(update)
        self.work()

    def say(
        self, user: dict[str, Any], text: str, chat: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """`user` writes `text` (in a private chat unless `chat` is given)."""
        update = self.fake.text_update(user, text, chat)
        self.feed(update)
        return update

    def press(
        self, user: dict[str, Any], message: Call | dict[str, Any], label: str
    ) -> dict[str, Any]:
        """`user` presses the button labelled `label` under `message`."""
        update = self.fake.callback_update(user, button_data(message, label), message)
        self.feed(update)
        return update

    def worker(self, user_id: int, name: str) -> dict[str, Any]:
        """A Telegram user bound as a party worker."""
        user = self.fake.user(user_id, name)
        self.say(user, f"绑定 {self.desk.invite('worker')}")
        assert "绑定成功" in text_of(self.last(user_id))
        return user

    def staff(self, user_id: int, department: str, name: str) -> dict[str, Any]:
        """A Telegram user bound as staff of `department`."""
        user = self.fake.user(user_id, name)
        self.say(user, f"绑定 {self.desk.invite('department', department)}")
        assert "绑定成功" in text_of(self.last(user_id))
        return user

    # --- what the fake API saw ---------------------------------------------------------------

    def messages(self, chat: int) -> list[Call]:
        """Every sendMessage delivered to `chat`, in order."""
        return [call for call in self.fake.sent(chat) if call.method == "sendMessage"]

    def texts(self, chat: int) -> list[str]:
        """The texts delivered to `chat`, in order."""
        return self.fake.texts(chat)

    def last(self, chat: int, containing: str = "") -> Call:
        """The newest sendMessage to `chat` (containing `containing`)."""
        found = [call for call in self.messages(chat) if containing in text_of(call)]
        assert found, f"nothing containing {containing!r} was sent to {chat}"
        return found[-1]

    def answers(self) -> list[dict[str, Any]]:
        """The parameters of every answered callback query, in order."""
        return [call.params for call in self.fake.callback_answers()]

    def answer_to(self, press: dict[str, Any]) -> dict[str, Any]:
        """The parameters of the answerCallbackQuery of one press (the update `press` or
        `feed` sent), which must have been answered exactly once."""
        query_id = str(press["callback_query"]["id"])
        found = [
            params for params in self.answers() if str(params["callback_query_id"]) == query_id
        ]
        assert len(found) == 1, f"press {query_id} answered {len(found)} times: {self.answers()}"
        return found[0]

    def edit_of(self, message: Call | dict[str, Any]) -> dict[str, Any]:
        """The message as the newest successful edit of `message` (a sent Call, or a message
        dict) left it."""
        sent = message.result if isinstance(message, Call) else message
        chat, message_id = sent["chat"]["id"], int(sent["message_id"])
        found = [
            call
            for call in self.fake.edits(chat)
            if int(call.params.get("message_id", 0)) == message_id
        ]
        assert found, f"message {message_id} in chat {chat} was never edited"
        result: dict[str, Any] = found[-1].result
        return result

    def sent_of(self, chat: int, method: str) -> list[Call]:
        """Every successful call of `method` (sendPhoto, sendLocation, ...) to `chat`."""
        return [call for call in self.fake.sent(chat) if call.method == method]

    def footprint(self) -> tuple[Any, ...]:
        """What a press that changes nothing must leave as it was."""
        return (
            [(r.number, r.state, r.department_id, r.handler_id) for r in self.requests()],
            [(e.action, e.outcome) for e in self.events() if e.outcome == "ok"],
            len(self.fake.sent()),
            len(self.fake.edits()),
        )

    # --- the database ------------------------------------------------------------------------

    def request(self, number: str) -> Request:
        """A request row, fresh."""
        return self.desk.request(number)

    def requests(self) -> list[Request]:
        """Every request, oldest first."""
        return self.desk.requests()

    def events(self, number: str | None = None) -> list[Event]:
        """Events (of one request), oldest first."""
        return self.desk.events(number)

    def attachments(self, number: str) -> list[Attachment]:
        """A request's attachment rows, oldest first."""
        request = self.request(number)
        with Session(self.runtime.engine) as session:
            assert request.id is not None
            return list(queries.attachments_of(session=session, request_id=request.id))

    def person(self, user_id: int) -> Person:
        """The person behind a Telegram user or chat id, fresh."""
        with Session(self.runtime.engine) as session:
            found = queries.find_person(
                session=session, channel=telegram.CHANNEL, external_id=str(user_id)
            )
            assert found is not None, f"no person for Telegram id {user_id}"
            return found

    def inbox(self) -> list[InboxMessage]:
        """Every inbox row, oldest first."""
        with Session(self.runtime.engine) as session:
            return list(session.exec(select(InboxMessage).order_by(InboxMessage.id)).all())  # type: ignore[arg-type]

    def outbox(self, after: int = 0) -> list[OutboxMessage]:
        """Outbox rows with an id above `after`, oldest first."""
        with Session(self.runtime.engine) as session:
            return list(
                session.exec(
                    select(OutboxMessage)
                    .where(OutboxMessage.id > after)  # type: ignore[operator]
                    .order_by(OutboxMessage.id)  # type: ignore[arg-type]
                ).all()
            )

    def last_outbox_id(self) -> int:
        """The newest outbox row's id (0 when there is none)."""
        rows = self.outbox()
        return rows[-1].id or 0 if rows else 0
