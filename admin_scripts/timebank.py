"""What `redesk hours` and `redesk rewards` do: admin corrections of volunteers' hours and each
centre's rewards catalogue (时间银行).

The ledger's rules live in workflow/timebank.py. An admin's adjustment has no recorder
(recorded_by_id NULL: the command line has no person); the admin who ran it is on the audit
log (admin_audit, action "hours_adjust") with the movement's id. Nothing here commits: the
caller's transaction holds a change with its audit row. Refusals are ManageError subclasses
that admin_scripts/cli.py turns into exit codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlmodel import Session

from admin_scripts.manage import ManageError, audit
from storage import queries
from storage.models import Centre, HourMovement, Person, Reward
from workflow import timebank
from workflow.errors import BalanceShort, InvalidInput
from workflow.service import Tx

#: Longest reward name (the column's size).
MAX_REWARD_NAME = 100


class NotFound(ManageError):
    """No person, centre or reward answers to what was typed (exit 4)."""


class BadValue(ManageError):
    """Hours, a stock or a name typed on the command line is malformed (exit 2)."""


class Refused(ManageError):
    """The change cannot be made; why, in a sentence (exit 1)."""


def parse_hours(typed: str, *, signed: bool = False) -> int:
    """Hours as typed ("2", "1.5", "+0.25", "-3" when signed) in whole minutes.

    Raises:
        BadValue: not a number, zero, negative when not signed, or not a whole minute.
    """
    text = typed.strip()
    pattern = r"[+-]?[0-9]+(\.[0-9]+)?" if signed else r"\+?[0-9]+(\.[0-9]+)?"
    try:
        if not re.fullmatch(pattern, text):
            raise InvalidOperation
        minutes = Decimal(text) * 60
    except InvalidOperation:
        sign = "±" if signed else ""
        raise BadValue(f"Hours must be a number such as {sign}1.5, not {typed!r}.") from None
    if minutes != minutes.to_integral_value():
        raise BadValue(f"{typed} hours is not a whole number of minutes.")
    if minutes == 0:
        raise BadValue("Hours must not be zero.")
    if abs(minutes) > timebank.MAX_MINUTES:
        raise BadValue(f"At most {timebank.MAX_MINUTES // 60} hours at once.")
    return int(minutes)


def _person(session: Session, who: str) -> Person:
    """A person by id or exact display name."""
    who = who.strip()
    if re.fullmatch(r"[0-9]+", who):
        found = queries.get_person(session=session, person_id=int(who))
        if found is not None:
            return found
    named = queries.people_named(session=session, name=who)
    if not named:
        raise NotFound(f"Nobody has the id or name {who!r} (see `redesk people list`).")
    if len(named) > 1:
        candidates = "; ".join(f"id {p.id} ({p.channel}, {p.role})" for p in named)
        raise Refused(f"{len(named)} people are called {who!r}: {candidates}. Name one by its id.")
    return named[0]


def _centre(session: Session, code: str | None) -> Centre:
    """The active centre of this code; None: the default centre."""
    if code is None:
        return queries.default_centre(session=session)
    found = queries.get_centre_by_code(session=session, code=code.strip())
    if found is None or not found.active:
        raise NotFound(
            f"No active centre has the code {code.strip()!r} (see `redesk centres list`)."
        )
    return found


@dataclass(frozen=True)
class Adjusted:
    """An adjustment made: whose, by how much, and the balance after it (minutes)."""

    person: Person
    movement: HourMovement
    minutes: int
    balance: int


def adjust(
    session: Session,
    *,
    who: str,
    hours: str,
    reason: str,
    now: datetime,
    centre: str | None = None,
) -> Adjusted:
    """Corrects a person's hours by a compensating movement, on the audit log.

    Raises:
        NotFound: nobody, or no active centre, answers to what was typed.
        BadValue: malformed hours, or no reason.
        Refused: an ambiguous name, or more taken back than the balance holds.
    """
    minutes = parse_hours(hours, signed=True)
    person = _person(session, who)
    place = _centre(session, centre) if centre is not None else None
    tx = Tx(session=session, now=now, source="admin:hours")
    try:
        movement = timebank.adjust(tx, person, minutes, reason, None, centre=place)
    except InvalidInput as exc:
        if exc.what == "reason":
            raise BadValue(
                f"--reason is required, 1 to {timebank.MAX_REASON} characters."
            ) from None
        raise BadValue(f"Hours must be at most {timebank.MAX_MINUTES // 60}.") from None
    except BalanceShort as exc:
        raise Refused(
            f"{person.display_name or person.id} holds {timebank.format_hours(exc.balance)} "
            f"hours; {timebank.format_hours(exc.needed)} cannot be taken back."
        ) from None
    account = queries.hour_account(session=session, person_id=person.id)
    held = timebank.balance(session, account)
    audit(
        session,
        action="hours_adjust",
        at=now,
        detail={
            "person": person.id,
            "name": person.display_name,
            "minutes": minutes,
            "reason": reason.strip(),
            "movement": movement.id,
            "balance": held,
        },
    )
    return Adjusted(person=person, movement=movement, minutes=minutes, balance=held)


def add_reward(
    session: Session,
    *,
    name: str,
    hours: str,
    now: datetime,
    stock: int | None = None,
    centre: str | None = None,
) -> tuple[Reward, Centre]:
    """A new reward in a centre's catalogue (the default centre's unless said), audited.

    Raises:
        BadValue: an empty or too long name, malformed hours, a negative stock.
        NotFound: no active centre has the code.
        Refused: the centre has a reward of that name already (active or not).
    """
    name = name.strip()
    if not name or len(name) > MAX_REWARD_NAME:
        raise BadValue(f"NAME must be 1 to {MAX_REWARD_NAME} characters.")
    minutes = parse_hours(hours)
    if stock is not None and stock < 0:
        raise BadValue("--stock must be 0 or more (leave it out for unlimited).")
    place = _centre(session, centre)
    assert place.id is not None
    if queries.reward_named(session=session, centre_id=place.id, name=name) is not None:
        raise Refused(f"{place.name} has a reward called {name!r} already.")
    reward = queries.add_reward(
        session=session,
        reward=Reward(centre_id=place.id, name=name, minutes=minutes, stock=stock, created_at=now),
    )
    audit(
        session,
        action="reward_add",
        at=now,
        detail={
            "reward": reward.id,
            "centre": place.id,
            "name": name,
            "minutes": minutes,
            "stock": stock,
        },
    )
    return reward, place


@dataclass(frozen=True)
class RewardLine:
    """One reward as `redesk rewards list` shows it."""

    centre: str
    name: str
    hours: str
    #: None: unlimited.
    stock: int | None
    active: bool


def list_rewards(session: Session, *, centre: str | None = None) -> list[RewardLine]:
    """Every reward (of one centre, if a code is given), by centre and name."""
    ids = None
    if centre is not None:
        place = _centre(session, centre)
        assert place.id is not None
        ids = [place.id]
    codes = {c.id: c.code for c in queries.list_centres(session=session)}
    return [
        RewardLine(
            centre=codes.get(reward.centre_id, str(reward.centre_id)),
            name=reward.name,
            hours=timebank.format_hours(reward.minutes),
            stock=reward.stock,
            active=reward.active,
        )
        for reward in queries.list_rewards(session=session, centre_ids=ids)
    ]


def disable_reward(
    session: Session, *, name: str, now: datetime, centre: str | None = None
) -> tuple[Reward, bool]:
    """Takes a reward off the catalogue (redemptions already made stay); the reward and whether
    it was active until now. Audited when it changes.

    Raises:
        NotFound: no such reward in the centre, or no active centre has the code.
    """
    place = _centre(session, centre)
    assert place.id is not None
    reward = queries.reward_named(session=session, centre_id=place.id, name=name.strip())
    if reward is None:
        raise NotFound(
            f"{place.name} has no reward called {name.strip()!r} (see `redesk rewards list`)."
        )
    if not reward.active:
        return reward, False
    reward.active = False
    session.add(reward)
    audit(
        session,
        action="reward_disable",
        at=now,
        detail={"reward": reward.id, "centre": place.id, "name": reward.name},
    )
    return reward, True
