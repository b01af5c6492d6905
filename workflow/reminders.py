"""The time-driven side: reminders before deadlines pass, escalation when they do, pings for new
requests nobody took, the daily digest, and auto-close of answered requests nobody rated.

`tick` is run by the `tick` actor, which the scheduler enqueues every REDESK_TICK_INTERVAL
seconds. It reads only the requests whose `tick_at` has come (every change of a request sets
it to the change's time; the tick sets it to the next instant something falls for the request,
or None), works out what is due by now, and does each thing at most once: before acting it
claims a key in the `reminders` table (INSERT ... ON CONFLICT DO NOTHING) in the same
transaction as the notices it writes. A tick that runs twice, or two
schedulers racing, find the key taken and do nothing.

What falls when (deadlines are working time on the Chinese calendar, see deadlines.py):

- unacted: a NEW request nobody acted on for 30 working minutes -> every worker;
- response_soon: 75 % of the way to the response deadline, still NEW -> every worker;
- response_due: the response deadline, still NEW -> every worker; 督办 to leaders and groups;
- resolution_soon: 75 % of the way to the resolution deadline, still open -> its holders;
- resolution_due: the resolution deadline, still open: 超期 (an escalate event) -> its
  holders; 督办 to leaders and groups;
- auto_close: REPLIED and not rated for REDESK_AUTO_CLOSE_DAYS days -> closed, requester told;
- digest: 09:00 Asia/Shanghai on working days -> every worker (their centre's requests) and
  leader (their centre's whole subtree).

Reminders go to the workers of the centre that holds the request; 督办 to the leaders of that
centre and of every centre above it, and to that centre's committee groups.

"75 % of the way" is 75 % of the working time from when the deadline was set (intake, a
forward to a department with its own deadline, a reopen) to the deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlmodel import col

from storage import queries
from storage.models import Person, Request, Role
from workflow import deadlines, scope, service
from workflow.machine import TERMINAL, Action, State
from workflow.service import Tx

#: Share of the time to a deadline at which the first reminder falls.
SOON = 0.75

#: Requests listed per section of the digest.
DIGEST_LINES = 20

#: Requests a tick reads per statement (a backlog, e.g. right after an upgrade, comes in
#: batches, so no statement carries more ids than the database takes).
TICK_BATCH = 1000


@dataclass(frozen=True)
class Policy:
    """The knobs (REDESK_* settings)."""

    unacted_minutes: int = 30
    auto_close_days: int = 7
    digest_hour: int = 9


@dataclass
class TickResult:
    """What one tick did, by kind, and how many requests it read."""

    done: dict[str, int]
    #: Requests read (those whose tick_at had come), whatever was done for them.
    read: int = 0

    def total(self) -> int:
        """Everything done."""
        return sum(self.done.values())


def tick(tx: Tx, policy: Policy) -> TickResult:
    """Does everything due by `tx.now` that has not been done yet.

    Only the requests whose `tick_at` has come are read (by its index, TICK_BATCH at a time): a
    change of a request sets it to the change's time, and each tick that reads a request sets
    it to the next instant something falls for it (or None). So a tick costs what is due, not
    what is open.
    """
    done: dict[str, int] = {}
    read = 0
    after: tuple[datetime, int] | None = None
    while True:
        batch = list(
            queries.requests_to_tick(session=tx.session, now=tx.now, limit=TICK_BATCH, after=after)
        )
        if not batch:
            break
        read += len(batch)
        last = batch[-1]
        assert last.tick_at is not None and last.id is not None
        after = (last.tick_at, last.id)
        _tick_batch(tx, policy, batch, done)
        if len(batch) < TICK_BATCH:
            break
    if _digest(tx, policy):
        done["digest"] = 1
    return TickResult(done, read=read)


def _tick_batch(tx: Tx, policy: Policy, batch: list[Request], done: dict[str, int]) -> None:
    """Does what fell for each request of `batch` and sets when to look at it next."""
    seen = {r.id: (r.tick_at, r.updated_at) for r in batch}
    taken = queries.reminder_keys(
        session=tx.session, request_ids=[r.id for r in batch if r.id is not None]
    )
    later: list[queries.NextTick] = []
    for request in batch:
        for kind, due in _due(tx, request, policy):
            key = f"{request.id}:{kind}:{due.isoformat()}"
            if key in taken:
                continue
            if not queries.claim_reminder(
                session=tx.session, key=key, kind=kind, request_id=request.id, at=tx.now
            ):
                continue
            _act(tx, request, kind, policy)
            done[kind] = done.get(kind, 0) + 1
        if State(request.state) in TERMINAL:
            # Ended (auto-closed just now, or before): nothing falls any more.
            request.tick_at = None
            tx.session.add(request)
            continue
        assert request.id is not None
        tick_at, updated_at = seen[request.id]
        assert tick_at is not None
        later.append(
            queries.NextTick(
                request_id=request.id,
                seen_tick_at=tick_at,
                seen_updated_at=updated_at,
                tick_at=_next(tx, request, policy),
            )
        )
    queries.set_next_ticks(session=tx.session, ticks=later)


def _schedule(
    tx: Tx, request: Request, policy: Policy
) -> list[tuple[str, datetime | None, datetime | None]]:
    """The (stem, soon, due) instants of `request`'s reminders in its state (soon or due may be
    None: no such reminder)."""
    state = State(request.state)
    if state in TERMINAL:
        return []
    since = request.deadlines_set_at or request.created_at
    # The request's calendar: its centre's days off and those of every centre above it.
    days_off = scope.centre_calendar(tx.session, request.centre_id)
    found: list[tuple[str, datetime | None, datetime | None]] = []
    if state == State.NEW:
        unacted = deadlines.add_working_hours(
            since,
            policy.unacted_minutes / 60,
            start_hour=tx.workday_start,
            end_hour=tx.workday_end,
            days_off=days_off,
        )
        found.append(("unacted", None, unacted))
        found.append(
            (
                "response",
                _soon(tx, since, request.response_due_at, days_off),
                request.response_due_at,
            )
        )
    if state == State.REPLIED:
        if request.replied_at is not None:
            closes = request.replied_at + timedelta(days=policy.auto_close_days)
            found.append(("auto_close", None, closes))
        return found
    found.append(
        (
            "resolution",
            _soon(tx, since, request.resolution_due_at, days_off),
            request.resolution_due_at,
        )
    )
    return found


def _due(tx: Tx, request: Request, policy: Policy) -> list[tuple[str, datetime]]:
    """The (kind, instant) reminders of `request` that have fallen by now, earliest first."""
    found: list[tuple[str, datetime]] = []
    for stem, soon, due in _schedule(tx, request, policy):
        found += _pair(stem, soon, due, tx.now)
    return found


def _next(tx: Tx, request: Request, policy: Policy) -> datetime | None:
    """The earliest instant after now at which one of `request`'s reminders falls (None: none
    will, unless the request changes)."""
    instants = [
        instant
        for _, soon, due in _schedule(tx, request, policy)
        for instant in (soon, due)
        if instant is not None and instant > tx.now
    ]
    return min(instants, default=None)


def _soon(
    tx: Tx, since: datetime, due: datetime | None, days_off: frozenset[date] = frozenset()
) -> datetime | None:
    """75 % of the working time from `since` to `due` (so it never falls on a holiday, nor on
    one of the request's centre's `days_off`)."""
    if due is None or due <= since:
        return None
    start, end = tx.workday_start, tx.workday_end
    total = deadlines.working_seconds(since, due, start_hour=start, end_hour=end, days_off=days_off)
    if total <= 0:
        return None
    return deadlines.add_working_hours(
        since, total * SOON / 3600, start_hour=start, end_hour=end, days_off=days_off
    )


def _pair(
    stem: str, soon: datetime | None, due: datetime | None, now: datetime
) -> list[tuple[str, datetime]]:
    """The soon/due reminders of one deadline that have fallen; only the latest if both."""
    if due is not None and due <= now:
        return [(f"{stem}_due" if stem in ("response", "resolution") else stem, due)]
    if soon is not None and soon <= now:
        return [(f"{stem}_soon", soon)]
    return []


def _act(tx: Tx, request: Request, kind: str, policy: Policy) -> None:
    card = {
        "text": service.summary(request.text),
        "response_due": deadlines.format_local(request.response_due_at),
        "resolution_due": deadlines.format_local(request.resolution_due_at),
        "state": request.state,
    }
    if kind == "unacted":
        for worker in service.committee(tx, request):
            tx.notify(worker, "remind.unacted", request, minutes=policy.unacted_minutes, **card)
    elif kind == "response_soon":
        for worker in service.committee(tx, request):
            tx.notify(worker, "remind.response_soon", request, **card)
    elif kind == "response_due":
        for worker in service.committee(tx, request):
            tx.notify(worker, "remind.response_due", request, **card)
        _escalate(tx, request, "response", card)
    elif kind == "resolution_soon":
        for person in service.holders(tx, request):
            tx.notify(person, "remind.resolution_soon", request, **card)
    elif kind == "resolution_due":
        for person in service.holders(tx, request):
            tx.notify(person, "remind.resolution_due", request, **card)
        _escalate(tx, request, "resolution", card)
    elif kind == "auto_close":
        service.auto_close(tx, request, days=policy.auto_close_days)


def _escalate(tx: Tx, request: Request, which: str, card: dict[str, Any]) -> None:
    """超期: an escalate event; the leaders of the request's centre and of every centre above
    it, and the committee groups of its centre, are told who holds it (督办)."""
    due = request.response_due_at if which == "response" else request.resolution_due_at
    note = f"超期：{'响应' if which == 'response' else '办结'}时限 {deadlines.format_local(due)}"
    service.record(tx, request, Action.ESCALATE, note)
    holders = "、".join(service.person_label(p) for p in service.holders(tx, request)) or "—"
    centre = queries.get_centre(session=tx.session, centre_id=request.centre_id)
    assert centre is not None
    default_id = scope.default_centre_id(tx.session)
    leaders = queries.reachable_in_centres(
        session=tx.session,
        roles=[Role.LEADER],
        centre_ids=queries.ancestor_ids(centre),
        default_centre_id=default_id,
    )
    groups = queries.reachable_in_centres(
        session=tx.session,
        roles=[Role.GROUP],
        centre_ids=[request.centre_id],
        default_centre_id=default_id,
    )
    for person in sorted([*leaders, *groups], key=lambda p: p.id or 0):
        tx.notify(
            person,
            "escalate.overdue",
            request,
            which="响应" if which == "response" else "办结",
            due=deadlines.format_local(due),
            holders=holders,
            **card,
        )


def _digest(tx: Tx, policy: Policy) -> bool:
    """The daily digest, once per working day, from `digest_hour` on."""
    local = tx.now.astimezone(deadlines.LOCAL_TZ)
    if local.hour < policy.digest_hour or not deadlines.is_working_day(local.date()):
        return False
    key = f"digest:{local.date().isoformat()}"
    if not queries.claim_reminder(
        session=tx.session, key=key, kind="digest", request_id=None, at=tx.now
    ):
        return False
    today_end = datetime.combine(
        local.date() + timedelta(days=1), datetime.min.time(), deadlines.LOCAL_TZ
    )
    readers: list[Person] = list(
        queries.reachable_people(session=tx.session, roles=[Role.WORKER, Role.LEADER])
    )
    default_id = scope.default_centre_id(tx.session)
    # A worker reads their centre's requests, a leader their centre's whole subtree: the
    # sections are made once per distinct scope.
    made: dict[tuple[bool, int], dict[str, list[str]]] = {}
    for person in readers:
        centre_id = person.centre_id if person.centre_id is not None else default_id
        whole = person.role == Role.LEADER
        if (whole, centre_id) not in made:
            made[(whole, centre_id)] = _digest_lines(tx, centre_id, whole, today_end)
        tx.notify(person, "digest", day=local.date().isoformat(), sections=made[(whole, centre_id)])
    return True


def _digest_lines(
    tx: Tx, centre_id: int, subtree: bool, today_end: datetime
) -> dict[str, list[str]]:
    """The digest's sections for one centre (or, with `subtree`, its whole subtree)."""
    centre = queries.get_centre(session=tx.session, centre_id=centre_id)
    held: Any = (
        queries.subtree_condition(centre)
        if subtree and centre is not None
        else col(Request.centre_id) == centre_id
    )
    is_open = col(Request.state).not_in([state.value for state in TERMINAL])
    conditions = {
        "new": col(Request.created_at) >= tx.now - timedelta(days=1),
        "due_today": is_open
        & (col(Request.resolution_due_at) >= tx.now)
        & (col(Request.resolution_due_at) < today_end),
        "overdue": is_open
        & (col(Request.state) != State.REPLIED)
        & (col(Request.resolution_due_at) < tx.now),
        "review": col(Request.state) == State.REVIEW,
        "reopened": is_open & (col(Request.reopen_count) > 0),
    }
    lines: dict[str, list[str]] = {}
    for name, condition in conditions.items():
        rows = queries.requests_where(
            session=tx.session, condition=held & condition, limit=DIGEST_LINES + 1
        )
        lines[name] = [f"{r.number} {service.summary(r.text)}" for r in rows[:DIGEST_LINES]] + (
            ["……"] if len(rows) > DIGEST_LINES else []
        )
    return lines
