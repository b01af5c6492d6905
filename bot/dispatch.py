"""The work the actors do: answer a chat's inbox in order, deliver a person's outbox in order,
and sweep up what was left unfinished."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert, inspect, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from bot import handlers, wake
from bot.channels import web
from bot.channels.base import (
    Channel,
    Pacer,
    PermanentSendError,
    Sender,
    SendError,
    TransientSendError,
    Unreachable,
)
from bot.channels.registry import CHANNELS, by_name
from bot.runtime import Runtime
from bot.texts import render
from storage import queries
from storage.db import read_engine, session_scope
from storage.models import Attachment, InboxStatus, OutboxMessage, OutboxStatus, Person, utcnow
from workflow import reminders
from workflow.cards import REFRESH_KEY
from workflow.service import CONSOLE_CHANNEL, DESK_CHANNEL

logger = logging.getLogger(__name__)

#: An inbound message that failed this many times is given up (the person is told).
MAX_INBOX_ATTEMPTS = 3

#: An outbound message that failed this many times is marked failed.
MAX_OUTBOX_ATTEMPTS = 12

#: Seconds a worker keeps trying to record a send the platform took while the database could
#: not commit it (e.g. PostgreSQL restarting); after that the row stays pending and is sent
#: again (at least once).
CONFIRM_PATIENCE = 600.0

#: Seconds between two such attempts.
CONFIRM_PAUSE = 0.5

#: Channel -> a sender used instead of the channel's own (tests, embedding).
SENDERS: dict[str, Sender] = {}

#: Outbox keys that answer a press or edit a card rather than write to the person's own chat:
#: they go out even when that chat is closed (a worker acting only in the committee group).
NOT_TO_CHAT: frozenset[str] = frozenset().union(*(channel.not_to_chat for channel in CHANNELS))

#: Channels whose messages can be updated in place (bot/cards.py records their cards). A card
#: refresh for any other channel (WeChat: no buttons, no edits) is skipped unsent.
CARD_CHANNELS: frozenset[str] = frozenset(channel.name for channel in CHANNELS if channel.cards)

_lazy_senders: dict[tuple[str, int], Sender] = {}
_lazy_lock = threading.Lock()


def sender_for(runtime: Runtime, channel: str) -> Sender | None:
    """The sender of a channel: one given in SENDERS, or the channel's own (made once per
    settings); None when the channel is unknown or off."""
    sender = SENDERS.get(channel)
    if sender is not None:
        return sender
    key = (channel, id(runtime.settings))
    made = _lazy_senders.get(key)
    if made is not None:
        return made
    found = by_name.get(channel)
    if found is None:
        return None
    with _lazy_lock:
        if key not in _lazy_senders:
            made = found.sender(runtime)
            if made is None:
                return None
            _lazy_senders[key] = made
        return _lazy_senders[key]


def _channel(name: str) -> Channel:
    """The channel of an inbox row.

    Raises:
        KeyError: no such channel (the row is kept as failed).
    """
    return by_name[name]


class InboxRetry(Exception):
    """A message could not be handled this time; the actor retries it later."""


def process_chat(
    runtime: Runtime, channel: str, chat_id: str, *, seen_media: list[int] | None = None
) -> list[int]:
    """Handles every pending inbox message of one chat, oldest first, each in one transaction.

    The chat's person row is locked while a message is handled, so two workers never handle
    one chat at once and its messages keep their order.

    Args:
        runtime: The process runtime.
        channel: The chat's channel.
        chat_id: The chat's id on that channel.
        seen_media: When given, the inbox ids of handled messages that carried media files
            are appended to it (their download is to be enqueued).

    Returns:
        Ids of the outbox rows written (their delivery is to be enqueued).
    """
    written: list[int] = []
    while True:
        with session_scope(runtime.engine) as session:
            person = queries.get_or_create_person(
                session=session, channel=channel, external_id=chat_id
            )
            row = queries.next_pending_inbox(session=session, channel=channel, chat_id=chat_id)
            if row is None:
                break
            row.attempts += 1
            tx = runtime.tx(session, f"in:{row.id}")
            # A chat linked to a staff account acts as the account's person, and what is said
            # to that person here is answered in this chat.
            actor = queries.principal_of(session=session, person=person, lock=True)
            if actor is not person:
                assert actor.id is not None
                tx.via[actor.id] = person.id
            try:
                inbound = _channel(channel).to_inbound(chat_id, row.payload)
            except Exception as exc:  # a payload the parser cannot model
                # Parsing again gives the same answer: it is kept as failed at once (for
                # `redesk inbox retry` after an upgrade), and the chat's next messages go on.
                logger.warning(
                    "Inbox message %s cannot be parsed; kept as failed: %s: %s",
                    row.id,
                    type(exc).__name__,
                    exc,
                )
                row.status = InboxStatus.FAILED
                row.error = f"{type(exc).__name__}: {exc}"[:500]
                session.add(row)
                continue
            if inbound.display_name and not person.display_name:
                person.display_name = inbound.display_name[:100]
            if person.unreachable:
                # They wrote again (e.g. unblocked the bot): their chat is worth trying again.
                person.unreachable = False
                session.add(person)
            failure: Exception | None = None
            try:
                with session.begin_nested():
                    hooks = _channel(channel)
                    prepared = hooks.prepare(tx, person, inbound)
                    if prepared is not None:
                        outcome = handlers.handle(
                            tx, actor, prepared, natural_key=f"{channel}:{row.natural_key}"
                        )
                        hooks.finish(tx, person, prepared, outcome)
            except SQLAlchemyError:
                # The database failed, not the message: roll everything back, retry later.
                raise
            except Exception as exc:  # one bad message must not block the chat
                logger.exception("Handling inbox message %s failed", row.id)
                failure = exc
                tx.outbox.clear()
            if failure is None:
                row.status = InboxStatus.DONE
                row.processed_at = tx.now
                if (
                    seen_media is not None
                    and row.id is not None
                    and any(item.get("file_id") for item in inbound.attachments)
                ):
                    seen_media.append(row.id)
            else:
                row.error = f"{type(failure).__name__}: {failure}"[:500]
                if row.attempts >= MAX_INBOX_ATTEMPTS:
                    row.status = InboxStatus.FAILED
                    tx.notify(person, "error.internal")
            session.add(row)
            session.flush()
            written.extend(tx.outbox_ids())
        if queries.changed_requests(session):
            # Committed: the console's live streams may read the change now.
            wake.notify_changed(runtime.settings.redis_url)
        if failure is not None and row.attempts < MAX_INBOX_ATTEMPTS:
            raise InboxRetry(f"inbox message {row.id} will be retried")
    return written


def first_per_person(runtime: Runtime, outbox_ids: list[int]) -> list[int]:
    """One outbox id per recipient: delivering it drains that recipient's queue in order."""
    if not outbox_ids:
        return []
    seen: set[int] = set()
    chosen: list[int] = []
    with session_scope(runtime.engine) as session:
        for outbox_id in outbox_ids:
            row = queries.get_outbox(session=session, outbox_id=outbox_id)
            if row is not None and row.person_id not in seen:
                seen.add(row.person_id)
                chosen.append(outbox_id)
    return chosen


def deliver(runtime: Runtime, outbox_id: int) -> float | None:
    """Sends every due message of the recipient of `outbox_id`, oldest first; a message
    waiting for its retry holds back the later ones, so they never arrive out of order.

    Returns:
        Seconds after which to try again when something is left for later, else None.
    """
    with session_scope(runtime.engine) as session:
        row = queries.get_outbox(session=session, outbox_id=outbox_id)
        if row is None:
            return None
        person_id = row.person_id
    retry_in: float | None = None
    while True:
        retry_in = _pace(runtime, person_id)
        if retry_in is not None:
            break
        writes = _Writes()
        platform_called = False
        stored_for_web = False
        try:
            with session_scope(runtime.engine) as session:
                writes.watch(session)
                person = queries.get_person(session=session, person_id=person_id, lock=True)
                assert person is not None
                now = utcnow()
                row = queries.next_outbox_for(session=session, person_id=person_id)
                if row is None:
                    break
                if row.next_attempt_at is not None and row.next_attempt_at > now:
                    # The oldest message waits for its retry; the later ones must not
                    # overtake it.
                    retry_in = (row.next_attempt_at - now).total_seconds()
                    break
                sender = sender_for(runtime, person.channel)
                retry_in = _deliver_one(session, person, row, sender)
                platform_called = sender is not None and person.channel not in LOCAL_CHANNELS
                stored_for_web = person.channel == web.CHANNEL
        except SQLAlchemyError:
            if not platform_called:
                raise
            # The platform has the message but the database did not take the outcome: sending
            # it again would repeat it, so the outcome is written again until it is taken.
            _record_when_possible(runtime, writes)
        if stored_for_web:
            # Committed: the identity's long polls may read it now.
            wake.notify(runtime.settings.redis_url, person_id)
        if retry_in is not None:
            break
    return retry_in


#: Channels whose "send" is a database write of redesk's own (nothing leaves the process).
LOCAL_CHANNELS: frozenset[str] = frozenset({web.CHANNEL, DESK_CHANNEL, CONSOLE_CHANNEL})


@dataclass
class _Write:
    """One row a flush inserted or updated: its table, key and values."""

    model: type[Any]
    values: dict[str, Any]
    key: dict[str, Any] | None  # None: an insert


class _Writes:
    """What a session writes through the ORM (senders add and change rows; they execute no
    statements of their own), collected before each flush so that it can be written again in
    another transaction when the first one fails."""

    def __init__(self) -> None:
        self.rows: list[_Write] = []

    def watch(self, session: Session) -> None:
        """Collects every later flush of `session`."""
        event.listen(session, "before_flush", self._before_flush)

    def _before_flush(self, session: Session, _context: Any, _instances: Any) -> None:
        for instance in session.new:
            state = inspect(instance)
            values = {attr.key: getattr(instance, attr.key) for attr in state.mapper.column_attrs}
            if values.get("id") is None:
                values.pop("id", None)
            self.rows.append(_Write(type(instance), values, None))
        for instance in session.dirty:
            state = inspect(instance)
            changed = {
                attr.key: getattr(instance, attr.key)
                for attr in state.mapper.column_attrs
                if state.attrs[attr.key].history.has_changes()
            }
            if changed and state.identity is not None:
                key = {
                    column.key: value
                    for column, value in zip(state.mapper.primary_key, state.identity, strict=True)
                }
                self.rows.append(_Write(type(instance), changed, key))

    def write(self, session: Session) -> None:
        """Writes everything collected again, in `session`."""
        for row in self.rows:
            table = row.model.__table__
            if row.key is None:
                session.execute(insert(table).values(**row.values))
            else:
                condition = [table.c[name] == value for name, value in row.key.items()]
                session.execute(update(table).where(*condition).values(**row.values))


def _record_when_possible(runtime: Runtime, writes: _Writes) -> None:
    """Writes `writes` in a new transaction, trying every CONFIRM_PAUSE seconds for at most
    CONFIRM_PATIENCE seconds; past that, the error is raised (the row will be sent again)."""
    deadline = time.monotonic() + CONFIRM_PATIENCE
    logger.warning("A delivery the platform took could not be recorded; retrying the record")
    while True:
        try:
            with session_scope(runtime.engine) as session:
                writes.write(session)
        except (OperationalError, InterfaceError):
            # The database is away (or going away): try again. Other errors are raised.
            if time.monotonic() >= deadline:
                logger.error("Gave up recording a delivery; it may be sent twice")
                raise
            time.sleep(CONFIRM_PAUSE)
        else:
            logger.info("Recorded a delivery the platform took while the database was away")
            return


def _pace(runtime: Runtime, person_id: int) -> float | None:
    """Lets a rate-limited sender wait for the next row's slot before the transaction opens.

    Returns:
        None to go on now; else seconds after which the delivery job should come back.
    """
    with session_scope(read_engine(runtime.engine)) as session:
        person = queries.get_person(session=session, person_id=person_id)
        row = queries.next_outbox_for(session=session, person_id=person_id)
        if person is None or row is None or person.unreachable:
            return None
        if row.next_attempt_at is not None and row.next_attempt_at > utcnow():
            return None
        sender = sender_for(runtime, person.channel)
    if isinstance(sender, Pacer):
        return sender.pace(person, row)
    return None


def _deliver_one(
    session: Any, person: Person, row: OutboxMessage, sender: Sender | None
) -> float | None:
    row.attempts += 1
    now = utcnow()
    no_chat = person.channel in (DESK_CHANNEL, CONSOLE_CHANNEL)
    if no_chat or (person.unreachable and row.key not in NOT_TO_CHAT):
        row.status = OutboxStatus.SKIPPED
        row.last_error = "no chat" if no_chat else "unreachable"
        session.add(row)
        return None
    if row.key == REFRESH_KEY and person.channel not in CARD_CHANNELS:
        row.status = OutboxStatus.SKIPPED
        row.last_error = "no cards on this channel"
        session.add(row)
        return None
    if sender is None:
        # The channel is switched off here; keep the message for when it is switched on.
        row.next_attempt_at = now + timedelta(minutes=5)
        row.last_error = f"channel {person.channel} is off"
        session.add(row)
        return 300.0
    try:
        try:
            sender.send(session, person, render(row.key, row.params), row)
        except (SendError, SQLAlchemyError):
            raise
        except Exception as exc:  # a bug must not retry one row for ever
            logger.exception("Sending outbox row %s failed unexpectedly", row.id)
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from exc
    except TransientSendError as exc:
        if exc.retry_after is not None:
            # A rate limit that says when to come back (Telegram's 429, WeChat's 45009) is
            # not a failed attempt: a long one must not use up MAX_OUTBOX_ATTEMPTS.
            row.attempts -= 1
        delay = exc.retry_after or min(2 ** max(row.attempts, 1), 300)
        row.last_error = str(exc)[:500]
        if row.attempts >= MAX_OUTBOX_ATTEMPTS:
            row.status = OutboxStatus.FAILED
        else:
            row.next_attempt_at = now + timedelta(seconds=delay)
        session.add(row)
        return None if row.status == OutboxStatus.FAILED else float(delay)
    except Unreachable as exc:
        row.status = OutboxStatus.SKIPPED
        row.last_error = str(exc)[:500]
        person.unreachable = True
        session.add(person)
    except PermanentSendError as exc:
        row.status = OutboxStatus.FAILED
        row.last_error = str(exc)[:500]
    else:
        row.status = OutboxStatus.SENT
        row.sent_at = now
    session.add(row)
    return None


def stale_work(
    runtime: Runtime, *, grace: float | None = None
) -> tuple[list[tuple[str, str]], list[int]]:
    """Chats with unfinished inbox rows and outbox rows whose delivery is overdue.

    Args:
        runtime: The process runtime.
        grace: Only rows older than this many seconds (default REDESK_SWEEP_GRACE); a
            negative grace takes every pending row (tests drain with it).
    """
    seconds = runtime.settings.sweep_grace if grace is None else grace
    before = utcnow() - timedelta(seconds=seconds)
    with session_scope(runtime.engine) as session:
        chats = list(
            dict.fromkeys(
                (row.channel, row.chat_id)
                for row in queries.stale_inbox(session=session, before=before)
            )
        )
        outbox = [
            row.id
            for row in queries.stale_outbox(session=session, before=before)
            if row.id is not None
        ]
    return chats, outbox


def fetch_media(runtime: Runtime, limit: int = 20) -> int:
    """Fetches pending media of the channels that are on into REDESK_MEDIA_DIR, a batch at a
    time, oldest first.

    The download happens with no transaction open; each result is written in its own short
    one. A row another worker stored meanwhile is left as that worker wrote it.

    Returns:
        How many attachments were settled (stored, or marked gone).

    Raises:
        TransientSendError: A platform could not be reached; the actor retries later.
    """
    settled = 0
    for found in (channel for channel in CHANNELS if channel.has_media(runtime.settings)):
        channel = found.name
        with session_scope(read_engine(runtime.engine)) as session:
            pending = list(
                queries.unfetched_attachments(session=session, channel=channel, limit=limit)
            )
            for row in pending:
                session.expunge(row)
        for attachment in pending:
            stored = found.fetch_media(runtime.settings, attachment)
            with session_scope(runtime.engine) as session:
                current = session.get(Attachment, attachment.id)
                if current is not None and current.stored_path is None:
                    current.stored_path = stored
                    session.add(current)
                    settled += 1
    return settled


def tick(runtime: Runtime) -> list[int]:
    """One tick of the reminders, escalations, digest and auto-close (workflow/reminders.py).

    Returns:
        Ids of the outbox rows written (their delivery is to be enqueued).
    """
    with session_scope(runtime.engine) as session:
        tx = runtime.tx(session, f"tick:{utcnow().isoformat()}")
        result = reminders.tick(tx, runtime.policy)
        session.flush()
        written = tx.outbox_ids()
    if queries.changed_requests(session):
        wake.notify_changed(runtime.settings.redis_url)
    if result.total():
        logger.info("Tick: %s", ", ".join(f"{kind} {n}" for kind, n in sorted(result.done.items())))
    return written
