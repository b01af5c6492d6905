"""The figures bosses ask for, computed in SQL (docs/statistics.md): the one implementation
behind `redesk stats` (admin_scripts/stats.py) and the console's dashboard
(GET /api/console/stats).

Every figure is over one cohort: the requests received in the period (their intake time, as an
Asia/Shanghai calendar date, between --from and --to inclusive), as they stand now. Counting,
the 三率, the means and the percentiles all happen in the database (GROUP BY, window functions, and
PostgreSQL's percentile_cont); Python only shapes the rows it gets back, one per group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Subquery
from sqlmodel import Session, col

from storage import queries
from storage.models import Category, Centre, Department, Event, Person, Request, utcnow
from workflow.deadlines import LOCAL_TZ

#: What rows can be grouped by.
GROUPS: tuple[str, ...] = ("category", "department", "worker", "day", "week", "month", "centre")

#: States a request does not leave.
TERMINAL: tuple[str, ...] = ("closed", "rejected", "cancelled")

#: Ratings that count as satisfied (满意率).
SATISFIED: tuple[str, ...] = ("满意", "基本满意")

#: First actions on a request (who acted first, and when).
FIRST_ACTIONS: tuple[str, ...] = ("accept", "forward", "reject")

#: Group labels for what has no name.
NO_CATEGORY = "未分类"
COMMITTEE = "党委自办"
NOBODY = "（未处理）"

#: Marks, in --by centre, the group of the requests the scope centre holds itself (a centre
#: code has only letters, digits and "-").
OWN_MARK = "*"

#: After a centre's name: the row of the requests it holds itself (--by centre).
OWN_SUFFIX = "（本级）"

#: Counts, in the order they are shown (JSON key, Chinese column).
COUNTS: tuple[tuple[str, str], ...] = (
    ("received", "受理量"),
    ("closed", "办结量"),
    ("open", "在办"),
    ("overdue", "超期"),
    ("forwarded", "转单"),
    ("returned", "退单"),
    ("rejected", "驳回"),
    ("cancelled", "撤销"),
    ("reopened", "重办"),
)

#: Rates (JSON key, Chinese column, numerator count, denominator count).
RATES: tuple[tuple[str, str, str, str], ...] = (
    ("response_rate", "响应率", "responded_in_time", "received"),
    ("resolution_rate", "解决率", "solved", "rated"),
    ("satisfaction_rate", "满意率", "satisfied", "rated"),
    ("rating_rate", "评价率", "rated", "replied"),
)

#: Durations (JSON key prefix, Chinese name, requests column).
DURATIONS: tuple[tuple[str, str, str], ...] = (
    ("first_action", "首次响应", "response"),
    ("reply", "回单", "reply"),
)

#: Units of every duration figure.
UNITS: tuple[str, ...] = ("calendar", "working")

#: Percentiles reported for each duration.
PERCENTILES: tuple[tuple[str, float], ...] = (("median", 0.5), ("p90", 0.9))

#: The figures of each duration, in the order they are shown (key part, Chinese name): the
#: mean (AVG in SQL) and the PERCENTILES.
MEASURES: tuple[tuple[str, str], ...] = (("mean", "平均"), ("median", "中位"), ("p90", "P90"))


class StatsError(ValueError):
    """A filter names something that does not exist."""


@dataclass(frozen=True)
class Period:
    """Asia/Shanghai calendar dates, inclusive; None: open-ended."""

    start: date | None = None
    end: date | None = None

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The period as UTC instants [from, to)."""
        start = (
            datetime.combine(self.start, time(0), LOCAL_TZ).astimezone(UTC) if self.start else None
        )
        end = (
            datetime.combine(self.end + timedelta(days=1), time(0), LOCAL_TZ).astimezone(UTC)
            if self.end
            else None
        )
        return start, end


@dataclass(frozen=True)
class Rate:
    """A share, always with what it is a share of."""

    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        """numerator / denominator, or None when nothing was counted."""
        return self.numerator / self.denominator if self.denominator else None

    def as_json(self) -> dict[str, Any]:
        """{"numerator", "denominator", "value"} (value rounded to 4 places, or null)."""
        value = self.value
        return {
            "numerator": self.numerator,
            "denominator": self.denominator,
            "value": round(value, 4) if value is not None else None,
        }


@dataclass
class Figures:
    """Every figure of one group (or of the whole cohort)."""

    key: str | None
    counts: dict[str, int]
    rates: dict[str, Rate]
    #: "<duration>_<percentile>_<unit>" -> seconds (None when no request has the duration).
    durations: dict[str, float | None] = field(default_factory=dict)
    #: --by centre: the row's centre code (None for other groupings and the totals).
    centre: str | None = None
    #: --by centre: True for the row of the requests the centre holds itself, False for a
    #: child centre's row rolled up over its subtree.
    own: bool = False

    def as_json(self) -> dict[str, Any]:
        """The figures with English snake_case keys (docs/statistics.md)."""
        data: dict[str, Any] = {} if self.key is None else {"key": self.key}
        if self.centre is not None:
            data["centre"] = self.centre
            data["own"] = self.own
        data.update(self.counts)
        data.update({name: rate.as_json() for name, rate in self.rates.items()})
        data.update(
            {
                name: None if value is None else round(value, 1)
                for name, value in self.durations.items()
            }
        )
        return data


@dataclass
class Report:
    """The totals and, with a grouping, one Figures per group."""

    period: Period
    by: str | None
    totals: Figures
    rows: list[Figures]
    generated_at: datetime
    #: The centre whose subtree is counted (--centre, or the single root of --by centre);
    #: None: every centre.
    centre: CentreScope | None = None

    def as_json(self) -> dict[str, Any]:
        """One object: period, grouping, totals and rows (and "centre" when scoped)."""
        data: dict[str, Any] = {
            "period": {
                "from": self.period.start.isoformat() if self.period.start else None,
                "to": self.period.end.isoformat() if self.period.end else None,
                "timezone": "Asia/Shanghai",
            },
        }
        if self.centre is not None:
            data["centre"] = {"code": self.centre.code, "name": self.centre.name}
        data.update(
            {
                "by": self.by,
                "generated_at": self.generated_at.isoformat(),
                "totals": self.totals.as_json(),
                "rows": [row.as_json() for row in self.rows],
            }
        )
        return data


@dataclass(frozen=True)
class CentreScope:
    """The centre a report is about: its subtree is the cohort's."""

    id: int
    code: str
    name: str
    path: str


def duration_keys() -> list[str]:
    """The duration figure names: first_action_mean_calendar_seconds, ..."""
    return [
        f"{name}_{label}_{unit}_seconds"
        for name, _, _ in DURATIONS
        for label, _ in MEASURES
        for unit in UNITS
    ]


def _mean_columns(cohort: Subquery) -> list[Any]:
    """AVG of every duration column (NULLs, requests without the duration, left out; NULL when
    no request of the group has it), labelled like the figures."""
    return [
        func.avg(cohort.c[column]).label(f"{name}_mean_{unit}_seconds")
        for name, _, stem in DURATIONS
        for unit, column in (("calendar", f"{stem}_seconds"), ("working", f"{stem}_work_seconds"))
    ]


# --- the SQL ----------------------------------------------------------------------------------


def _local(engine: Engine, column: Any, unit: str) -> ColumnElement[Any]:
    """The Asia/Shanghai day, Monday of the week, or month of a UTC timestamp, as text."""
    if engine.dialect.name == "postgresql":
        local = func.timezone("Asia/Shanghai", column)
        if unit == "day":
            return func.to_char(local, "YYYY-MM-DD")
        if unit == "week":
            return func.to_char(func.date_trunc("week", local), "YYYY-MM-DD")
        return func.to_char(local, "YYYY-MM")
    # SQLite: China has kept UTC+8 all year since 1991.
    if unit == "day":
        return func.date(column, "+8 hours")
    if unit == "week":
        return func.date(column, "+8 hours", "weekday 0", "-6 days")
    return func.strftime("%Y-%m", column, "+8 hours")


def _event_summary(*, first_actions: bool) -> Subquery:
    """Per request: how often it was forwarded and returned (and, for --by worker, its first
    action's event). Only the events that matter are read: a recall (撤回转单) is no return,
    the department did not hand the request back."""
    action, request_id = col(Event.action), col(Event.request_id)

    def count(name: str) -> ColumnElement[Any]:
        return func.sum(case((action == name, 1), else_=0))

    columns = [
        request_id.label("request_id"),
        count("forward").label("forwards"),
        count("return").label("returns"),
    ]
    wanted = ["forward", "return"]
    if first_actions:
        # A person's first action: the system's automatic forward (no actor) is not one, so a
        # request a worker recalled and forwarded elsewhere counts for that worker.
        first = and_(action.in_(FIRST_ACTIONS), col(Event.actor_id).is_not(None))
        columns.append(func.min(case((first, col(Event.id)))).label("first_event"))
        wanted += list(FIRST_ACTIONS)
    return (
        select(*columns)
        .where(col(Event.outcome) == "ok", request_id.is_not(None), action.in_(wanted))
        .group_by(request_id)
        .subquery("event_summary")
    )


@dataclass(frozen=True)
class _Cohort:
    """The cohort as a subquery with everything a figure needs, one row per request."""

    query: Subquery


def _cohort(
    engine: Engine,
    period: Period,
    *,
    by: str | None,
    category_id: list[int] | None,
    department_id: list[int] | None,
    committee_only: bool,
    centre: CentreScope | None = None,
    centre_rows: Subquery | None = None,
) -> _Cohort:
    summary = _event_summary(first_actions=by == "worker")
    first = Event.__table__.alias("first_event")  # type: ignore[attr-defined]
    actor = Person.__table__.alias("first_actor")  # type: ignore[attr-defined]
    r = Request.__table__  # type: ignore[attr-defined]
    category = Category.__table__  # type: ignore[attr-defined]
    department = Department.__table__  # type: ignore[attr-defined]
    group: ColumnElement[Any]
    if by == "category":
        group = func.coalesce(category.c.name, NO_CATEGORY)
    elif by == "department":
        group = func.coalesce(department.c.name, COMMITTEE)
    elif by == "worker":
        group = case(
            (actor.c.id.is_(None), NOBODY),
            (actor.c.display_name != "", actor.c.display_name),
            else_=literal("用户", String) + cast(actor.c.id, String),
        )
    elif by in ("day", "week", "month"):
        group = _local(engine, r.c.created_at, by)
    elif by == "centre":
        assert centre_rows is not None
        group = centre_rows.c.grp
    else:
        group = literal("")
    columns = [
        group.label("grp"),
        r.c.state,
        r.c.reopen_count,
        r.c.solved,
        r.c.satisfaction,
        r.c.resolution_due_at,
        r.c.responded_in_time,
        r.c.first_replied_at,
        r.c.response_seconds,
        r.c.response_work_seconds,
        r.c.reply_seconds,
        r.c.reply_work_seconds,
        func.coalesce(summary.c.forwards, 0).label("forwards"),
        func.coalesce(summary.c.returns, 0).label("returns"),
    ]
    joined = (
        r.outerjoin(category, category.c.id == r.c.category_id)
        .outerjoin(department, department.c.id == r.c.department_id)
        .outerjoin(summary, summary.c.request_id == r.c.id)
    )
    if by == "worker":
        joined = joined.outerjoin(first, first.c.id == summary.c.first_event).outerjoin(
            actor, actor.c.id == first.c.actor_id
        )
    if centre_rows is not None:
        # Every centre of the scope maps to one row: the inner join is the subtree filter.
        joined = joined.join(centre_rows, centre_rows.c.centre_id == r.c.centre_id)
    statement: Select[Any] = select(*columns).select_from(joined)
    if centre is not None and centre_rows is None:
        inside = select(Centre.__table__.c.id).where(  # type: ignore[attr-defined]
            Centre.__table__.c.path.startswith(centre.path, autoescape=True)  # type: ignore[attr-defined]
        )
        statement = statement.where(r.c.centre_id.in_(inside))
    start, end = period.bounds()
    if start is not None:
        statement = statement.where(r.c.created_at >= start)
    if end is not None:
        statement = statement.where(r.c.created_at < end)
    if category_id is not None:
        statement = statement.where(r.c.category_id.in_(category_id))
    if department_id is not None:
        statement = statement.where(r.c.department_id.in_(department_id))
    if committee_only:
        statement = statement.where(r.c.department_id.is_(None))
    return _Cohort(statement.subquery("cohort"))


def _centre_rows(scope: CentreScope | None) -> Subquery:
    """centre id -> the --by centre group it counts in: the code of the child of `scope` (None:
    the roots) whose subtree holds it, or OWN_MARK + the scope's code for the scope itself.

    A few rows per centre of the tree, computed from the paths; the cohort joins it on the
    request's centre.
    """
    held = Centre.__table__.alias("held_by")  # type: ignore[attr-defined]
    row = Centre.__table__.alias("row_centre")  # type: ignore[attr-defined]
    parent = row.c.parent_id.is_(None) if scope is None else row.c.parent_id == scope.id
    children: Select[Any] = (
        select(held.c.id.label("centre_id"), row.c.code.label("grp"))
        .select_from(held.join(row, held.c.path.startswith(row.c.path)))
        .where(parent)
    )
    if scope is None:
        return children.subquery("centre_rows")
    own = select(
        literal(scope.id, Integer).label("centre_id"),
        literal(OWN_MARK + scope.code, String).label("grp"),
    )
    return children.union_all(own).subquery("centre_rows")


def _is(column: Any, value: bool) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = column == (true() if value else false())
    return condition


def _counts_query(
    cohort: Subquery, now: datetime, *, percentiles: bool = False, with_totals: bool = False
) -> Select[Any]:
    """The counts and the duration means of each group; with `percentiles` (PostgreSQL)
    also every duration's percentiles, so one statement (one scan) gives the whole cohort;
    with `with_totals` (PostgreSQL) also the totals row, by GROUPING SETS, marked by
    `is_total`."""
    c = cohort.c

    def total(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.sum(case((condition, 1), else_=0))

    is_open = c.state.not_in(TERMINAL)
    return select(
        c.grp,
        func.count().label("received"),
        total(c.state == "closed").label("closed"),
        total(is_open).label("open"),
        total(and_(is_open, c.resolution_due_at < now)).label("overdue"),
        total(c.forwards > 0).label("forwarded"),
        total(c.returns > 0).label("returned"),
        total(c.state == "rejected").label("rejected"),
        total(c.state == "cancelled").label("cancelled"),
        total(c.reopen_count > 0).label("reopened"),
        total(_is(c.responded_in_time, True)).label("responded_in_time"),
        total(c.solved.is_not(None)).label("rated"),
        total(_is(c.solved, True)).label("solved"),
        total(and_(c.solved.is_not(None), c.satisfaction.in_(SATISFIED))).label("satisfied"),
        total(c.first_replied_at.is_not(None)).label("replied"),
        *_mean_columns(cohort),
        *(_percentile_columns(cohort) if percentiles else []),
        *([func.grouping(c.grp).label("is_total")] if with_totals else []),
    ).group_by(func.grouping_sets(tuple_(c.grp), tuple_()) if with_totals else c.grp)


def _percentile_columns(cohort: Subquery) -> list[Any]:
    """percentile_cont of every duration column, labelled like the figures."""
    columns: list[Any] = []
    for name, _, stem in DURATIONS:
        for unit, column in (("calendar", f"{stem}_seconds"), ("working", f"{stem}_work_seconds")):
            for label, share in PERCENTILES:
                columns.append(
                    func.percentile_cont(share)
                    .within_group(cohort.c[column].asc())
                    .label(f"{name}_{label}_{unit}_seconds")
                )
    return columns


def _percentiles_window(cohort: Subquery, column: str) -> Select[Any]:
    """Linear-interpolation percentiles (as percentile_cont) with window functions."""
    value = cohort.c[column]
    ranked = (
        select(
            cohort.c.grp,
            value.label("v"),
            func.row_number().over(partition_by=cohort.c.grp, order_by=value).label("rn"),
            func.count().over(partition_by=cohort.c.grp).label("n"),
        )
        .where(value.is_not(None))
        .subquery("ranked")
    )
    parts = []
    for label, share in PERCENTILES:
        # Position h = (n - 1) * share between rows lo = floor(h) + 1 and lo + 1 (1-based).
        h = (ranked.c.n - 1) * share
        lo = cast(h, Integer) + 1
        at_lo = func.max(case((ranked.c.rn == lo, ranked.c.v)))
        at_hi = func.max(case((ranked.c.rn == lo + 1, ranked.c.v)))
        fraction = func.max(h - cast(h, Integer))
        parts.append((at_lo + fraction * (func.coalesce(at_hi, at_lo) - at_lo)).label(label))
    return select(ranked.c.grp, *parts).group_by(ranked.c.grp)


def _durations(connection: Connection, cohort: Subquery) -> dict[str, dict[str, float | None]]:
    """Group -> duration figure -> seconds, with window functions (SQLite)."""
    found: dict[str, dict[str, float | None]] = {}
    for name, _, stem in DURATIONS:
        for unit, column in (("calendar", f"{stem}_seconds"), ("working", f"{stem}_work_seconds")):
            for row in connection.execute(_percentiles_window(cohort, column)).mappings():
                figures = found.setdefault(str(row["grp"]), {})
                for label, _ in PERCENTILES:
                    value = row[label]
                    figures[f"{name}_{label}_{unit}_seconds"] = (
                        None if value is None else float(value)
                    )
    return found


def _cohort_figures(
    connection: Connection, cohort: Subquery, now: datetime, *, with_totals: bool = False
) -> list[tuple[str, Any, dict[str, float | None]]]:
    """(group, counts row, durations) of every group of a cohort.

    PostgreSQL: one statement (counts and percentile_cont together, one scan). SQLite: the
    counts and means, then one window-function statement per duration column.
    """
    if connection.dialect.name == "postgresql":
        rows = list(
            connection.execute(
                _counts_query(cohort, now, percentiles=True, with_totals=with_totals)
            ).mappings()
        )
        return [
            (
                "" if with_totals and row["is_total"] else str(row["grp"]),
                row,
                {key: None if row[key] is None else float(row[key]) for key in duration_keys()},
            )
            for row in rows
        ]
    rows = list(connection.execute(_counts_query(cohort, now)).mappings())
    durations = _durations(connection, cohort)
    means = [f"{name}_mean_{unit}_seconds" for name, _, _ in DURATIONS for unit in UNITS]
    return [
        (
            str(row["grp"]),
            row,
            durations.get(str(row["grp"]), {})
            | {key: None if row[key] is None else float(row[key]) for key in means},
        )
        for row in rows
    ]


def _figures(
    key: str | None, row: Mapping[str, Any] | Any, durations: Mapping[str, float | None]
) -> Figures:
    counts = {name: int(row.get(name) or 0) for name, _ in COUNTS}
    raw = {
        name: int(row.get(name) or 0)
        for name in ("responded_in_time", "rated", "solved", "satisfied", "replied", "received")
    }
    rates = {
        name: Rate(raw[numerator], raw[denominator]) for name, _, numerator, denominator in RATES
    }
    return Figures(
        key=key,
        counts=counts,
        rates=rates,
        durations={name: durations.get(name) for name in duration_keys()},
    )


def _empty(key: str | None) -> Figures:
    return _figures(key, {}, {})


# --- the report -------------------------------------------------------------------------------


def compute(
    engine: Engine,
    period: Period,
    *,
    by: str | None = None,
    category: str | None = None,
    department: str | None = None,
    centre: str | None = None,
    now: datetime | None = None,
) -> Report:
    """The report for a period, optionally grouped and filtered.

    Args:
        engine: A (read-only) engine on the database.
        period: The intake dates to count.
        by: One of GROUPS, or None for the totals only.
        category: Only requests of this category (its name).
        department: Only requests with this department (its name; 党委自办 / 党委: the
            committee's own).
        centre: Only requests held in this centre's subtree (its code). With by="centre",
            the rows are its child centres (and itself); without it, the roots (or, when
            there is one root, its children and itself).
        now: What "overdue now" is measured against (default: now).

    Raises:
        StatsError: An unknown category, department or centre.
    """
    if by is not None and by not in GROUPS:
        raise StatsError(f"unknown grouping {by!r}; use one of {', '.join(GROUPS)}")
    now = now or utcnow()
    category_id, department_id, committee_only = _resolve(engine, category, department)
    scope = _scope(engine, centre, by=by)
    filters: dict[str, Any] = {
        "category_id": category_id,
        "department_id": department_id,
        "committee_only": committee_only,
        "centre": scope,
    }
    grouped: dict[str, Any] = {"centre_rows": _centre_rows(scope)} if by == "centre" else {}
    rows: list[Figures] = []
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # These statements are long scans compiled once: JIT compilation costs seconds
            # per grouped statement and saves nothing here.
            connection.execute(text("SET LOCAL jit = off"))
        if by is not None and connection.dialect.name == "postgresql":
            # One statement for the groups and the totals (GROUPING SETS).
            cohort = _cohort(engine, period, by=by, **filters, **grouped)
            found = _cohort_figures(connection, cohort.query, now, with_totals=True)
            total_rows = [item for item in found if item[1]["is_total"]]
            totals = (
                _figures(None, total_rows[0][1], total_rows[0][2]) if total_rows else _empty(None)
            )
            rows = [
                _figures(key, row, durations)
                for key, row, durations in found
                if not row["is_total"]
            ]
        else:
            totals_cohort = _cohort(engine, period, by=None, **filters)
            found = _cohort_figures(connection, totals_cohort.query, now)
            totals = _figures(None, found[0][1], found[0][2]) if found else _empty(None)
            if by is not None:
                cohort = _cohort(engine, period, by=by, **filters, **grouped)
                rows = [
                    _figures(key, row, durations)
                    for key, row, durations in _cohort_figures(connection, cohort.query, now)
                ]
        if by == "centre":
            rows = _name_centre_rows(connection, scope, rows)
        rows.sort(key=_department_rank if by in ("department", "centre") else _by_key)
    return Report(period=period, by=by, totals=totals, rows=rows, generated_at=now, centre=scope)


def _scope(engine: Engine, code: str | None, *, by: str | None) -> CentreScope | None:
    """The centre a report counts the subtree of: --centre, else for --by centre the single
    root (a tree with several roots: None, one row per root)."""
    with Session(engine) as session:
        if code is not None:
            found = queries.get_centre_by_code(session=session, code=code)
            if found is None:
                raise StatsError(f"no centre with the code {code!r}")
        elif by == "centre":
            roots = queries.child_centres(session=session, parent_id=None, active_only=False)
            if len(roots) != 1:
                return None
            found = roots[0]
        else:
            return None
        assert found.id is not None
        return CentreScope(id=found.id, code=found.code, name=found.name, path=found.path)


def _name_centre_rows(
    connection: Connection, scope: CentreScope | None, rows: list[Figures]
) -> list[Figures]:
    """--by centre rows keyed by centre name, with an empty row for every active child that
    holds nothing; the scope's own row only when it holds something."""
    table = Centre.__table__  # type: ignore[attr-defined]
    parent = table.c.parent_id.is_(None) if scope is None else table.c.parent_id == scope.id
    children = {
        str(found.code): (str(found.name), bool(found.active))
        for found in connection.execute(
            select(table.c.code, table.c.name, table.c.active).where(parent)
        )
    }
    by_code = {row.key or "": row for row in rows}
    named: list[Figures] = []
    for code, (name, active) in children.items():
        found = by_code.get(code)
        if found is None and not active:
            continue
        figures = found if found is not None else _empty(code)
        figures.key, figures.centre, figures.own = name, code, False
        named.append(figures)
    if scope is not None and (own := by_code.get(OWN_MARK + scope.code)) is not None:
        own.key, own.centre, own.own = scope.name + OWN_SUFFIX, scope.code, True
        named.append(own)
    return named


def _by_key(figures: Figures) -> tuple[str, ...]:
    return (figures.key or "",)


def _department_rank(figures: Figures) -> tuple[Any, ...]:
    """Who is slow first: the longest median working time to 回单, then the lowest 三率."""
    reply = figures.durations.get("reply_median_working_seconds")
    rates = [
        figures.rates[name].value
        for name in ("response_rate", "resolution_rate", "satisfaction_rate")
    ]
    return (
        reply is None,
        -(reply or 0.0),
        *[(rate is None, rate if rate is not None else 0.0) for rate in rates],
        figures.key or "",
    )


def _resolve(
    engine: Engine, category: str | None, department: str | None
) -> tuple[list[int] | None, list[int] | None, bool]:
    """The ids named by --category and --department: every category or department of that
    name (names are unique per centre; with --centre the cohort keeps the subtree's)."""
    category_ids: list[int] | None = None
    department_ids: list[int] | None = None
    committee_only = False
    with engine.connect() as connection:
        if category is not None:
            category_ids = [
                found
                for found in connection.execute(
                    select(col(Category.id)).where(col(Category.name) == category)
                ).scalars()
                if found is not None
            ]
            if not category_ids:
                raise StatsError(f"no category named {category!r}")
        if department is not None:
            if department in (COMMITTEE, "党委"):
                committee_only = True
            else:
                department_ids = [
                    found
                    for found in connection.execute(
                        select(col(Department.id)).where(col(Department.name) == department)
                    ).scalars()
                    if found is not None
                ]
                if not department_ids:
                    raise StatsError(f"no department named {department!r}")
    return category_ids, department_ids, committee_only


def ranked_departments(
    engine: Engine,
    period: Period,
    *,
    category: str | None = None,
    centre: str | None = None,
    now: datetime | None = None,
) -> list[Figures]:
    """The "who is slow" view: every department (and 党委自办), slowest first."""
    return compute(engine, period, by="department", category=category, centre=centre, now=now).rows


# --- shapes for output --------------------------------------------------------------------------


def percent(rate: Rate) -> str:
    """A rate for people: "92.3% (12/13)", or "— (0/0)"."""
    value = rate.value
    shown = "—" if value is None else f"{value * 100:.1f}%"
    return f"{shown} ({rate.numerator}/{rate.denominator})"


def duration(seconds: float | None) -> str:
    """A duration for people, in the unit that reads best: "45 秒", "25 分钟", "3.5 小时",
    or "—" (a figure with no data).

    Under an hour it is minutes (hours would show "0.0"); JSON, CSV and xlsx keep their
    documented units (seconds, hours) and are not rendered with this.
    """
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{round(seconds)} 秒"
    if seconds < 3600:
        return f"{round(seconds / 60)} 分钟"
    return f"{seconds / 3600:.1f} 小时"


def table_columns() -> list[str]:
    """The Chinese column names of a flat row, in order (for tables, CSV and xlsx)."""
    columns = [label for _, label in COUNTS]
    for _, label, _, _ in RATES:
        columns += [label, f"{label}分子", f"{label}分母"]
    for _name, label, _ in DURATIONS:
        for _measure, shown in MEASURES:
            columns += [f"{label}{shown}(工作小时)", f"{label}{shown}(自然小时)"]
    return columns


def flat(figures: Figures) -> list[Any]:
    """One row of numbers in `table_columns` order (rates as fractions or None)."""
    values: list[Any] = [figures.counts[name] for name, _ in COUNTS]
    for name, _, _, _ in RATES:
        rate = figures.rates[name]
        values += [
            None if rate.value is None else round(rate.value, 4),
            rate.numerator,
            rate.denominator,
        ]
    for name, _, _ in DURATIONS:
        for measure, _ in MEASURES:
            for unit in ("working", "calendar"):
                seconds = figures.durations.get(f"{name}_{measure}_{unit}_seconds")
                values.append(None if seconds is None else round(seconds / 3600, 2))
    return values


def describe_period(period: Period) -> str:
    """The period as people read it."""
    start = period.start.isoformat() if period.start else "最早"
    end = period.end.isoformat() if period.end else "至今"
    return f"{start} 至 {end}（北京时间）" if period.start or period.end else "全部（北京时间）"


__all__: Sequence[str] = [
    "GROUPS",
    "MEASURES",
    "CentreScope",
    "Figures",
    "Period",
    "Rate",
    "Report",
    "StatsError",
    "compute",
    "describe_period",
    "duration",
    "duration_keys",
    "flat",
    "percent",
    "ranked_departments",
    "table_columns",
    "utcnow",
]
