"""Helpers of the time bank's tests: people of a centre, rewards, and what the ledger holds."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from storage import queries
from storage.db import session_scope
from storage.models import Centre, HourMovement, Person, Redemption, Reward, Role

_ids = itertools.count(1)


def centre(engine: Engine, code: str | None = None) -> Centre:
    """The default centre, or a new community centre under it with this code."""
    with session_scope(engine) as session:
        root = queries.default_centre(session=session)
        if code is None:
            return root
        return queries.add_centre(
            session=session, code=code, name=f"{code}中心", level="社区", parent=root
        )


def person(
    engine: Engine, role: str = Role.REQUESTER, *, name: str = "", centre_id: int | None = None
) -> Person:
    """A web identity of a centre (the default one unless said)."""
    with session_scope(engine) as session:
        if centre_id is None:
            centre_id = queries.default_centre(session=session).id
        made = Person(
            channel="web",
            external_id=f"tb{next(_ids)}",
            display_name=name or f"志愿者{next(_ids)}",
            role=role,
            centre_id=centre_id,
        )
        session.add(made)
        session.flush()
        return made


def reward(
    engine: Engine, centre_id: int, name: str, minutes: int, stock: int | None = None
) -> Reward:
    """A reward in a centre's catalogue."""
    with session_scope(engine) as session:
        return queries.add_reward(
            session=session,
            reward=Reward(centre_id=centre_id, name=name, minutes=minutes, stock=stock),
        )


@dataclass(frozen=True)
class Ledger:
    """What the time bank holds: movements, redemptions, stocks by reward, balances by person."""

    movements: int
    redemptions: int
    stocks: dict[int, int | None]
    total: int


def ledger(engine: Engine) -> Ledger:
    """The time bank's state now."""
    with Session(engine) as session:
        return Ledger(
            movements=int(session.exec(select(func.count(col(HourMovement.id)))).one()),
            redemptions=int(session.exec(select(func.count(col(Redemption.id)))).one()),
            stocks={r.id or 0: r.stock for r in session.exec(select(Reward)).all()},
            total=queries.ledger_total(session=session),
        )


def balance_of(engine: Engine, who: Person) -> int:
    """A person's balance in minutes (0 without an account)."""
    with Session(engine) as session:
        account = queries.find_hour_account(session=session, person_id=who.id or 0)
        if account is None:
            return 0
        return queries.account_balance(session=session, account_id=account.id or 0)
