"""workflow/timebank: the time bank's ledger on SQLite and PostgreSQL — confirmations,
adjustments, redemptions and their refusals (each changes nothing), balances derived from the
movements, and concurrent redemptions on PostgreSQL that never overspend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from storage import queries
from storage.db import session_scope
from storage.models import Centre, HourMovement, MovementKind, Person, Redemption, Reward, Role
from tests.utils import timebank as tb
from tests.utils.world import NOW, World, local
from workflow import timebank
from workflow.errors import (
    AlreadyGiven,
    BalanceShort,
    DailyCapExceeded,
    InvalidInput,
    NotPermitted,
    OutOfStock,
    RewardUnavailable,
    SelfCredit,
    WorkflowError,
)


class Bank:
    """The default centre with a worker and two volunteers, and the ledger's actions in a
    transaction of their own each (committed unless refused)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.engine = world.engine
        self.centre = tb.centre(self.engine)
        self.worker = tb.person(self.engine, Role.WORKER, name="王书记")
        self.volunteer = tb.person(self.engine, name="李志愿")
        self.other = tb.person(self.engine, name="赵志愿")

    def run(self, work: Callable[..., Any], *args: Any, now: datetime = NOW, **kw: Any) -> Any:
        """`work(tx, *args, **kw)` in a transaction of its own at `now`."""
        with session_scope(self.engine) as session:
            return work(self.world.tx(session, now), *args, **kw)

    def confirm(
        self,
        minutes: int,
        *,
        to: Person | None = None,
        by: Person | None = None,
        centre: Centre | None = None,
        now: datetime = NOW,
        cap: int = 12 * 60,
    ) -> Any:
        return self.run(
            timebank.confirm,
            centre or self.centre,
            to or self.volunteer,
            minutes,
            by or self.worker,
            now=now,
            day_cap=cap,
        )

    def refused(self, error: type[WorkflowError], work: Callable[[], object]) -> WorkflowError:
        """Runs `work`, which must raise `error`, and checks that the ledger did not change."""
        before = tb.ledger(self.engine)
        with pytest.raises(error) as raised:
            work()
        assert tb.ledger(self.engine) == before
        return raised.value


@pytest.fixture
def bank(world: World) -> Bank:
    return Bank(world)


# --- confirm ---------------------------------------------------------------------------------


def test_confirming_hours_moves_them_from_the_centre_to_the_volunteer(bank: Bank) -> None:
    # When a worker confirms 90 minutes
    movement = bank.confirm(90)

    # Then the volunteer holds them, the centre issued them, and the worker is on record
    assert tb.balance_of(bank.engine, bank.volunteer) == 90
    with Session(bank.engine) as session:
        centre_account = queries.hour_account(session=session, centre_id=bank.centre.id)
        assert timebank.balance(session, centre_account) == -90
        stored = session.get(HourMovement, movement.id)
        assert stored is not None
        assert stored.kind == MovementKind.CONFIRM
        assert stored.recorded_by_id == bank.worker.id
        assert queries.ledger_total(session=session) == 0


def test_a_volunteer_never_confirms_their_own_hours(bank: Bank) -> None:
    bank.refused(SelfCredit, lambda: bank.confirm(60, by=bank.volunteer))
    assert tb.balance_of(bank.engine, bank.volunteer) == 0


def test_a_worker_who_is_also_the_volunteer_cannot_credit_themselves(bank: Bank) -> None:
    bank.refused(SelfCredit, lambda: bank.confirm(60, to=bank.worker, by=bank.worker))


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.LEADER, Role.DEPARTMENT, Role.GROUP])
def test_only_a_worker_confirms_hours(bank: Bank, role: str) -> None:
    somebody = tb.person(bank.engine, role)
    error = bank.refused(NotPermitted, lambda: bank.confirm(60, by=somebody))
    assert isinstance(error, NotPermitted) and error.reason == "role"


def test_a_worker_of_another_centre_cannot_confirm_hours_here(bank: Bank) -> None:
    # Given a worker of a community centre under the default one
    child = tb.centre(bank.engine, "c1")
    outsider = tb.person(bank.engine, Role.WORKER, centre_id=child.id)

    # Then they cannot confirm hours on the parent's account
    error = bank.refused(NotPermitted, lambda: bank.confirm(60, by=outsider))
    assert isinstance(error, NotPermitted) and error.reason == "centre"
    # but the parent's worker can on the child's
    bank.confirm(60, centre=child)
    assert tb.balance_of(bank.engine, bank.volunteer) == 60


@pytest.mark.parametrize("minutes", [0, -5, timebank.MAX_MINUTES + 1])
def test_confirming_no_or_absurd_minutes_is_refused(bank: Bank, minutes: int) -> None:
    bank.refused(InvalidInput, lambda: bank.confirm(minutes, cap=10**9))


def test_the_day_cap_refuses_what_goes_over_it_and_counts_in_shanghai_days(bank: Bank) -> None:
    # Given 11 hours confirmed at 23:00 Beijing time
    late = local(2026, 3, 2, 23, 0)
    bank.confirm(11 * 60, now=late)

    # When one more hour is fine, a minute more is refused with the figures
    bank.confirm(60, now=late + timedelta(minutes=30))
    error = bank.refused(
        DailyCapExceeded, lambda: bank.confirm(1, now=late + timedelta(minutes=50))
    )
    assert isinstance(error, DailyCapExceeded)
    assert (error.cap, error.already, error.asked) == (720, 720, 1)

    # Then after midnight Beijing time (16:00 UTC) the next day starts afresh
    bank.confirm(12 * 60, now=local(2026, 3, 3, 0, 5))
    assert tb.balance_of(bank.engine, bank.volunteer) == 24 * 60


def test_the_day_cap_is_per_person(bank: Bank) -> None:
    bank.confirm(12 * 60)
    bank.confirm(12 * 60, to=bank.other)
    bank.refused(DailyCapExceeded, lambda: bank.confirm(5))


def test_the_day_cap_comes_from_the_setting(world: World) -> None:
    settings = world.runtime.settings.model_copy(update={"hours_per_day_cap": 2.5})
    assert timebank.day_cap_minutes(settings) == 150
    assert timebank.day_cap_minutes(world.runtime.settings) == timebank.DEFAULT_DAY_CAP_MINUTES


def test_adjustments_do_not_count_against_the_day_cap(bank: Bank) -> None:
    bank.run(timebank.adjust, bank.volunteer, 600, "补录上周", bank.worker)
    bank.confirm(12 * 60)
    assert tb.balance_of(bank.engine, bank.volunteer) == 22 * 60


# --- adjust ----------------------------------------------------------------------------------


def test_an_adjustment_is_a_compensating_movement_either_way(bank: Bank) -> None:
    # Given 3 hours confirmed
    first = bank.confirm(180)

    # When a worker takes one back and an admin (no recorder) adds half an hour
    back = bank.run(timebank.adjust, bank.volunteer, -60, "多记了一小时", bank.worker)
    extra = bank.run(timebank.adjust, bank.volunteer, 30, "补录", None)

    # Then the first movement is unchanged and the balance follows every movement
    assert tb.balance_of(bank.engine, bank.volunteer) == 150
    with Session(bank.engine) as session:
        stored = session.get(HourMovement, first.id)
        assert stored is not None and stored.minutes == 180
        undo = session.get(HourMovement, back.id)
        assert undo is not None and undo.kind == MovementKind.ADJUST
        assert undo.reason == "多记了一小时" and undo.recorded_by_id == bank.worker.id
        added = session.get(HourMovement, extra.id)
        assert added is not None and added.recorded_by_id is None
        assert queries.ledger_total(session=session) == 0


def test_an_adjustment_never_makes_a_balance_negative(bank: Bank) -> None:
    bank.confirm(60)
    error = bank.refused(
        BalanceShort, lambda: bank.run(timebank.adjust, bank.volunteer, -61, "多记", bank.worker)
    )
    assert isinstance(error, BalanceShort) and (error.balance, error.needed) == (60, 61)


@pytest.mark.parametrize("reason", ["", "   ", "理" * (timebank.MAX_REASON + 1)])
def test_an_adjustment_needs_a_reason(bank: Bank, reason: str) -> None:
    error = bank.refused(
        InvalidInput, lambda: bank.run(timebank.adjust, bank.volunteer, 30, reason, bank.worker)
    )
    assert isinstance(error, InvalidInput) and error.what == "reason"


def test_an_adjustment_of_nothing_is_refused(bank: Bank) -> None:
    bank.refused(
        InvalidInput, lambda: bank.run(timebank.adjust, bank.volunteer, 0, "无", bank.worker)
    )


def test_nobody_adjusts_their_own_hours(bank: Bank) -> None:
    bank.refused(
        SelfCredit,
        lambda: bank.run(timebank.adjust, bank.worker, 60, "给自己加", bank.worker),
    )
    bank.refused(
        NotPermitted,
        lambda: bank.run(timebank.adjust, bank.volunteer, 60, "代加", bank.other),
    )


def test_a_movement_cannot_be_edited_in_the_database(bank: Bank) -> None:
    movement = bank.confirm(60)
    with pytest.raises((DBAPIError, IntegrityError)), session_scope(bank.engine) as session:
        session.execute(
            text("UPDATE hour_movements SET minutes = 6000 WHERE id = :id"), {"id": movement.id}
        )
    assert tb.balance_of(bank.engine, bank.volunteer) == 60


# --- redeem and mark_given -------------------------------------------------------------------


def test_redeeming_debits_the_hours_and_takes_one_from_the_stock(bank: Bank) -> None:
    # Given 2 hours and a reward of 1.5 hours, 3 in stock
    bank.confirm(120)
    cup = tb.reward(bank.engine, bank.centre.id or 0, "保温杯", 90, stock=3)

    # When the volunteer redeems it
    redemption = bank.run(timebank.redeem, bank.volunteer, cup)

    # Then the hours went back to the centre and two are left
    assert tb.balance_of(bank.engine, bank.volunteer) == 30
    state = tb.ledger(bank.engine)
    assert state.stocks[cup.id or 0] == 2 and state.total == 0 and state.redemptions == 1
    with Session(bank.engine) as session:
        stored = session.get(Redemption, redemption.id)
        assert stored is not None and stored.given_at is None
        movement = session.get(HourMovement, stored.movement_id)
        assert movement is not None and movement.kind == MovementKind.REDEEM
        assert movement.reward_id == cup.id and movement.recorded_by_id == bank.volunteer.id


def test_a_reward_of_unlimited_stock_stays_unlimited(bank: Bank) -> None:
    bank.confirm(120)
    haircut = tb.reward(bank.engine, bank.centre.id or 0, "理发", 60)
    bank.run(timebank.redeem, bank.volunteer, haircut)
    bank.run(timebank.redeem, bank.volunteer, haircut)
    state = tb.ledger(bank.engine)
    assert state.stocks[haircut.id or 0] is None and state.redemptions == 2
    assert tb.balance_of(bank.engine, bank.volunteer) == 0


def test_redeeming_more_than_the_balance_is_refused(bank: Bank) -> None:
    bank.confirm(59)
    cup = tb.reward(bank.engine, bank.centre.id or 0, "保温杯", 60, stock=1)
    error = bank.refused(BalanceShort, lambda: bank.run(timebank.redeem, bank.volunteer, cup))
    assert isinstance(error, BalanceShort) and (error.balance, error.needed) == (59, 60)


def test_a_volunteer_cannot_spend_another_volunteers_hours(bank: Bank) -> None:
    bank.confirm(120, to=bank.other)
    cup = tb.reward(bank.engine, bank.centre.id or 0, "保温杯", 60, stock=1)
    bank.refused(BalanceShort, lambda: bank.run(timebank.redeem, bank.volunteer, cup))
    assert tb.balance_of(bank.engine, bank.other) == 120


def test_redeeming_what_is_out_of_stock_or_disabled_is_refused(bank: Bank) -> None:
    bank.confirm(600)
    gone = tb.reward(bank.engine, bank.centre.id or 0, "电影票", 60, stock=0)
    bank.refused(OutOfStock, lambda: bank.run(timebank.redeem, bank.volunteer, gone))
    off = tb.reward(bank.engine, bank.centre.id or 0, "旧礼品", 60)
    with session_scope(bank.engine) as session:
        stored = session.get(Reward, off.id)
        assert stored is not None
        stored.active = False
    bank.refused(RewardUnavailable, lambda: bank.run(timebank.redeem, bank.volunteer, off))


def test_the_stock_runs_out_after_the_last_item(bank: Bank) -> None:
    bank.confirm(600)
    last = tb.reward(bank.engine, bank.centre.id or 0, "纪念品", 60, stock=1)
    bank.run(timebank.redeem, bank.volunteer, last)
    bank.refused(OutOfStock, lambda: bank.run(timebank.redeem, bank.volunteer, last))
    assert tb.ledger(bank.engine).stocks[last.id or 0] == 0


def test_a_worker_marks_a_redemption_given_once(bank: Bank) -> None:
    bank.confirm(60)
    cup = tb.reward(bank.engine, bank.centre.id or 0, "保温杯", 60)
    redemption = bank.run(timebank.redeem, bank.volunteer, cup)

    # The redeemer and a resident cannot; the worker can, once
    bank.refused(NotPermitted, lambda: bank.run(timebank.mark_given, redemption, bank.volunteer))
    bank.refused(NotPermitted, lambda: bank.run(timebank.mark_given, redemption, bank.other))
    given = bank.run(timebank.mark_given, redemption, bank.worker)
    assert given.given_by_id == bank.worker.id and given.given_at == NOW
    bank.refused(AlreadyGiven, lambda: bank.run(timebank.mark_given, redemption, bank.worker))


# --- statement -------------------------------------------------------------------------------


def test_a_statement_shows_the_balance_this_years_hours_and_the_last_entries(bank: Bank) -> None:
    # Given hours last year and this year, a correction and a redemption
    bank.confirm(300, now=local(2025, 12, 31, 20))
    bank.confirm(120, now=local(2026, 1, 5, 10))
    bank.run(timebank.adjust, bank.volunteer, -30, "多记", bank.worker, now=local(2026, 1, 6))
    cup = tb.reward(bank.engine, bank.centre.id or 0, "保温杯", 60)
    bank.run(timebank.redeem, bank.volunteer, cup, now=local(2026, 2, 1))

    # When the volunteer reads this year's statement
    with Session(bank.engine) as session:
        result = timebank.statement(session, bank.volunteer, timebank.year_start(NOW))

    # Then
    assert result.balance == 330
    assert result.earned == 90 and result.redeemed == 60
    assert [entry.minutes for entry in result.entries] == [-60, -30, 120, 300]
    assert result.entries[1].recorded_by == "王书记" and result.entries[1].reason == "多记"


def test_a_person_without_an_account_has_an_empty_statement(bank: Bank) -> None:
    with Session(bank.engine) as session:
        result = timebank.statement(session, bank.other, timebank.year_start(NOW))
    assert result == timebank.Statement(balance=0, earned=0, redeemed=0, entries=[])


def test_year_start_is_new_year_in_beijing() -> None:
    # 2026-12-31 17:00 UTC is already 1 January 2027 in Beijing
    assert timebank.year_start(datetime(2026, 12, 31, 17, tzinfo=UTC)) == local(2027, 1, 1)


@pytest.mark.parametrize(
    ("minutes", "shown"), [(0, "0"), (60, "1"), (90, "1.5"), (15, "0.25"), (-180, "-3")]
)
def test_hours_are_shown_as_minutes_over_sixty(minutes: int, shown: str) -> None:
    assert timebank.format_hours(minutes) == shown


# --- concurrency (PostgreSQL) ----------------------------------------------------------------


def in_threads(count: int, work: Callable[[], object]) -> list[BaseException | object]:
    """Runs `work` in `count` threads released together; each one's result or error."""
    barrier = threading.Barrier(count)
    outcomes: list[BaseException | object] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            value: BaseException | object = work()
        except BaseException as exc:  # the outcome is what is tested
            value = exc
        with lock:
            outcomes.append(value)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.fixture
def pg_bank(bank: Bank) -> Bank:
    """A bank on PostgreSQL (the tests using it are parametrised on it alone): concurrent
    writers need row locks that SQLite does not have."""
    return bank


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_ten_volunteers_redeeming_the_last_item_at_once_get_exactly_one(pg_bank: Bank) -> None:
    # Given ten volunteers with hours enough and one item left
    bank = pg_bank
    people = [tb.person(bank.engine, name=f"志愿者{i}") for i in range(10)]
    for volunteer in people:
        bank.confirm(60, to=volunteer)
    last = tb.reward(bank.engine, bank.centre.id or 0, "纪念品", 60, stock=1)
    turn = iter(people)
    lock = threading.Lock()

    def redeem() -> object:
        with lock:
            volunteer = next(turn)
        return bank.run(timebank.redeem, volunteer, last)

    # When all redeem at the same instant
    outcomes = in_threads(10, redeem)

    # Then one succeeds, nine hear it is out of stock, and the books agree
    assert sum(isinstance(o, Redemption) for o in outcomes) == 1
    assert sum(isinstance(o, OutOfStock) for o in outcomes) == 9
    state = tb.ledger(bank.engine)
    assert state.stocks[last.id or 0] == 0 and state.redemptions == 1 and state.total == 0
    assert sorted(tb.balance_of(bank.engine, p) for p in people) == [0] + [60] * 9


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_one_balance_redeemed_from_ten_threads_at_once_is_never_overspent(pg_bank: Bank) -> None:
    # Given 3 hours and an unlimited reward of one hour
    bank = pg_bank
    bank.confirm(180)
    coffee = tb.reward(bank.engine, bank.centre.id or 0, "咖啡", 60)

    # When ten redemptions of it arrive at once
    outcomes = in_threads(10, lambda: bank.run(timebank.redeem, bank.volunteer, coffee))

    # Then exactly three succeed and the balance is zero, not negative
    assert sum(isinstance(o, Redemption) for o in outcomes) == 3
    assert sum(isinstance(o, BalanceShort) for o in outcomes) == 7
    assert tb.balance_of(bank.engine, bank.volunteer) == 0
    assert tb.ledger(bank.engine).total == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_confirmations_at_once_never_pass_the_day_cap(pg_bank: Bank) -> None:
    bank = pg_bank
    outcomes = in_threads(8, lambda: bank.confirm(120))
    assert sum(isinstance(o, HourMovement) for o in outcomes) == 6
    assert sum(isinstance(o, DailyCapExceeded) for o in outcomes) == 2
    assert tb.balance_of(bank.engine, bank.volunteer) == 12 * 60


@pytest.mark.parametrize("typed", ["0", "-1", "25", "lots"])
def test_a_day_cap_that_makes_no_sense_is_a_settings_error(typed: str) -> None:
    from pydantic import ValidationError

    from storage.settings import Settings

    with pytest.raises(ValidationError):
        Settings(hours_per_day_cap=typed, _env_file=None)  # type: ignore[arg-type]


def test_a_linked_chat_uses_its_principals_account_and_cannot_be_credited_by_them(
    bank: Bank,
) -> None:
    # Given a chat identity linked to the worker's account (关联聊天账号)
    chat = tb.person(bank.engine, name="王书记的微信")
    with session_scope(bank.engine) as session:
        stored = session.get(Person, chat.id)
        assert stored is not None
        stored.principal_id = bank.worker.id
    with Session(bank.engine) as session:
        chat = session.get(Person, chat.id) or chat

    # Then the worker cannot credit that chat, nor the chat the worker
    bank.refused(SelfCredit, lambda: bank.confirm(60, to=chat, by=bank.worker))
    bank.refused(SelfCredit, lambda: bank.confirm(60, to=bank.worker, by=chat))

    # and hours adjusted to the chat are the worker's, as is the redemption
    bank.run(timebank.adjust, chat, 60, "补录", None)
    assert tb.balance_of(bank.engine, bank.worker) == 60
    assert tb.balance_of(bank.engine, chat) == 0
    cup = tb.reward(bank.engine, bank.centre.id or 0, "保温杯", 60)
    redemption = bank.run(timebank.redeem, chat, cup)
    assert redemption.person_id == bank.worker.id
    assert tb.balance_of(bank.engine, bank.worker) == 0
