"""storage: the query layer on real databases, UTC timestamps, and migrations that match the
models."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import StatementError
from sqlmodel import Session, SQLModel, func, select

from bot.runtime import Runtime
from storage import queries
from storage.db import get_engine, session_scope, upgrade
from storage.models import Event, InboxMessage, Person, UTCDateTime, WebMessage, utcnow
from tests.conftest import fresh_pg_database

T = TypeVar("T")


def in_threads(count: int, work: Callable[[], T]) -> list[T]:
    """Runs `work` in `count` threads started together; their results (errors re-raised)."""
    barrier = threading.Barrier(count)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait()
            value = work()
            with lock:
                results.append(value)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def a_person(runtime: Runtime, external_id: str = "p1") -> int:
    with session_scope(runtime.engine) as session:
        person = queries.get_or_create_person(
            session=session, channel="web", external_id=external_id
        )
        assert person.id is not None
        return person.id


# --- inbox --------------------------------------------------------------------------------


def test_add_inbox_stores_a_natural_key_once(runtime: Runtime) -> None:
    # When the same platform message is stored twice
    with session_scope(runtime.engine) as session:
        first = queries.add_inbox(
            session=session,
            channel="web",
            natural_key="chat:1",
            chat_id="chat",
            payload={"text": "a"},
        )
    with session_scope(runtime.engine) as session:
        second = queries.add_inbox(
            session=session,
            channel="web",
            natural_key="chat:1",
            chat_id="chat",
            payload={"text": "changed"},
        )

    # Then the second time returns None and the first payload is kept
    assert isinstance(first, int) and second is None
    with Session(runtime.engine) as session:
        rows = session.exec(select(InboxMessage)).all()
        assert [(row.id, row.payload) for row in rows] == [(first, {"text": "a"})]


def test_add_inbox_keys_are_per_channel(runtime: Runtime) -> None:
    with session_scope(runtime.engine) as session:
        web = queries.add_inbox(
            session=session, channel="web", natural_key="42", chat_id="c", payload={}
        )
        telegram = queries.add_inbox(
            session=session, channel="telegram", natural_key="42", chat_id="c", payload={}
        )

    assert web is not None and telegram is not None and web != telegram


def test_next_pending_inbox_is_the_oldest_pending_of_that_chat(runtime: Runtime) -> None:
    with session_scope(runtime.engine) as session:
        ids = [
            queries.add_inbox(
                session=session, channel="web", natural_key=key, chat_id=chat, payload={}
            )
            for key, chat in (("1", "a"), ("2", "b"), ("3", "a"))
        ]
    with session_scope(runtime.engine) as session:
        first = queries.next_pending_inbox(session=session, channel="web", chat_id="a")
        assert first is not None and first.id == ids[0]
        first.status = "done"
        session.add(first)
    with Session(runtime.engine) as session:
        following = queries.next_pending_inbox(session=session, channel="web", chat_id="a")
        assert following is not None and following.id == ids[2]


# --- request numbers ----------------------------------------------------------------------


def test_next_request_sequence_counts_per_day(runtime: Runtime) -> None:
    with session_scope(runtime.engine) as session:
        values = [queries.next_request_sequence(session=session, day="20260101") for _ in range(3)]
        other_day = queries.next_request_sequence(session=session, day="20260102")

    assert values == [1, 2, 3] and other_day == 1


def test_next_request_sequence_gives_distinct_values_to_concurrent_callers(
    runtime: Runtime,
) -> None:
    # Given eight threads each taking five numbers, each number in its own transaction
    def take_five() -> list[int]:
        taken = []
        for _ in range(5):
            with session_scope(runtime.engine) as session:
                taken.append(queries.next_request_sequence(session=session, day="20260101"))
        return taken

    # When they run at once
    results = in_threads(8, take_five)

    # Then every number was given once, without gaps
    values = [value for taken in results for value in taken]
    assert sorted(values) == list(range(1, 41))
    assert all(taken == sorted(taken) for taken in results)


# --- people -------------------------------------------------------------------------------


def test_get_or_create_person_is_idempotent(runtime: Runtime) -> None:
    first = a_person(runtime, "same")
    second = a_person(runtime, "same")
    other = a_person(runtime, "other")

    assert first == second != other


def test_get_or_create_person_updates_a_changed_display_name(runtime: Runtime) -> None:
    with session_scope(runtime.engine) as session:
        queries.get_or_create_person(
            session=session, channel="web", external_id="x", display_name="张三"
        )
    with session_scope(runtime.engine) as session:
        queries.get_or_create_person(
            session=session, channel="web", external_id="x", display_name="张三丰"
        )
    with session_scope(runtime.engine) as session:
        person = queries.get_or_create_person(session=session, channel="web", external_id="x")
        assert person.display_name == "张三丰" and person.role == "requester"


def test_get_or_create_person_under_concurrency_creates_one_person(runtime: Runtime) -> None:
    # When eight workers see the first message of one chat at once
    ids = in_threads(8, lambda: a_person(runtime, "first-contact"))

    # Then they all get the same person, and there is one row
    assert len(set(ids)) == 1
    with Session(runtime.engine) as session:
        assert session.exec(select(func.count()).select_from(Person)).one() == 1


# --- timestamps ---------------------------------------------------------------------------


def test_timestamps_round_trip_as_aware_utc(runtime: Runtime) -> None:
    # Given a moment written in Beijing time
    beijing = timezone(timedelta(hours=8))
    moment = datetime(2026, 1, 1, 9, 30, 15, 123456, tzinfo=beijing)
    with session_scope(runtime.engine) as session:
        event = Event(action="comment", created_at=moment)
        session.add(event)
        session.flush()
        event_id = event.id

    # When it is read back
    with Session(runtime.engine) as session:
        stored = session.get(Event, event_id)
        assert stored is not None

        # Then it is the same instant, tagged UTC
        assert stored.created_at == moment
        assert stored.created_at.tzinfo == UTC
        assert stored.created_at.hour == 1 and stored.created_at.microsecond == 123456


def test_timestamps_compare_in_queries_across_time_zones(runtime: Runtime) -> None:
    # A query bound in another zone finds rows by instant, not by wall clock
    with session_scope(runtime.engine) as session:
        session.add(Event(action="comment", created_at=datetime(2026, 1, 1, 1, 0, tzinfo=UTC)))
    beijing_nine = datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    with Session(runtime.engine) as session:
        assert session.exec(select(Event).where(Event.created_at == beijing_nine)).first()
        assert not session.exec(select(Event).where(Event.created_at > beijing_nine)).first()


def test_naive_datetimes_are_refused(runtime: Runtime) -> None:
    with Session(runtime.engine) as session:
        session.add(Event(action="comment", created_at=datetime(2026, 1, 1, 9, 0)))  # noqa: DTZ001

        with pytest.raises(StatementError, match="naive datetimes are not stored"):
            session.flush()


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_the_utc_type_refuses_naive_values_on_every_dialect(dialect: Dialect) -> None:
    naive = datetime(2026, 1, 1)  # noqa: DTZ001

    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(naive, dialect)


def test_the_utc_type_keeps_none() -> None:
    assert UTCDateTime().process_bind_param(None, sqlite.dialect()) is None
    assert UTCDateTime().process_result_value(None, sqlite.dialect()) is None


# --- the web channel ----------------------------------------------------------------------


def test_web_messages_after_returns_a_person_s_messages_by_sequence(runtime: Runtime) -> None:
    # Given messages stored out of sequence order, and another person's
    me, other = a_person(runtime, "me"), a_person(runtime, "other")
    now = utcnow()
    with session_scope(runtime.engine) as session:
        for outbox_id, (person_id, seq) in enumerate(
            [(me, 3), (me, 1), (other, 2), (me, 2), (me, 5), (me, 4)], start=1
        ):
            session.add(
                WebMessage(
                    person_id=person_id,
                    seq=seq,
                    outbox_id=outbox_id,
                    text=f"m{seq}",
                    buttons=[],
                    created_at=now,
                )
            )

    # When they are read
    with Session(runtime.engine) as session:

        def seqs(after: int, limit: int = 100) -> list[int]:
            return [
                row.seq
                for row in queries.web_messages_after(
                    session=session, person_id=me, after=after, limit=limit
                )
            ]

        # Then only theirs come, in sequence order, after the given one
        assert seqs(0) == [1, 2, 3, 4, 5]
        assert seqs(3) == [4, 5]
        assert seqs(5) == []
        assert seqs(0, limit=2) == [1, 2]


def test_add_web_message_numbers_each_person_s_messages_from_one(runtime: Runtime) -> None:
    me, other = a_person(runtime, "me"), a_person(runtime, "other")
    with session_scope(runtime.engine) as session:
        for outbox_id, person_id in enumerate([me, other, me, me], start=1):
            queries.add_web_message(
                session=session,
                person_id=person_id,
                outbox_id=outbox_id,
                text="x",
                buttons=[],
                at=utcnow(),
            )

    with Session(runtime.engine) as session:
        mine = queries.web_messages_after(session=session, person_id=me, after=0)
        theirs = queries.web_messages_after(session=session, person_id=other, after=0)
        assert [row.seq for row in mine] == [1, 2, 3]
        assert [row.seq for row in theirs] == [1]


def test_a_web_token_finds_its_person_until_it_expires(runtime: Runtime) -> None:
    # Given a token valid for an hour
    person_id = a_person(runtime)
    now = utcnow()
    with session_scope(runtime.engine) as session:
        queries.add_web_session(
            session=session,
            token="secret-token",
            person_id=person_id,
            expires_at=now + timedelta(hours=1),
        )

    with Session(runtime.engine) as session:

        def lookup(token: str, at: datetime) -> int | None:
            person = queries.person_for_web_token(session=session, token=token, now=at)
            return person.id if person else None

        # Then it is valid now, not at or after its expiry, and an unknown token never is
        assert lookup("secret-token", now) == person_id
        assert lookup("secret-token", now + timedelta(hours=1)) is None
        assert lookup("secret-token", now + timedelta(days=1)) is None
        assert lookup("other-token", now) is None
        assert lookup("", now) is None


def test_only_the_digest_of_a_web_token_is_stored(runtime: Runtime) -> None:
    person_id = a_person(runtime)
    with session_scope(runtime.engine) as session:
        queries.add_web_session(
            session=session,
            token="secret-token",
            person_id=person_id,
            expires_at=utcnow() + timedelta(hours=1),
        )

    with Session(runtime.engine) as session:
        stored = session.execute(text("SELECT token_hash FROM web_sessions")).scalar_one()
    assert stored == queries.digest("secret-token") and "secret" not in stored


# --- migrations ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nobody has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with fresh_pg_database("redesk_fresh") as url:
        yield url


def test_the_migrations_on_a_fresh_database_match_the_models(fresh_url: str) -> None:
    # Given a fresh database brought to the newest revision
    upgrade(fresh_url)

    # When alembic compares it with the models
    with get_engine(fresh_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
        revision = context.get_current_revision()

    # Then there is nothing left to migrate
    assert differences == []
    assert revision is not None


def test_upgrading_twice_changes_nothing(fresh_url: str) -> None:
    upgrade(fresh_url)
    upgrade(fresh_url)

    with get_engine(fresh_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_a_database_error_does_not_carry_the_statements_values(runtime: Runtime) -> None:
    # Given a person, and a second insert of the same identity with a name and a phone
    with session_scope(runtime.engine) as session:
        session.add(Person(channel="web", external_id="dup"))

    # When the database refuses it
    with pytest.raises(StatementError) as refused:
        with session_scope(runtime.engine) as session:
            session.add(
                Person(channel="web", external_id="dup", display_name="张秘密", phone="13812345678")
            )

    # Then its message (which ends up in logs) names the statement, not the values
    message = str(refused.value)
    assert "INSERT INTO people" in message
    assert "张秘密" not in message and "13812345678" not in message
