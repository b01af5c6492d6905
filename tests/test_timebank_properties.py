"""Properties of the time bank, found by hypothesis: random confirmations, adjustments,
redemptions and days passing, by random people, through workflow.timebank on a real database
(SQLite, and PostgreSQL with fewer examples), each example from an empty database.

After every step:

- the outcome is the one the rules predict (who may record, the day cap, the balance, the
  stock), and a refusal changes nothing;
- the sum over all accounts is zero (centre accounts issue hours and may go negative);
- no volunteer balance is negative, and each is what the model says;
- no stock is below zero, and each is what the model says;
- hours reach a volunteer only from a centre, by a confirmation or an adjustment, and leave
  only by a redemption or an adjustment; no confirmation is recorded by its volunteer.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlmodel import Session, col, select

from bot.runtime import Runtime
from storage import queries
from storage.db import session_scope
from storage.models import (
    HourAccount,
    HourAccountKind,
    HourMovement,
    MovementKind,
    Person,
    Reward,
    Role,
)
from tests.test_properties import reset
from tests.utils.world import NOW
from workflow import timebank
from workflow.errors import (
    BalanceShort,
    DailyCapExceeded,
    InvalidInput,
    NotPermitted,
    OutOfStock,
    RewardUnavailable,
    SelfCredit,
    WorkflowError,
)
from workflow.service import Tx

pytestmark = pytest.mark.slow

#: Examples per database, and steps per example.
EXAMPLES = {"sqlite": 120, "postgresql": 20}
STEPS = 30

#: A small day cap, so that random confirmations reach it.
CAP = 5 * 60

_sources = itertools.count(1)

VOLUNTEERS = ("v1", "v2", "v3")
#: root_worker: worker of the default centre; child_worker: of the community under it.
RECORDERS = ("root_worker", "child_worker", "resident", *VOLUNTEERS)
CENTRES = ("root", "child")
REWARDS = ("cup", "haircut", "old")


class TimeBank(RuleBasedStateMachine):
    """Random hours recorded and spent, checked against a model of the rules."""

    runtime: Runtime

    def __init__(self) -> None:
        super().__init__()
        self.engine = self.runtime.engine
        self.now = NOW
        reset(self.engine)
        with session_scope(self.engine) as session:
            root = queries.default_centre(session=session)
            child = queries.add_centre(
                session=session, code=f"tb{next(_sources)}", name="社区", level="社区", parent=root
            )
            self.centres = {"root": root.id or 0, "child": child.id or 0}
            where = {"root_worker": root.id, "child_worker": child.id}
            people = {
                key: Person(
                    channel="web",
                    external_id=f"{key}-{next(_sources)}",
                    display_name=key,
                    role=Role.WORKER if key.endswith("worker") else Role.REQUESTER,
                    centre_id=where.get(key, root.id),
                )
                for key in RECORDERS
            }
            session.add_all(people.values())
            rewards = {
                "cup": Reward(centre_id=root.id or 0, name="保温杯", minutes=90, stock=2),
                "haircut": Reward(centre_id=child.id or 0, name="理发", minutes=45),
                "old": Reward(centre_id=root.id or 0, name="旧", minutes=10, stock=5, active=False),
            }
            session.add_all(rewards.values())
            session.flush()
        self.people = {key: person.id or 0 for key, person in people.items()}
        self.rewards = {key: reward.id or 0 for key, reward in rewards.items()}
        self.costs = {"cup": 90, "haircut": 45, "old": 10}
        # The model
        self.balances = dict.fromkeys(VOLUNTEERS, 0)
        self.stocks: dict[str, int | None] = {"cup": 2, "haircut": None, "old": 5}
        self.today: dict[str, int] = dict.fromkeys(VOLUNTEERS, 0)
        self.day = timebank.local_day_bounds(self.now)[0]

    # --- running one action ---

    def attempt(self, work: object, expected: type[WorkflowError] | None) -> None:
        """Runs `work(tx, session)` in its own transaction; it must fail with `expected` (and
        change nothing) or succeed when `expected` is None."""
        before = self.snapshot()
        error: WorkflowError | None = None
        try:
            with session_scope(self.engine) as session:
                tx = dataclasses.replace(
                    self.runtime.tx(session, f"tb:{next(_sources)}"), now=self.now
                )
                work(tx, session)  # type: ignore[operator]
        except WorkflowError as exc:
            error = exc
        if expected is None:
            assert error is None, f"refused: {error!r}"
        else:
            assert isinstance(error, expected), f"expected {expected.__name__}, got {error!r}"
            assert self.snapshot() == before

    def snapshot(self) -> tuple[int, tuple[int | None, ...]]:
        with Session(self.engine) as session:
            count = len(session.exec(select(HourMovement.id)).all())
            stocks = tuple(session.exec(select(Reward.stock).order_by(col(Reward.id))).all())
        return count, stocks

    def person(self, session: Session, key: str) -> Person:
        found = session.get(Person, self.people[key])
        assert found is not None
        return found

    # --- rules ---

    @rule(hours=st.integers(min_value=1, max_value=30))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)
        start = timebank.local_day_bounds(self.now)[0]
        if start != self.day:
            self.day = start
            self.today = dict.fromkeys(VOLUNTEERS, 0)

    @rule(
        recorder=st.sampled_from(RECORDERS),
        volunteer=st.sampled_from(VOLUNTEERS),
        centre=st.sampled_from(CENTRES),
        minutes=st.integers(min_value=-10, max_value=200),
    )
    def confirm(self, recorder: str, volunteer: str, centre: str, minutes: int) -> None:
        expected: type[WorkflowError] | None = None
        if minutes <= 0:
            expected = InvalidInput
        elif recorder == volunteer:
            expected = SelfCredit
        elif not recorder.endswith("worker") or (recorder, centre) == ("child_worker", "root"):
            expected = NotPermitted
        elif self.today[volunteer] + minutes > CAP:
            expected = DailyCapExceeded

        def work(tx: Tx, session: Session) -> None:
            place = queries.get_centre(session=session, centre_id=self.centres[centre])
            assert place is not None
            timebank.confirm(
                tx,
                place,
                self.person(session, volunteer),
                minutes,
                self.person(session, recorder),
                day_cap=CAP,
            )

        self.attempt(work, expected)
        if expected is None:
            self.balances[volunteer] += minutes
            self.today[volunteer] += minutes

    @rule(
        recorder=st.sampled_from((None, "root_worker", "child_worker", *VOLUNTEERS)),
        volunteer=st.sampled_from(VOLUNTEERS),
        minutes=st.integers(min_value=-200, max_value=200),
        reason=st.sampled_from(("补录", "多记", "", " ")),
    )
    def adjust(self, recorder: str | None, volunteer: str, minutes: int, reason: str) -> None:
        # The volunteers' centre is the root: its account takes the other side.
        expected: type[WorkflowError] | None = None
        if minutes == 0 or not reason.strip():
            expected = InvalidInput
        elif recorder == volunteer:
            expected = SelfCredit
        elif recorder is not None and recorder != "root_worker":
            expected = NotPermitted
        elif minutes < 0 and self.balances[volunteer] < -minutes:
            expected = BalanceShort

        def work(tx: Tx, session: Session) -> None:
            by = self.person(session, recorder) if recorder is not None else None
            timebank.adjust(tx, self.person(session, volunteer), minutes, reason, by)

        self.attempt(work, expected)
        if expected is None:
            self.balances[volunteer] += minutes

    @rule(volunteer=st.sampled_from(VOLUNTEERS), reward=st.sampled_from(REWARDS))
    def redeem(self, volunteer: str, reward: str) -> None:
        stock = self.stocks[reward]
        expected: type[WorkflowError] | None = None
        if reward == "old":
            expected = RewardUnavailable
        elif stock is not None and stock <= 0:
            expected = OutOfStock
        elif self.balances[volunteer] < self.costs[reward]:
            expected = BalanceShort

        def work(tx: Tx, session: Session) -> None:
            found = session.get(Reward, self.rewards[reward])
            assert found is not None
            timebank.redeem(tx, self.person(session, volunteer), found)

        self.attempt(work, expected)
        if expected is None:
            self.balances[volunteer] -= self.costs[reward]
            if stock is not None:
                self.stocks[reward] = stock - 1

    # --- invariants ---

    @invariant()
    def the_books_balance(self) -> None:
        with Session(self.engine) as session:
            assert queries.ledger_total(session=session) == 0
            accounts = {a.id: a for a in session.exec(select(HourAccount)).all()}
            for key in VOLUNTEERS:
                account = queries.find_hour_account(session=session, person_id=self.people[key])
                held = 0 if account is None else timebank.balance(session, account)
                assert held >= 0
                assert held == self.balances[key]
            for key, reward_id in self.rewards.items():
                reward = session.get(Reward, reward_id)
                assert reward is not None
                assert reward.stock is None or reward.stock >= 0
                assert reward.stock == self.stocks[key]
            for movement in session.exec(select(HourMovement)).all():
                source = accounts[movement.from_account_id]
                target = accounts[movement.to_account_id]
                assert movement.minutes > 0
                if target.kind == HourAccountKind.VOLUNTEER:
                    assert source.kind == HourAccountKind.CENTRE
                    assert movement.kind in (MovementKind.CONFIRM, MovementKind.ADJUST)
                    if movement.kind == MovementKind.CONFIRM:
                        assert movement.recorded_by_id != target.person_id
                else:
                    assert source.kind == HourAccountKind.VOLUNTEER
                    assert movement.kind in (MovementKind.REDEEM, MovementKind.ADJUST)


def test_random_confirmations_adjustments_and_redemptions_keep_the_ledger_true(
    runtime: Runtime, db_url: str
) -> None:
    # Given an empty database for every example (SQLite: many examples; PostgreSQL: fewer)
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    TimeBank.runtime = runtime

    # When random people record and spend hours, Then every step keeps the invariants
    run_state_machine_as_test(
        TimeBank,
        settings=settings(
            max_examples=EXAMPLES[kind],
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            print_blob=False,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
