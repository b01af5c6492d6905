"""The time bank (时间银行): a double-entry ledger of volunteer hours.

Each centre has an account and each volunteer one (storage.models.HourAccount). Every change
is a movement of whole minutes from one account to another, never an edit:

- confirm: hours of service, centre -> volunteer, recorded by a worker of the centre (or of a
  centre above it), never by the volunteer (nobody credits themselves); at most the day cap
  (REDESK_HOURS_PER_DAY_CAP) per person and Asia/Shanghai day;
- redeem: a reward of the centre's catalogue, volunteer -> centre, the stock decremented in the
  same transaction;
- adjust: a correction, a compensating movement in either direction with its reason.

So the sum over all accounts is zero at every moment; centre accounts go negative (they issue
hours) and a volunteer's balance never does. Balances are derived from the movements.

Nothing here commits: the caller's transaction holds the movement with whatever else it does.
Refusals are TimeBankError (or NotPermitted, InvalidInput) raised before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlmodel import Session

from storage import queries
from storage.models import (
    Centre,
    HourAccount,
    HourMovement,
    MovementKind,
    Person,
    Redemption,
    Request,
    Reward,
    Role,
)
from storage.settings import Settings
from workflow.deadlines import LOCAL_TZ, local_day
from workflow.errors import (
    AlreadyGiven,
    BalanceShort,
    DailyCapExceeded,
    InvalidInput,
    NotPermitted,
    OutOfStock,
    RewardUnavailable,
    SelfCredit,
)
from workflow.service import Tx

#: The day cap when no setting is passed: 12 hours.
DEFAULT_DAY_CAP_MINUTES = 12 * 60

#: Largest single movement, in minutes (1000 hours): anything bigger is a typing error.
MAX_MINUTES = 1000 * 60

#: Longest reason of an adjustment.
MAX_REASON = 500

#: Entries a statement lists.
STATEMENT_ENTRIES = 10

#: Who may confirm hours and hand rewards over.
RECORDERS = (Role.WORKER,)


def day_cap_minutes(settings: Settings) -> int:
    """REDESK_HOURS_PER_DAY_CAP in whole minutes."""
    return round(settings.hours_per_day_cap * 60)


def local_day_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The Asia/Shanghai day holding `moment`, as [start, end) in UTC."""
    start = datetime.combine(local_day(moment), time(0), tzinfo=LOCAL_TZ)
    return start, start + timedelta(days=1)


def year_start(moment: datetime) -> datetime:
    """1 January (Asia/Shanghai) of the year holding `moment`."""
    return datetime(local_day(moment).year, 1, 1, tzinfo=LOCAL_TZ)


def _check_minutes(minutes: int, *, signed: bool = False) -> None:
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise InvalidInput("minutes")
    size = abs(minutes) if signed else minutes
    if size <= 0 or size > MAX_MINUTES:
        raise InvalidInput("minutes", limit=MAX_MINUTES)


def _same_person(session: Session, one: Person, other: Person) -> bool:
    return (
        queries.principal_of(session=session, person=one).id
        == queries.principal_of(session=session, person=other).id
    )


def _check_recorder(session: Session, action: str, recorder: Person, centre_id: int) -> None:
    """A recorder is a worker of the centre or of a centre above it."""
    recorder = queries.principal_of(session=session, person=recorder)
    if recorder.role not in RECORDERS:
        raise NotPermitted(action, "role")
    centre = queries.get_centre(session=session, centre_id=centre_id)
    if (
        centre is None
        or recorder.centre_id is None
        or recorder.centre_id not in queries.ancestor_ids(centre)
    ):
        raise NotPermitted(action, "centre")


def _volunteer_account(session: Session, volunteer: Person) -> HourAccount:
    """The volunteer's account, locked: movements of one volunteer happen one at a time. A
    linked chat (关联聊天账号) has no account of its own: its principal's is used."""
    volunteer = queries.principal_of(session=session, person=volunteer)
    assert volunteer.id is not None
    return queries.hour_account(session=session, person_id=volunteer.id, lock=True)


def _centre_account(session: Session, centre_id: int) -> HourAccount:
    return queries.hour_account(session=session, centre_id=centre_id)


def _record(
    tx: Tx,
    *,
    source: HourAccount,
    target: HourAccount,
    minutes: int,
    kind: MovementKind,
    recorded_by: Person | None,
    reason: str = "",
    request: Request | None = None,
    reward: Reward | None = None,
) -> HourMovement:
    assert source.id is not None and target.id is not None
    return queries.add_movement(
        session=tx.session,
        movement=HourMovement(
            from_account_id=source.id,
            to_account_id=target.id,
            minutes=minutes,
            kind=kind,
            request_id=request.id if request is not None else None,
            reward_id=reward.id if reward is not None else None,
            recorded_by_id=recorded_by.id if recorded_by is not None else None,
            reason=reason,
            created_at=tx.now,
        ),
    )


def confirm(
    tx: Tx,
    centre: Centre,
    volunteer: Person,
    minutes: int,
    recorded_by: Person,
    request: Request | None = None,
    *,
    day_cap: int = DEFAULT_DAY_CAP_MINUTES,
) -> HourMovement:
    """Confirms `minutes` of service: a movement from the centre's account to the volunteer's,
    recorded by (and so certified by, 谁记录谁证明) `recorded_by`.

    Args:
        day_cap: most minutes confirmed to one person in one Asia/Shanghai day
            (day_cap_minutes(settings) for REDESK_HOURS_PER_DAY_CAP).

    Raises:
        InvalidInput: minutes not a positive whole number (at most MAX_MINUTES).
        SelfCredit: the recorder is the volunteer (or acts as them).
        NotPermitted: the recorder is no worker of the centre or of a centre above it.
        DailyCapExceeded: the volunteer's confirmed minutes of the day would pass the cap.
    """
    _check_minutes(minutes)
    session = tx.session
    if _same_person(session, recorded_by, volunteer):
        raise SelfCredit()
    assert centre.id is not None
    _check_recorder(session, "confirm hours", recorded_by, centre.id)
    account = _volunteer_account(session, volunteer)
    assert account.id is not None
    start, end = local_day_bounds(tx.now)
    already = queries.minutes_received(
        session=session, account_id=account.id, kind=MovementKind.CONFIRM, start=start, end=end
    )
    if already + minutes > day_cap:
        raise DailyCapExceeded(cap=day_cap, already=already, asked=minutes)
    return _record(
        tx,
        source=_centre_account(session, centre.id),
        target=account,
        minutes=minutes,
        kind=MovementKind.CONFIRM,
        recorded_by=queries.principal_of(session=session, person=recorded_by),
        request=request,
    )


def adjust(
    tx: Tx,
    volunteer: Person,
    minutes: int,
    reason: str,
    recorded_by: Person | None,
    *,
    centre: Centre | None = None,
) -> HourMovement:
    """Corrects a volunteer's hours by a compensating movement: `minutes` > 0 from the centre
    to the volunteer, < 0 back from the volunteer to the centre. Never an edit.

    Args:
        recorded_by: the worker who records it; None for an admin's `redesk hours adjust`
            (the admin is on the audit log instead).
        centre: whose account takes the other side; None: the volunteer's centre, else the
            default centre.

    Raises:
        InvalidInput: minutes zero or over MAX_MINUTES, or the reason empty or too long.
        SelfCredit: the recorder is the volunteer.
        NotPermitted: the recorder is no worker of the centre or of a centre above it.
        BalanceShort: a negative adjustment larger than the volunteer's balance.
    """
    _check_minutes(minutes, signed=True)
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput("reason", limit=MAX_REASON)
    session = tx.session
    if centre is None:
        found = (
            queries.get_centre(session=session, centre_id=volunteer.centre_id)
            if volunteer.centre_id is not None
            else None
        )
        centre = found if found is not None else queries.default_centre(session=session)
    assert centre.id is not None
    if recorded_by is not None:
        if _same_person(session, recorded_by, volunteer):
            raise SelfCredit()
        _check_recorder(session, "adjust hours", recorded_by, centre.id)
        recorded_by = queries.principal_of(session=session, person=recorded_by)
    account = _volunteer_account(session, volunteer)
    assert account.id is not None
    centre_account = _centre_account(session, centre.id)
    if minutes < 0:
        held = queries.account_balance(session=session, account_id=account.id)
        if held < -minutes:
            raise BalanceShort(balance=held, needed=-minutes)
        source, target = account, centre_account
    else:
        source, target = centre_account, account
    return _record(
        tx,
        source=source,
        target=target,
        minutes=abs(minutes),
        kind=MovementKind.ADJUST,
        recorded_by=recorded_by,
        reason=reason,
    )


def redeem(tx: Tx, volunteer: Person, reward: Reward) -> Redemption:
    """Spends the volunteer's hours on one of a reward: a movement from their account to the
    reward's centre's, the stock (if counted) one less, in one transaction.

    The volunteer's account is locked first, then the reward, so that two redemptions at once
    (of one balance, or of the last item) happen one after the other and the second sees what
    the first did.

    Raises:
        RewardUnavailable: the reward is disabled.
        OutOfStock: none is left.
        BalanceShort: the balance does not cover it.
    """
    session = tx.session
    account = _volunteer_account(session, volunteer)
    assert account.id is not None and reward.id is not None
    locked = queries.get_reward(session=session, reward_id=reward.id, lock=True)
    if locked is None or not locked.active:
        raise RewardUnavailable(reward.name)
    if locked.stock is not None and locked.stock <= 0:
        raise OutOfStock(locked.name)
    held = queries.account_balance(session=session, account_id=account.id)
    if held < locked.minutes:
        raise BalanceShort(balance=held, needed=locked.minutes)
    if locked.stock is not None:
        locked.stock -= 1
        session.add(locked)
    movement = _record(
        tx,
        source=account,
        target=_centre_account(session, locked.centre_id),
        minutes=locked.minutes,
        kind=MovementKind.REDEEM,
        recorded_by=queries.principal_of(session=session, person=volunteer),
        reason=locked.name,
        reward=locked,
    )
    volunteer = queries.principal_of(session=session, person=volunteer)
    assert volunteer.id is not None and movement.id is not None
    return queries.add_redemption(
        session=session,
        redemption=Redemption(
            reward_id=locked.id or 0,
            person_id=volunteer.id,
            movement_id=movement.id,
            created_at=tx.now,
        ),
    )


def mark_given(tx: Tx, redemption: Redemption, by: Person) -> Redemption:
    """Records that a worker of the reward's centre (or of one above it) handed it over.

    Raises:
        AlreadyGiven: it was marked given before.
        NotPermitted: `by` is the redeemer ("own"), or no worker of the centre.
    """
    session = tx.session
    assert redemption.id is not None
    locked = queries.get_redemption(session=session, redemption_id=redemption.id, lock=True)
    assert locked is not None
    if locked.given_at is not None:
        raise AlreadyGiven(redemption.id)
    redeemer = queries.get_person(session=session, person_id=locked.person_id)
    if redeemer is not None and _same_person(session, by, redeemer):
        raise NotPermitted("mark given", "own")
    reward = queries.get_reward(session=session, reward_id=locked.reward_id)
    assert reward is not None
    _check_recorder(session, "mark given", by, reward.centre_id)
    locked.given_at = tx.now
    locked.given_by_id = queries.principal_of(session=session, person=by).id
    session.add(locked)
    session.flush()
    return locked


def balance(session: Session, account: HourAccount) -> int:
    """An account's balance in minutes, from its movements (what came in less what went out)."""
    assert account.id is not None
    return queries.account_balance(session=session, account_id=account.id)


@dataclass(frozen=True)
class Entry:
    """One movement as its volunteer reads it."""

    at: datetime
    kind: str
    #: Signed: positive into the volunteer's account, negative out of it.
    minutes: int
    reason: str
    #: Who recorded it (None: an admin's adjustment).
    recorded_by: str | None
    request_id: int | None
    reward_id: int | None


@dataclass(frozen=True)
class Statement:
    """A volunteer's hours: balance, what they earned and redeemed since a moment, and their
    last entries (newest first). All in minutes."""

    balance: int
    #: Confirmations and adjustments (less negative ones) since `since`.
    earned: int
    redeemed: int
    entries: list[Entry]


def statement(session: Session, person: Person, since: datetime) -> Statement:
    """A volunteer's statement (时长): balance, minutes earned and redeemed since `since`
    (year_start(now) for this year's), the last STATEMENT_ENTRIES entries. A person with no
    account has an empty one (nothing is made)."""
    person = queries.principal_of(session=session, person=person)
    assert person.id is not None
    account = queries.find_hour_account(session=session, person_id=person.id)
    if account is None or account.id is None:
        return Statement(balance=0, earned=0, redeemed=0, entries=[])

    def into(kind: str) -> int:
        assert account is not None and account.id is not None
        return queries.minutes_received(
            session=session, account_id=account.id, kind=kind, start=since
        )

    def out_of(kind: str) -> int:
        assert account is not None and account.id is not None
        return queries.minutes_sent(session=session, account_id=account.id, kind=kind, start=since)

    entries = []
    names: dict[int, str] = {}
    for movement in queries.last_movements(
        session=session, account_id=account.id, limit=STATEMENT_ENTRIES
    ):
        recorder = None
        if movement.recorded_by_id is not None:
            if movement.recorded_by_id not in names:
                found = queries.get_person(session=session, person_id=movement.recorded_by_id)
                names[movement.recorded_by_id] = found.display_name if found else ""
            recorder = names[movement.recorded_by_id]
        sign = 1 if movement.to_account_id == account.id else -1
        entries.append(
            Entry(
                at=movement.created_at,
                kind=movement.kind,
                minutes=sign * movement.minutes,
                reason=movement.reason,
                recorded_by=recorder,
                request_id=movement.request_id,
                reward_id=movement.reward_id,
            )
        )
    return Statement(
        balance=queries.account_balance(session=session, account_id=account.id),
        earned=into(MovementKind.CONFIRM) + into(MovementKind.ADJUST) - out_of(MovementKind.ADJUST),
        redeemed=out_of(MovementKind.REDEEM),
        entries=entries,
    )


def format_hours(minutes: int) -> str:
    """Minutes as hours for people: "2", "1.5", "0.25", "-3" (up to two decimals)."""
    text = f"{minutes / 60:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
