"""The `redesk` command: run the server, workers and scheduler, and the admin verbs."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session

from admin_scripts.manage import ManageError
from storage import queries
from storage.dates import parse_date
from storage.db import get_engine, read_engine, session_scope, upgrade
from storage.models import Department, DepartmentKind, utcnow
from storage.settings import Settings, SettingsError, default_data_dir, get_settings
from workflow import service
from workflow.errors import WorkflowError


class Exit(IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    NOT_FOUND = 4
    UNAVAILABLE = 5


console = Console()
#: Errors stay on one line and are printed as they are (no wrapping, no markup), for scripts.
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def say(line: str) -> None:
    """Prints one line as it is: never wrapped (a URL or path stays whole), no markup."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


#: The first paragraph of `redesk --help`; main() adds where the data is.
HELP = "redesk: the request desk of a party–mass service centre (党群服务中心)."

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
departments_app = typer.Typer(help="Departments requests are forwarded to.", no_args_is_help=True)
categories_app = typer.Typer(
    help="Request categories: keywords, route, deadlines.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(departments_app, name="departments")
app.add_typer(categories_app, name="categories")
people_app = typer.Typer(help="People on the desk and their roles.", no_args_is_help=True)
app.add_typer(people_app, name="people")
web_app = typer.Typer(
    help="Web chat identities (the desk page) and their tokens.", no_args_is_help=True
)
app.add_typer(web_app, name="web")
inbox_app = typer.Typer(
    help="Inbound messages kept as failed (unparseable or given up).", no_args_is_help=True
)
app.add_typer(inbox_app, name="inbox")
centres_app = typer.Typer(
    help="Service centres (党群服务中心): the tree, its days off and entry points.",
    no_args_is_help=True,
)
app.add_typer(centres_app, name="centres")
staff_app = typer.Typer(
    help="Staff accounts of the console (/console): add, list, disable, reset a password.",
    no_args_is_help=True,
)
app.add_typer(staff_app, name="staff")
hours_app = typer.Typer(
    help="The time bank (时间银行): corrections of volunteers' hours.", no_args_is_help=True
)
app.add_typer(hours_app, name="hours")
rewards_app = typer.Typer(
    help="Each centre's rewards catalogue of the time bank: add, list, disable.",
    no_args_is_help=True,
)
app.add_typer(rewards_app, name="rewards")


class CliError(Exception):
    """A failure explained in one sentence, with its exit code."""

    def __init__(self, message: str, code: Exit = Exit.FAILURE) -> None:
        super().__init__(message)
        self.code = code


def check_output(path: str | Path, option: str, *, force: bool) -> None:
    """Refuses an output file that would silently replace something, or lead somewhere else.

    Every verb that writes a file (export --out and --events, stats --out and --chart) checks
    its path here before it reads or records anything. Without ``force``, an existing file and a
    symbolic link (dangling or not: writing through it would land wherever it points) are
    refused, naming the link and its target. With ``force`` the file is replaced; a link is
    replaced by the file, never followed (see replace_link).

    Args:
        path: the file named on the command line.
        option: the option that named it, for the message.
        force: whether --force was given.

    Raises:
        CliError: with Exit.USAGE, one sentence naming the file.
    """
    target = Path(path)
    if target.is_symlink():
        if not force:
            pointee = os.readlink(target)
            missing = "" if target.exists() else ", which does not exist"
            raise CliError(
                f"{option} {path} is a symbolic link to {pointee}{missing}; it is "
                "not followed: name another file, or pass --force to replace the "
                "link with the file.",
                Exit.USAGE,
            )
    elif target.is_dir():
        raise CliError(f"{option} {path} is a directory; name a file.", Exit.USAGE)
    elif target.exists() and not force:
        raise CliError(f"{option} {path} exists; pass --force to overwrite it.", Exit.USAGE)
    # absolute(), not resolve(): the directory the name is in, not the one a link points into.
    if not target.absolute().parent.is_dir():
        raise CliError(
            f"{option} {path}: the directory {target.parent} does not exist.", Exit.USAGE
        )


def replace_link(path: Path) -> None:
    """Removes a symbolic link at ``path`` just before a file is written there.

    check_output let it through only with --force, which replaces the link, not its target.
    """
    if path.is_symlink():
        path.unlink()


def _settings() -> Settings:
    """The settings, every channel's section read too: a malformed or refused setting stops
    the verb with one line (exit 3)."""
    from bot.channels import registry

    try:
        settings = get_settings()
        registry.check_sections(settings)
    except SettingsError as exc:
        raise CliError(str(exc), Exit.CONFIG) from None
    return settings


def _mount_channel_commands() -> None:
    """Adds each channel's own verbs (`redesk <channel> ...`)."""
    from bot.channels.registry import CHANNELS

    for channel in CHANNELS:
        commands = channel.commands()
        if commands is not None:
            app.add_typer(commands, name=channel.name)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _require_database(settings: Settings) -> None:
    """Refuses an SQLite database file that does not exist, naming it.

    Opening it would create an empty second database (a verb run with another
    REDESK_DATA_DIR, HOME or REDESK_DATABASE_URL than the server's), where an invitation code
    would be made that the server then calls invalid.
    """
    path = settings.sqlite_file
    if path is not None and not path.exists():
        raise CliError(
            f"No database file {path}: start `redesk run` (or run `redesk db "
            "upgrade` or `redesk demo`) first, or point REDESK_DATA_DIR or "
            "REDESK_DATABASE_URL at the server's database.",
            Exit.UNAVAILABLE,
        )


def _prepare_database(settings: Settings, *, auto_upgrade: bool, create: bool = False) -> None:
    """Upgrades an embedded SQLite database; checks that any other is reachable and current.

    Args:
        settings: the settings naming the database.
        auto_upgrade: upgrade the schema instead of checking that it is current.
        create: a missing SQLite file may be created (`run`, `demo`); otherwise it is refused.
    """
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    if not create:
        _require_database(settings)
    try:
        if auto_upgrade:
            upgrade(settings.database_url)
            return
        engine = get_engine(settings.database_url)
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    except OperationalError as exc:
        raise CliError(
            f"The database at REDESK_DATABASE_URL does not answer: {exc.orig}", Exit.UNAVAILABLE
        ) from None
    if current != head:
        raise CliError(
            "The database schema is not current: run `redesk db upgrade` first.", Exit.CONFIG
        )


# --- processes ------------------------------------------------------------------------------


@app.command()
def run() -> None:
    """Run the server: channels, web desk (/desk), health and metrics.

    On the embedded default (no REDESK_REDIS_URL) the worker and scheduler run inside it too.

    Example: redesk run
    """
    settings = _settings()
    _check_word_list()
    _setup_logging()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite, create=True)
    from bot import server
    from bot.channels.base import ChannelError

    try:
        server.serve(settings, say)
    except ChannelError as exc:
        raise CliError(str(exc), Exit.CONFIG) from None


@app.command()
def worker() -> None:
    """Run a queue worker (needs REDESK_REDIS_URL). Start as many as the load needs.

    Example: REDESK_REDIS_URL=redis://127.0.0.1:6379/0 redesk worker
    """
    settings = _settings()
    if not settings.redis_url:
        raise CliError(
            "`redesk worker` needs REDESK_REDIS_URL; on the embedded default "
            "`redesk run` has its own worker.",
            Exit.CONFIG,
        )
    _check_word_list()
    _setup_logging()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    from bot import server

    server.work(settings, say)


@app.command()
def scheduler() -> None:
    """Run the scheduler: enqueues the sweep of unfinished work and the tick of reminders,
    escalations, the daily digest and auto-close. Needs REDESK_REDIS_URL; several may run,
    only one acts at a time (a lease in Redis).

    Example: REDESK_REDIS_URL=redis://127.0.0.1:6379/0 redesk scheduler
    """
    settings = _settings()
    if not settings.redis_url:
        raise CliError(
            "REDESK_REDIS_URL is not set: without Redis, `redesk run` runs the scheduler itself",
            Exit.CONFIG,
        )
    _setup_logging()
    from bot import server

    server.schedule(settings, say)


def _check_word_list() -> None:
    """Stops a process that will handle messages when the small-talk word list is malformed,
    with its file and line, instead of failing the first resident's message."""
    from bot.handlers import smalltalk

    try:
        smalltalk.current_rule()
    except smalltalk.WordListError as exc:
        raise CliError(f"REDESK_SMALL_TALK_FILE: {exc}", Exit.CONFIG) from None


# --- statistics -----------------------------------------------------------------------------


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise CliError(f"{option} {exc}", Exit.USAGE) from None


def _trend_unit(period: Any) -> str:
    """Days for a month or less, weeks up to four months, else months."""
    if period.start is None or period.end is None:
        return "month"
    span = (period.end - period.start).days + 1
    return "day" if span <= 31 else "week" if span <= 120 else "month"


@app.command()
def stats(
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help="first intake date, YYYY-MM-DD (Asia/Shanghai); default: the first"
        ),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="last intake date, inclusive")] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help="one row per category, department, worker, day, week or month; centre: "
            "per child centre of --centre (default: the top of the tree), each over its subtree"
        ),
    ] = None,
    category: Annotated[str | None, typer.Option(help="only this category")] = None,
    department: Annotated[
        str | None,
        typer.Option(help="only this department (党委: what the committee handles itself)"),
    ] = None,
    centre: Annotated[
        str | None,
        typer.Option(metavar="CODE", help="only the requests held by this centre and below it"),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table, csv, json or xlsx")
    ] = "table",
    out: Annotated[Path | None, typer.Option(help="write to this file (xlsx needs one)")] = None,
    chart: Annotated[
        Path | None,
        typer.Option(
            help="also draw a PNG: received/closed per period and the 三率 per department"
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="overwrite an existing --out or --chart file (a symbolic link is "
            "replaced, not followed)",
        ),
    ] = False,
) -> None:
    """Count the requests received in a period: 受理量, 办结量, 在办, 超期, 转单, 退单, 驳回, 撤销,
    重办; the 三率 (响应率, 解决率, 满意率) and 评价率, each with its numerator and denominator;
    median and P90 of the time to first action and to 回单, in working and calendar hours; and
    the departments ranked slowest first. Definitions: docs/statistics.md.
    An existing --out or --chart file, or a symbolic link there, is refused (exit 2) unless
    --force is given.

    Example: redesk stats --from 2026-03-01 --to 2026-03-31 --by department --format xlsx
    --out march.xlsx
    """
    from admin_scripts import report as output
    from admin_scripts import stats as figures

    period = figures.Period(_date(start, "--from"), _date(end, "--to"))
    if period.start and period.end and period.end < period.start:
        raise CliError("--to is before --from", Exit.USAGE)
    if by is not None and by not in figures.GROUPS:
        raise CliError(f"--by must be one of {', '.join(figures.GROUPS)}", Exit.USAGE)
    if output_format not in ("table", "csv", "json", "xlsx"):
        raise CliError("--format must be table, csv, json or xlsx", Exit.USAGE)
    if output_format == "xlsx" and out is None:
        raise CliError("--format xlsx needs --out FILE", Exit.USAGE)
    if out is not None:
        check_output(out, "--out", force=force)
    if chart is not None:
        check_output(chart, "--chart", force=force)
        if out is not None and chart.absolute() == out.absolute():
            raise CliError("--chart and --out name the same file.", Exit.USAGE)
    settings = _settings()
    _require_database(settings)
    engine = read_engine(get_engine(settings.database_url))
    now = figures.utcnow()
    try:
        result = figures.compute(
            engine,
            period,
            by=by,
            category=category,
            department=department,
            centre=centre,
            now=now,
        )
        # The "who is slow" ranking is shown by the table and the chart only.
        departments = (
            result.rows
            if by == "department"
            else figures.ranked_departments(
                engine, period, category=category, centre=centre, now=now
            )
            if output_format == "table" or (chart is not None and by != "centre")
            else []
        )
    except figures.StatsError as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from None
    for path in (out, chart):
        if path is not None:
            replace_link(path)
    if output_format == "table":
        # A terminal gets its own width; a file or a pipe gets every column uncut.
        target = (
            Console(file=out.open("w", encoding="utf-8"), width=200)
            if out
            else console
            if console.is_terminal
            else Console(width=200)
        )
        output.render_table(target, result, departments)
    elif output_format == "xlsx":
        assert out is not None
        output.write_xlsx(result, out)
    else:
        text = output.to_csv(result) if output_format == "csv" else output.to_json(result)
        if out is None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        else:
            out.write_text(text, encoding="utf-8-sig" if output_format == "csv" else "utf-8")
    if out is not None:
        err.print(f"written: {out}")
    if chart is not None:
        trend = (
            result
            if by in ("day", "week", "month")
            else figures.compute(
                engine,
                period,
                by=_trend_unit(period),
                category=category,
                department=department,
                centre=centre,
                now=now,
            )
        )
        by_centre = by == "centre"
        output.write_chart(
            trend, result.rows if by_centre else departments, chart, by_centre=by_centre
        )
        err.print(f"chart: {chart}")


# --- database -------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database schema to the newest revision.

    Example: REDESK_DATABASE_URL=postgresql+psycopg://redesk@db/redesk redesk db upgrade
    """
    settings = _settings()
    try:
        upgrade(settings.database_url)
    except OperationalError as exc:
        raise CliError(f"The database does not answer: {exc.orig}", Exit.UNAVAILABLE) from None
    console.print("database schema is current")


# --- invitations ----------------------------------------------------------------------------


@app.command()
def invite(
    role: Annotated[str, typer.Argument(help="worker, leader or department")],
    department: Annotated[
        str | None, typer.Argument(help="the department (for department)")
    ] = None,
    centre: Annotated[
        str | None,
        typer.Option(help="the code of the centre the role is in; default: the default centre"),
    ] = None,
) -> None:
    """Print a one-time invitation code; `绑定 <code>` in any chat gives that role in a centre.

    The code is alone on the last line and expires after REDESK_INVITATION_DAYS (7) days.
    Department staff name a department of the centre or of a centre above it. An unknown or
    inactive centre, or a department not there for it, exits 4.

    Example: redesk invite department 城管执法 --centre futian
    """
    from admin_scripts.centres import label
    from workflow.errors import UnknownCentre

    if role not in ("worker", "leader", "department"):
        raise CliError("ROLE must be worker, leader or department.", Exit.USAGE)
    if role == "department" and not department:
        raise CliError("Name the department: redesk invite department NAME", Exit.USAGE)
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            code = service.create_invitation(
                session=session,
                role=role,
                department_name=department,
                now=utcnow(),
                days=settings.invitation_days,
                centre_code=centre,
            )
        except UnknownCentre as exc:
            raise CliError(
                f"No active centre has the code {exc.typed.strip()!r} (see `redesk centres list`).",
                Exit.NOT_FOUND,
            ) from None
        except WorkflowError:
            where = f" for the centre {centre.strip()}" if centre else ""
            raise CliError(
                f"No active department is called {department!r}{where} (see `redesk "
                "departments list`).",
                Exit.NOT_FOUND,
            ) from None
        place = (
            queries.get_centre_by_code(session=session, code=centre)
            if centre
            else queries.default_centre(session=session)
        )
        assert place is not None
        where = label(place)
    from bot.texts import role_label

    what = role_label(role, department or "")
    say(f"Invitation for {role} ({what}) in {where}, valid {settings.invitation_days} days.")
    console.print("Send 「绑定 CODE」 (or /bind CODE) to the bot from the chat to bind:")
    print(code)


# --- departments and categories -------------------------------------------------------------


@departments_app.command("list")
def departments_list() -> None:
    """List departments, active (启用) and inactive (停用), with their kind and deadline.

    Example: redesk departments list
    """
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        rows = queries.list_departments(session=session, active_only=False)
        places = _centre_labels(session)
        table = Table("名称", "类型", "办结时限（工作日）", "状态", "中心")
        for row in rows:
            table.add_row(
                row.name,
                row.kind,
                "—" if row.resolution_days is None else str(row.resolution_days),
                "启用" if row.active else "停用",
                places.get(row.centre_id, "—"),
            )
    console.print(table)


def _centre_labels(session: Any) -> dict[int | None, str]:
    """Each centre's code by id, as the lists show it (no centre: 全部, everywhere)."""
    labels: dict[int | None, str] = {None: "全部"}
    for centre in queries.list_centres(session=session):
        labels[centre.id] = centre.code
    return labels


@departments_app.command("add")
def departments_add(
    name: Annotated[str, typer.Argument(help="the department's name")],
    kind: Annotated[str, typer.Option(help="街道, 职能部门 or 社会组织")] = "职能部门",
    centre: Annotated[
        str | None,
        typer.Option(
            help="the code of the centre it belongs to (it serves every centre below it "
            "too); default: the default centre"
        ),
    ] = None,
) -> None:
    """Add a department of a centre; requests of that centre and of every centre below it can
    be forwarded to it. A name is used once per centre. An unknown or inactive centre exits 4.

    Example: redesk departments add 城管执法 --kind 职能部门 --centre futian
    """
    from admin_scripts import manage

    kinds = [k.value for k in DepartmentKind]
    if kind not in kinds:
        raise CliError(f"--kind must be one of {', '.join(kinds)}.", Exit.USAGE)
    if not name.strip() or len(name) > 100:
        raise CliError("NAME must be 1 to 100 characters.", Exit.USAGE)
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            place = manage.centre_named(session, centre, default=True)
        except manage.UnknownName as exc:
            raise CliError(str(exc), Exit.NOT_FOUND) from None
        assert place is not None and place.id is not None
        if queries.department_in_centres(session=session, name=name.strip(), centre_ids=[place.id]):
            raise CliError(
                f"A department called {name!r} exists already in {place.name} ({place.code}).",
                Exit.FAILURE,
            )
        session.add(Department(name=name.strip(), kind=kind, centre_id=place.id))
        where = f"{place.name} ({place.code})"
    console.print(f"added department {name.strip()} ({kind}) of {where}", markup=False)


@departments_app.command("deactivate")
def departments_deactivate(
    name: Annotated[str, typer.Argument(help="the department's exact name")],
    centre: Annotated[
        str | None,
        typer.Option(help="the code of its centre (needed when several centres use the name)"),
    ] = None,
) -> None:
    """Deactivate a department: no new requests reach it; those it has stay with it.

    Workers can no longer forward to it.
    New requests of categories routed to it go to the committee instead.
    Unused invitation codes for it stop working.
    Its staff still take and finish what is already there.
    To switch it on again, import it with active yes.

    Example: redesk departments deactivate 交警
    """
    from admin_scripts import manage

    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            done = manage.deactivate_department(
                session=session, name=name, now=utcnow(), centre=centre
            )
        except manage.UnknownName as exc:
            raise CliError(str(exc), Exit.NOT_FOUND) from None
        except manage.AmbiguousName as exc:
            raise CliError(str(exc), Exit.USAGE) from None
    if not done.changed:
        console.print(f"department {done.name} is inactive already; nothing changed", markup=False)
        return
    console.print(
        f"deactivated department {done.name}: no new requests are forwarded to it", markup=False
    )
    console.print(
        f"{done.open_requests} requests stay with it (forwarded to it or being handled by it)",
        markup=False,
    )
    if done.categories:
        console.print(
            f"new requests of {'、'.join(done.categories)} now go to the committee", markup=False
        )


@departments_app.command("import")
def departments_import(
    file: Annotated[str, typer.Argument(help="a .csv file (header on line 1) or .yaml list")],
) -> None:
    """Add and update departments from a CSV or YAML file (UTF-8), all rows or none.

    CSV: a header on line 1 naming the columns. YAML: a list of items. Fields:
    - name: required; an existing department of that name is updated
    - kind: required; 街道, 职能部门 or 社会组织
    - resolution_days: working days to finish a request (empty: the category's)
    - active: yes or no (empty: unchanged; new departments are active)
    - centre: the code of the centre it belongs to (empty: the default centre); a name is
      matched within its centre
    Every row is checked first: if any is bad, nothing changes (exit 1)
    and each bad row is listed with its line number and what is wrong.

    Example: redesk departments import departments.csv
    """
    _import_file("departments", file)


def _import_file(what: str, file: str, centre: str | None = None) -> None:
    """Imports departments, categories (of `centre`) or centres from `file` in one
    transaction, or explains why not."""
    from pathlib import Path

    from admin_scripts import centres, manage

    path = Path(file)
    importer = {
        "departments": manage.import_departments,
        "categories": manage.import_categories,
        "centres": centres.import_centres,
    }[what]
    try:
        manage.check_file(path)
        settings = _settings()
        _prepare_database(settings, auto_upgrade=settings.is_sqlite)
        with session_scope(get_engine(settings.database_url)) as session:
            if what == "categories":
                result = manage.import_categories(
                    session=session, path=path, now=utcnow(), centre=centre
                )
            else:
                result = importer(session=session, path=path, now=utcnow())
    except manage.UnknownName as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from None
    except manage.UnknownFileType as exc:
        raise CliError(str(exc), Exit.USAGE) from None
    except manage.FileMissing as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from None
    except manage.UnreadableFile as exc:
        where = f" line {exc.line}" if exc.line else ""
        raise CliError(f"{path.name}{where}: {exc.reason}; nothing was imported.") from None
    except manage.BadRows as exc:
        for row in exc.rows:
            err.print(f"{path.name} line {row.line}: {'; '.join(row.reasons)}")
        raise CliError(
            f"{len(exc.rows)} of {exc.total} rows are bad; nothing was imported."
        ) from None
    except manage.ImportConflict as exc:
        raise CliError(f"{path.name}: {exc}; nothing was imported.") from None
    console.print(
        f"imported {what} from {path.name}: {len(result.added)} added, "
        f"{len(result.updated)} updated, {len(result.unchanged)} unchanged",
        markup=False,
    )
    for label, names in (("added", result.added), ("updated", result.updated)):
        if names:
            console.print(f"  {label}: {'、'.join(names)}", markup=False)


@categories_app.command("list")
def categories_list() -> None:
    """List categories with their keywords, route and deadlines.

    Example: redesk categories list
    """
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        departments = {
            d.id: d.name for d in queries.list_departments(session=session, active_only=False)
        }
        # Keywords fold rather than end in "…": unspaced Chinese cannot wrap at words.
        places = _centre_labels(session)
        table = Table(
            "类别",
            Column("关键词", overflow="fold"),
            "默认去向",
            "响应（工作小时）",
            "办结（工作日）",
            "中心",
        )
        for row in queries.list_categories(session=session, active_only=False):
            route = (
                departments.get(row.department_id, "党委") if row.route == "department" else "党委"
            )
            table.add_row(
                row.name + (" (兜底)" if row.is_fallback else ""),
                "、".join(row.keywords) or "—",
                route,
                str(row.response_hours),
                str(row.resolution_days),
                places.get(row.centre_id, "—"),
            )
    console.print(table)


@categories_app.command("import")
def categories_import(
    file: Annotated[str, typer.Argument(help="a .csv file (header on line 1) or .yaml list")],
    centre: Annotated[
        str | None,
        typer.Option(help="the code of the centre they apply in; default: every centre"),
    ] = None,
) -> None:
    """Add and update categories from a CSV or YAML file (UTF-8), all rows or none.

    CSV: a header on line 1 naming the columns. YAML: a list of items. Fields:
    - name: required; an existing category of that name is updated
    - keywords: CSV: separated by | or 、; YAML: a list (empty: no keywords)
    - route: committee or department (default committee)
    - department: an existing, active department; required with route department
    - response_hours, resolution_days: whole numbers, 0 or more (default 8 and 5)
    - urgent, fallback: yes or no (default no); one fallback category at most
    Other fields left empty keep an existing category's value.
    Every row is checked first: if any is bad, nothing changes (exit 1)
    and each bad row is listed with its line number and what is wrong.

    With --centre, every category of the file is that centre's (it applies in the centre and
    every centre below it, before a category of the same name of a centre above); without,
    the categories apply everywhere. An unknown or inactive centre exits 4.

    Example: redesk categories import categories.yaml --centre futian
    """
    _import_file("categories", file, centre)


@categories_app.command("add")
def categories_add(
    name: Annotated[str, typer.Argument(help="the category's name")],
    keywords: Annotated[
        str | None, typer.Option(help="words that recognise it, separated by | or 、")
    ] = None,
    route: Annotated[str, typer.Option(help="committee or department")] = "committee",
    department: Annotated[
        str | None,
        typer.Option(help="with route department: a department of the centre or one above it"),
    ] = None,
    response_hours: Annotated[int | None, typer.Option(help="working hours to respond")] = None,
    resolution_days: Annotated[int | None, typer.Option(help="working days to resolve")] = None,
    urgent: Annotated[bool, typer.Option("--urgent", help="an urgent category")] = False,
    fallback: Annotated[
        bool, typer.Option("--fallback", help="used when no keyword matches")
    ] = False,
    centre: Annotated[
        str | None,
        typer.Option(help="the code of the centre it applies in; default: every centre"),
    ] = None,
) -> None:
    """Add a category: everywhere, or in one centre and every centre below it (where it comes
    before a category of the same name of a centre above). Bad values exit 1 naming them; a
    name the centre has already exits 1; an unknown or inactive centre exits 4.

    Example: redesk categories add 占道经营 --keywords "摆摊|占道" --route department
    --department 城管执法 --centre futian
    """
    from admin_scripts import manage

    fields: dict[str, Any] = {"name": name, "route": route}
    for key, value in (
        ("keywords", keywords),
        ("department", department),
        ("response_hours", response_hours),
        ("resolution_days", resolution_days),
    ):
        if value is not None:
            fields[key] = value
    if urgent:
        fields["urgent"] = True
    if fallback:
        fields["fallback"] = True
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    try:
        with session_scope(get_engine(settings.database_url)) as session:
            manage.add_category(session=session, fields=fields, now=utcnow(), centre=centre)
    except manage.UnknownName as exc:
        raise CliError(str(exc), Exit.NOT_FOUND) from None
    except manage.BadRows as exc:
        reasons = "; ".join(reason for row in exc.rows for reason in row.reasons)
        raise CliError(f"{reasons}; nothing was added.") from None
    except manage.ImportConflict as exc:
        raise CliError(f"{exc}; nothing was added.") from None
    where = f"in centre {centre.strip()} and below it" if centre else "everywhere"
    say(f"added category {name.strip()} ({where})")


# People (chat identities) and their roles.


@people_app.command("list")
def people_list(
    role: Annotated[
        str | None,
        typer.Option(
            help="only people with this role: worker, leader, department, group or requester"
        ),
    ] = None,
) -> None:
    """List people: id, channel, name, role, department, unreachable, created (Beijing time).

    Example: redesk people list --role worker
    """
    from rich.text import Text

    from admin_scripts import manage

    if role is not None and role not in manage.ROLES:
        raise CliError(f"--role must be one of {', '.join(manage.ROLES)}.", Exit.USAGE)
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        people = manage.list_people(session=session, role=role)
    table = Table(
        Column("ID", no_wrap=True),
        "渠道",
        "名称",
        "角色",
        "部门",
        "无法送达",
        Column("创建时间", no_wrap=True),
    )
    for person in people:
        # Text(): names come from chat users; they must not be read as rich markup.
        table.add_row(
            str(person.id),
            person.channel,
            Text(person.name),
            person.role,
            Text(person.department),
            "是" if person.unreachable else "",
            person.created,
        )
    console.print(table)
    if not people:
        console.print("nobody" + (f" with role {role}" if role else "") + " yet")


@people_app.command("revoke")
def people_revoke(
    who: Annotated[
        str,
        typer.Argument(
            metavar="ID_OR_NAME", help="the person's id (see `redesk people list`) or exact name"
        ),
    ],
    role: Annotated[
        str | None,
        typer.Option(help="only a person with this role: worker, leader, department or group"),
    ] = None,
) -> None:
    """Take a person's role away: they become a plain requester, with no department.

    From then on every worker or department command they send is refused, and their open
    dialogue is dropped. Requests they were handling go back to 待受理 (收回); walk-ins they
    registered are relayed to every worker, any of whom may act for them; their web tokens
    expire; every worker is told.
    A name shared by several people with a role is refused (exit 2), listing them;
    then name the person by their id.

    Example: redesk people revoke 王书记 --role worker
    """
    from admin_scripts import manage

    if role is not None and role not in manage.REVOCABLE:
        raise CliError(f"--role must be one of {', '.join(manage.REVOCABLE)}.", Exit.USAGE)
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            done = manage.revoke_role(session=session, who=who, role=role, now=utcnow())
        except manage.AmbiguousName as exc:
            raise CliError(str(exc), Exit.USAGE) from None
        except manage.UnknownName as exc:
            raise CliError(str(exc), Exit.NOT_FOUND) from None
    someone = f"{done.name or 'no name'} (id {done.id}, {done.channel})"
    if done.role == "requester":
        console.print(f"{someone} has no role to revoke; nothing changed", markup=False)
        return
    of = f" of {done.department}" if done.department else ""
    console.print(f"revoked {done.role}{of} from {someone}: now a requester", markup=False)
    if done.released:
        console.print(
            f"{len(done.released)} requests they were handling are back in 待受理: "
            f"{', '.join(done.released)}",
            markup=False,
        )
    if done.walk_ins:
        console.print(
            f"{len(done.walk_ins)} walk-ins they registered are relayed to every "
            f"worker: {', '.join(done.walk_ins)}",
            markup=False,
        )
    if done.web_tokens:
        console.print(f"{done.web_tokens} web tokens of theirs expired", markup=False)
    if done.outbox:
        from workflow import broker

        broker.configure(settings.redis_url)
        from bot import actors

        actors.enqueue_deliveries(done.outbox)
    if done.role == "group":
        console.print(
            "if REDESK_TELEGRAM_COMMITTEE_CHAT still names this chat, `redesk run` "
            "makes it the committee group again",
            markup=False,
        )


@web_app.command("revoke")
def web_revoke(
    who: Annotated[
        str,
        typer.Argument(
            metavar="ID_OR_NAME",
            help="the web identity's id (see `redesk people list`) or exact name",
        ),
    ],
) -> None:
    """End every token of a web identity: each page holding one is refused (401) from then on.

    For a resident abusing the desk, or a device that was lost. Their requests and any role
    stay (`redesk people revoke` takes a role away). Ending tokens is recorded in the admin
    audit log. An unknown id or name exits 4; a name shared by several web identities is
    refused (exit 2), listing them.

    Example: redesk web revoke 42
    """
    from admin_scripts import manage

    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            done = manage.revoke_web(session=session, who=who, now=utcnow())
        except manage.AmbiguousName as exc:
            raise CliError(str(exc), Exit.USAGE) from None
        except manage.UnknownName as exc:
            raise CliError(str(exc), Exit.NOT_FOUND) from None
    someone = f"{done.name or 'no name'} (id {done.id}, {done.role})"
    if not done.tokens:
        say(f"{someone} has no valid web token; nothing changed")
        return
    say(
        f"ended {done.tokens} web token{'s' if done.tokens != 1 else ''} of {someone}: "
        "their pages must make a new identity"
    )


@inbox_app.command("failed")
def inbox_failed() -> None:
    """List every failed inbox row, of any channel: id, channel, key, chat, received (Beijing
    time), attempts and the reason (e.g. the parser's, for an update python-telegram-bot
    cannot model).

    Example: redesk inbox failed
    """
    from rich.text import Text

    from admin_scripts import manage

    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        rows = manage.list_failed_inbox(session=session)
    table = Table(
        Column("ID", no_wrap=True),
        "渠道",
        "消息标识",
        "会话",
        Column("接收时间", no_wrap=True),
        "尝试次数",
        "原因",
    )
    for row in rows:
        # Text(): keys and reasons come from outside; they must not be read as rich markup.
        table.add_row(
            str(row.id),
            row.channel,
            Text(row.natural_key),
            Text(row.chat_id),
            row.received,
            str(row.attempts),
            Text(row.reason),
        )
    console.print(table)
    if not rows:
        console.print("no failed inbox rows")


@inbox_app.command("retry")
def inbox_retry(
    inbox_id: Annotated[
        int, typer.Argument(metavar="ID", help="the inbox row's id (see `redesk inbox failed`)")
    ],
) -> None:
    """Hand a failed inbox row to the workers again (e.g. after upgrading python-telegram-bot):
    it goes back to pending and is enqueued. An unknown id exits 4; a row that is not failed,
    or a Telegram update that still cannot be parsed and has no chat, exits 1 and changes
    nothing.

    Example: redesk inbox retry 42
    """
    from admin_scripts import manage

    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            done = manage.retry_inbox(session=session, inbox_id=inbox_id, now=utcnow())
        except manage.UnknownInbox as exc:
            raise CliError(str(exc), Exit.NOT_FOUND) from None
        except (manage.NotFailed, manage.StillUnparseable) as exc:
            raise CliError(str(exc), Exit.FAILURE) from None
    if done.chat is None:
        console.print(
            f"inbox row {done.id} ({done.channel}) parses now and is nobody's "
            "message to handle: marked done",
            markup=False,
        )
        return
    from workflow import broker

    broker.configure(settings.redis_url)
    from bot import actors

    actors.enqueue_inbound(done.channel, done.chat)
    later = "" if settings.redis_url else " (the running server's next sweep picks it up)"
    console.print(
        f"inbox row {done.id} ({done.channel}) is pending again and enqueued{later}", markup=False
    )


@app.command()
def demo() -> None:
    """Load demo departments and categories (skips those that exist).

    Example: redesk demo
    """
    from admin_scripts.demo import load_demo

    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite, create=True)
    with session_scope(get_engine(settings.database_url)) as session:
        departments, categories = load_demo(session)
    console.print(f"demo data loaded: {departments} departments and {categories} categories added")


# --- export ---------------------------------------------------------------------------------


@app.command("export")
def export_requests(
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="DATE",
            help="first day the requests came in, YYYY-MM-DD "
            "(Asia/Shanghai); default: from the first request",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", metavar="DATE", help="last day, inclusive; default: up to now"),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="csv|xlsx",
            help="csv or xlsx; default: xlsx when --out ends in .xlsx, else csv",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="where to write; `-` writes CSV to standard output; default: "
            "redesk-export-YYYYMMDD-HHMMSS.csv (or .xlsx) here",
        ),
    ] = None,
    include_pii: Annotated[
        bool,
        typer.Option(
            "--include-pii",
            help="show requesters' names and phone numbers in full (recorded in "
            "the admin audit log)",
        ),
    ] = False,
    events: Annotated[
        str | None,
        typer.Option(
            metavar="FILE", help="csv only: also write every event (one row each) to this file"
        ),
    ] = None,
    centre: Annotated[
        str | None,
        typer.Option(
            metavar="CODE", help="only the requests held by this centre and the centres below it"
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="overwrite an existing --out or --events file (a symbolic link is "
            "replaced, not followed)",
        ),
    ] = False,
) -> None:
    """Export the requests received in a period, one row each with its whole history
    (办理经过), to a CSV file or an Excel workbook (xlsx: a second sheet 办理记录 lists every
    event). Requesters' names and phone numbers are masked (张*, 138****5678) unless
    --include-pii is given; such an export is recorded in the admin audit log.
    An existing --out or --events file, or a symbolic link there, is refused (exit 2) before
    anything is read, written or recorded, unless --force is given.

    Example: redesk export --from 2026-11-01 --to 2026-11-30 --format xlsx --out november.xlsx
    """
    from admin_scripts import export as exporting

    options = exporting.parse_options(
        from_=start,
        to=end,
        format_=output_format,
        out=out,
        events=events,
        include_pii=include_pii,
        force=force,
        now=utcnow(),
        centre=centre,
    )
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    summary = exporting.export(options, engine=get_engine(settings.database_url), say=err)
    where = "standard output" if options.to_stdout else options.out
    err.print(
        f"exported {summary.requests} requests to {where}"
        + (f", {summary.events} events to {options.events}" if options.events else "")
    )


# --- staff accounts -------------------------------------------------------------------------


def _staff_errors(exc: ManageError) -> CliError:
    """The exit code of a staff error: 4 not found, 2 a malformed value, else 1."""
    from admin_scripts import staff

    if isinstance(exc, staff.NoSuchAccount | staff.NoSuchPlace):
        return CliError(str(exc), Exit.NOT_FOUND)
    if isinstance(exc, staff.BadStaffValue):
        return CliError(str(exc), Exit.USAGE)
    return CliError(str(exc), Exit.FAILURE)


@contextmanager
def _staff_session(settings: Settings) -> Iterator[Session]:
    """A session for a staff verb on the prepared database, committed at the end; refusals
    become the CliError of their exit code."""
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            yield session
        except ManageError as exc:
            raise _staff_errors(exc) from None


@staff_app.command("add")
def staff_add(
    username: Annotated[
        str, typer.Argument(help="2 to 64 of a-z, 0-9, '.', '_' and '-' (stored lower-case)")
    ],
    name: Annotated[str, typer.Option(help="the name colleagues know them by, e.g. 李书记")],
    role: Annotated[str, typer.Option(help="worker, leader, department or admin")],
    centre: Annotated[
        str | None,
        typer.Option(help="the code of the centre the account is in; default: the default centre"),
    ] = None,
    department: Annotated[
        str | None, typer.Option(help="the department (for department staff)")
    ] = None,
) -> None:
    """Add a staff account and print its one-time link to set the password (valid 24 hours).

    Like every verb but `run`, `db upgrade` and `demo`, it needs the database: start `redesk
    run` (or run `redesk db upgrade`) once first.

    Checked like `redesk invite`: department staff name a department of the centre or of a
    centre above it. A malformed username or role exits 2, a taken username 1, an unknown
    centre or department 4.

    Example: redesk staff add admin --name 管理员 --role admin
    """
    from admin_scripts import staff
    from bot.texts import role_label

    if role == "department" and not department:
        raise CliError("Name the department: --department NAME", Exit.USAGE)
    settings = _settings()
    with _staff_session(settings) as session:
        link = staff.add(
            session,
            username=username,
            name=name,
            role=role,
            now=utcnow(),
            centre=centre,
            department=department,
        )
        where = queries.get_centre(session=session, centre_id=link.person.centre_id or 0)
        place = f"{where.name} ({where.code})" if where else "—"
        account = link.account.username
    say(
        f"added {role} account {account} ({name.strip()}, "
        f"{role_label(role, department or '')}) in {place}"
    )
    say(
        f"valid until {staff.local(link.expires_at)} (Beijing time), once; "
        "open it to set the password:"
    )
    print(staff.setup_url(settings, link.token))


@staff_app.command("list")
def staff_list() -> None:
    """List staff accounts: username, name, role, centre, department, active, whether a
    password is set, linked chats and the last login (Beijing time).

    Example: redesk staff list
    """
    from rich.text import Text

    from admin_scripts import staff

    settings = _settings()
    with _staff_session(settings) as session:
        rows = staff.list_staff(session)
    table = Table(
        Column("用户名", no_wrap=True),
        "名称",
        "角色",
        "中心",
        "部门",
        "启用",
        "已设密码",
        "关联聊天",
        Column("最近登录", no_wrap=True),
    )
    for row in rows:
        table.add_row(
            row.username,
            Text(row.name),
            row.role,
            row.centre,
            Text(row.department),
            "是" if row.active else "否",
            "是" if row.password_set else "否",
            Text(", ".join(row.linked)),
            row.last_login,
        )
    console.print(table)
    if not rows:
        console.print("no staff accounts yet (add one with `redesk staff add`)")


@staff_app.command("disable")
def staff_disable(
    username: Annotated[str, typer.Argument(help="the account's username")],
) -> None:
    """Disable an account: it can no longer log in, its sessions end, its linked chats are
    unlinked and its role is taken away as `redesk people revoke` does (requests it was
    handling go back to 待受理). An unknown username exits 4.

    Example: redesk staff disable lishuji
    """
    from admin_scripts import staff

    settings = _settings()
    with _staff_session(settings) as session:
        done = staff.disable(session, username=username, now=utcnow())
    if not done.changed:
        say(f"account {done.username} is disabled already; nothing changed")
        return
    say(f"disabled account {done.username}: sessions ended, {len(done.unlinked)} chats unlinked")
    if done.role and done.role != "requester":
        say(f"revoked {done.role}: now a requester")
    if done.released:
        say(
            f"{len(done.released)} requests they were handling are back in 待受理: "
            f"{', '.join(done.released)}"
        )
    if done.outbox:
        from workflow import broker

        broker.configure(settings.redis_url)
        from bot import actors

        actors.enqueue_deliveries(done.outbox)


@staff_app.command("reset-password")
def staff_reset_password(
    username: Annotated[str, typer.Argument(help="the account's username")],
) -> None:
    """Clear an account's password, end its sessions and print a new one-time link to set
    one (valid 24 hours). An unknown username exits 4, a disabled account 1.

    Example: redesk staff reset-password lishuji
    """
    from admin_scripts import staff

    settings = _settings()
    with _staff_session(settings) as session:
        link = staff.reset_password(session, username=username, now=utcnow())
        account = link.account.username
    say(f"password of {account} cleared, its sessions ended")
    say(
        f"valid until {staff.local(link.expires_at)} (Beijing time), once; "
        "open it to set the password:"
    )
    print(staff.setup_url(settings, link.token))


# --- time bank: hours and rewards ------------------------------------------------------------


def _timebank_errors(exc: ManageError) -> CliError:
    """The exit code of a time-bank error: 4 not found, 2 a malformed value, else 1."""
    from admin_scripts import timebank

    if isinstance(exc, timebank.NotFound):
        return CliError(str(exc), Exit.NOT_FOUND)
    if isinstance(exc, timebank.BadValue):
        return CliError(str(exc), Exit.USAGE)
    return CliError(str(exc), Exit.FAILURE)


@contextmanager
def _timebank_session() -> Iterator[Session]:
    """A session for a time-bank verb on the prepared database, committed at the end; refusals
    become the CliError of their exit code (and nothing is written)."""
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            yield session
        except ManageError as exc:
            raise _timebank_errors(exc) from None


@hours_app.command(
    "adjust", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True}
)
def hours_adjust(
    who: Annotated[str, typer.Argument(help="the person's id or exact name")],
    hours: Annotated[
        str, typer.Argument(help="hours to add (2, +1.5) or take back (-0.5), whole minutes")
    ],
    reason: Annotated[str, typer.Option(help="why (required; kept with the movement)")] = "",
    centre: Annotated[
        str | None,
        typer.Option(help="the centre whose account takes the other side (default: theirs)"),
    ] = None,
) -> None:
    """Correct a person's hours with a compensating movement (never an edit): positive from
    the centre's account to theirs, negative back. Taking back more than they hold is refused
    (exit 1). The movement has no recorder; you are on the audit log with its id.

    Example: redesk hours adjust 李四 -1.5 --reason "重复登记"
    """
    from admin_scripts import timebank as bank
    from workflow.timebank import format_hours

    with _timebank_session() as session:
        done = bank.adjust(
            session, who=who, hours=hours, reason=reason, now=utcnow(), centre=centre
        )
        say(
            f"adjusted {done.person.display_name or done.person.id} (id {done.person.id}) by "
            f"{'+' if done.minutes > 0 else ''}{format_hours(done.minutes)} h; "
            f"balance {format_hours(done.balance)} h (movement {done.movement.id})"
        )


@rewards_app.command("add")
def rewards_add(
    name: Annotated[str, typer.Argument(help="what it is, e.g. 保温杯 (unique in the centre)")],
    hours: Annotated[str, typer.Option(help="what one costs, in hours (e.g. 2 or 1.5)")],
    stock: Annotated[
        int | None, typer.Option(help="how many there are (leave out: unlimited)")
    ] = None,
    centre: Annotated[
        str | None, typer.Option(help="the centre's code (default: the default centre)")
    ] = None,
) -> None:
    """Add a reward to a centre's catalogue. A name the centre has already exits 1.

    Example: redesk rewards add 保温杯 --hours 2 --stock 20 --centre chunxi
    """
    from admin_scripts import timebank as bank

    with _timebank_session() as session:
        reward, place = bank.add_reward(
            session, name=name, hours=hours, stock=stock, centre=centre, now=utcnow()
        )
        left = "unlimited" if reward.stock is None else f"{reward.stock} in stock"
        say(f"added reward {reward.name} to {place.code}: {hours.strip()} h, {left}")


@rewards_app.command("list")
def rewards_list(
    centre: Annotated[str | None, typer.Option(help="only this centre's (its code)")] = None,
) -> None:
    """List rewards: centre, name, hours, stock (unlimited when not counted), active.

    Example: redesk rewards list --centre chunxi
    """
    from admin_scripts import timebank as bank

    with _timebank_session() as session:
        lines = bank.list_rewards(session, centre=centre)
    if not lines:
        say("no rewards yet (add one with `redesk rewards add`)")
        return
    table = Table("centre", "name", "hours", "stock", "active")
    for line in lines:
        stock = "unlimited" if line.stock is None else str(line.stock)
        table.add_row(line.centre, line.name, line.hours, stock, "yes" if line.active else "no")
    console.print(table)


@rewards_app.command("disable")
def rewards_disable(
    name: Annotated[str, typer.Argument(help="the reward's name")],
    centre: Annotated[
        str | None, typer.Option(help="the centre's code (default: the default centre)")
    ] = None,
) -> None:
    """Take a reward off the catalogue; redemptions already made stay as they are.

    Example: redesk rewards disable 保温杯 --centre chunxi
    """
    from admin_scripts import timebank as bank

    with _timebank_session() as session:
        reward, changed = bank.disable_reward(session, name=name, centre=centre, now=utcnow())
    say(f"disabled reward {reward.name}" if changed else f"{reward.name} was disabled already")


# --- centres --------------------------------------------------------------------------------


def _centre_errors(exc: Exception) -> CliError:
    """The exit code of a centres error: 4 not found, 2 a malformed value, else 1."""
    from admin_scripts import centres

    if isinstance(exc, centres.NoSuchCentre):
        return CliError(str(exc), Exit.NOT_FOUND)
    if isinstance(exc, centres.BadValue):
        return CliError(str(exc), Exit.USAGE)
    return CliError(str(exc), Exit.FAILURE)


@contextmanager
def _centre_session(settings: Settings | None = None) -> Iterator[Session]:
    """A session for a centres verb on the prepared database, committed at the end; the
    verb's refusals (ManageError) become the CliError of their exit code."""
    settings = settings or _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        try:
            yield session
        except ManageError as exc:
            raise _centre_errors(exc) from None


@centres_app.command("add")
def centres_add(
    code: Annotated[
        str, typer.Argument(help="letters, digits and '-', 1 to 32; used in links and QR codes")
    ],
    name: Annotated[str, typer.Argument(help="the centre's name, e.g. 城东社区党群服务中心")],
    level: Annotated[
        str,
        typer.Option(
            help="市 (city), 区 (district), 街道 (street), 社区 (community), 商圈 (business), "
            "楼宇 (building), 园区 (park) or 市场 (market)"
        ),
    ],
    parent: Annotated[
        str | None, typer.Option(help="the code of the centre it is under (none: a top centre)")
    ] = None,
) -> None:
    """Add a centre under an existing, active one (or at the top). Codes are unique whatever
    their case. A taken code or an inactive parent exits 1, an unknown parent 4.

    Example: redesk centres add futian "福田区党群服务中心" --level district --parent sz
    """
    from admin_scripts import centres

    with _centre_session() as session:
        centre = centres.add(
            session=session, code=code, name=name, level=level, parent=parent, now=utcnow()
        )
        under = f" under {parent.strip()}" if parent else " at the top"
        say(f"added centre {centres.label(centre)}, {centre.level}{under}")


@centres_app.command("list")
def centres_list() -> None:
    """Show the centres as a tree: code, name, level, whether active, the requests each holds
    that are not finished, its staff (workers, leaders, department staff, group chats) and its
    own days off.

    Example: redesk centres list
    """
    from rich.text import Text
    from rich.tree import Tree

    from admin_scripts import centres

    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    with session_scope(get_engine(settings.database_url)) as session:
        lines = centres.tree(session=session)
    root = Tree(Text(f"{len(lines)} centres"), guide_style="dim")
    branches: list[Tree] = []
    for line in lines:
        text = Text()
        text.append(line.code, style="bold" if line.active else "dim")
        text.append(f"  {line.name}  {line.level}")
        text.append("  启用" if line.active else "  停用")
        if line.is_default:
            text.append("  默认")
        text.append(f"  在办 {line.open_requests}  人员 {line.staff}")
        if line.days_off:
            text.append(f"  休息日 {'、'.join(line.days_off)}")
        del branches[line.depth :]
        parent = branches[-1] if branches else root
        branches.append(parent.add(text))
    console.print(root)


@centres_app.command("import")
def centres_import(
    file: Annotated[str, typer.Argument(help="a .csv file (header on line 1) or .yaml list")],
) -> None:
    """Add centres from a CSV or YAML file (UTF-8), all rows or none.

    CSV: a header on line 1 naming the columns. YAML: a list of items. Fields:
    - code: required; letters, digits and '-', 1 to 32; an existing centre of that code
      (in any case) has its name, level and days off updated
    - name, level: required (level: the Chinese word or city, district, street, community,
      business, building, park, market)
    - parent: the code of an existing centre or of one on an earlier row (empty: a top centre)
    - days_off: dates YYYY-MM-DD (CSV: separated by | or spaces; YAML: a list; empty: an
      existing centre keeps its own)
    Every row is checked first: if any is bad, nothing changes (exit 1)
    and each bad row is listed with its line number and what is wrong.

    Example: redesk centres import centres.csv
    """
    _import_file("centres", file)


@centres_app.command("deactivate")
def centres_deactivate(
    code: Annotated[str, typer.Argument(help="the centre's code")],
) -> None:
    """Deactivate a centre: its links and QR code no longer lead to it and no one can join
    its staff. Refused (exit 1, saying why) for the default centre, a centre with active
    centres below it and one that holds requests that are not finished.

    Example: redesk centres deactivate market-3
    """
    from admin_scripts import centres

    with _centre_session() as session:
        done = centres.deactivate(session=session, code=code, now=utcnow())
    if not done.changed:
        say(f"centre {done.name} ({done.code}) is inactive already; nothing changed")
        return
    say(f"deactivated centre {done.name} ({done.code})")
    if done.staff:
        say(f"{done.staff} staff of it keep their role (see `redesk people list`)")


@centres_app.command("edit")
def centres_edit(
    code: Annotated[str, typer.Argument(help="the centre's code")],
    name: Annotated[str | None, typer.Option(help="a new name")] = None,
    new_code: Annotated[
        str | None,
        typer.Option("--code", help="a new code (links and QR codes with the old one stop)"),
    ] = None,
    level: Annotated[str | None, typer.Option(help="a new level")] = None,
    parent: Annotated[
        str | None, typer.Option(help="move it, with everything below it, under this centre")
    ] = None,
) -> None:
    """Change a centre's name, code, level or parent. A move takes its whole subtree along in
    one transaction; a move under itself or a centre below it (a cycle) is refused (exit 1).

    Example: redesk centres edit chengdong --parent luohu --name 城东社区党群服务中心
    """
    from admin_scripts import centres

    with _centre_session() as session:
        done = centres.edit(
            session=session,
            code=code,
            name=name,
            new_code=new_code,
            level=level,
            parent=parent,
            now=utcnow(),
        )
    if not done.changes:
        say(f"centre {done.code}: nothing changed")
        return
    for key, (before, after) in done.changes.items():
        say(f"centre {done.code}: {key} {before or '—'} -> {after}")
    if done.moved:
        say(f"{done.moved} centres moved (it and every centre below it)")


@centres_app.command("days-off")
def centres_days_off(
    code: Annotated[str, typer.Argument(help="the centre's code")],
    action: Annotated[str, typer.Argument(help="add, remove or list")],
    dates: Annotated[list[str] | None, typer.Argument(metavar="DATE...", help="YYYY-MM-DD")] = None,
) -> None:
    """List, add or remove a centre's own days off: not working days for its requests' deadlines
    and for every centre below it, on top of the national calendar and REDESK_EXTRA_DAYS_OFF.

    Example: redesk centres days-off futian add 2026-12-24 2026-12-31
    """
    from admin_scripts import centres

    with _centre_session() as session:
        done = centres.days_off(
            session=session, code=code, action=action, dates=list(dates or []), now=utcnow()
        )
    if action != "list":
        verb = "added" if action == "add" else "removed"
        say(f"centre {done.code}: {verb} {'、'.join(done.changed) if done.changed else 'nothing'}")
    say(f"centre {done.code} days off: {'、'.join(done.days) or 'none'}")
    if done.inherited:
        say(f"inherited from the centres above it: {'、'.join(done.inherited)}")


@centres_app.command("links")
def centres_links(
    code: Annotated[str, typer.Argument(help="the centre's code")],
) -> None:
    """Print every way into a centre: the web desk link (on REDESK_PUBLIC_URL, else the
    server's address), the Telegram deep link (the bot's username from
    REDESK_TELEGRAM_BOT_USERNAME, else from Telegram), the WeChat QR scene and the command
    that makes its QR code for the door poster.

    Example: redesk centres links chengdong
    """
    from admin_scripts import centres
    from bot.channels.telegram.client import close_clients

    settings = _settings()
    with _centre_session(settings) as session:
        try:
            found = centres.links(session=session, code=code, settings=settings)
        finally:
            close_clients()  # the getMe client, if the bot's username was asked for
    say(f"centre {found.name} ({found.code})")
    if not found.active:
        say("inactive: every link below is answered as an unknown centre")
    say(f"web: {found.web}")
    if found.telegram:
        say(f"telegram: {found.telegram}")
    else:
        say(f"telegram: none ({found.telegram_note})")
    wechat = "" if found.wechat_on else " (WeChat is off: set REDESK_WECHAT_*)"
    say(f"wechat: QR scene {found.wechat_scene}{wechat}")
    say(f"wechat poster: {found.qrcode_command}")


@centres_app.command("qrcode")
def centres_qrcode(
    code: Annotated[str, typer.Argument(help="the centre's code")],
    out: Annotated[Path, typer.Option(help="the PNG file to write")],
    force: Annotated[
        bool, typer.Option("--force", help="overwrite an existing file (a link is replaced)")
    ] = False,
) -> None:
    """Ask WeChat for the centre's permanent QR code (scene: its code) and save it as a PNG for
    the door poster. Scanning it follows the official account and enters that centre.
    WeChat off exits 3, WeChat refusing exits 1, WeChat unreachable 5.

    Example: redesk centres qrcode chengdong --out chengdong.png
    """
    from wechatpy.exceptions import WeChatClientException

    from admin_scripts import centres
    from bot.channels.wechat.client import get_client
    from bot.channels.wechat.settings import wechat_settings

    if out.suffix.lower() != ".png":
        raise CliError(f"--out {out} must end in .png", Exit.USAGE)
    check_output(out, "--out", force=force)
    settings = _settings()
    _prepare_database(settings, auto_upgrade=settings.is_sqlite)
    engine = get_engine(settings.database_url)
    with session_scope(engine) as session:
        try:
            centre = centres.find(session, code)
        except ManageError as exc:
            raise _centre_errors(exc) from None
        scene = centre.code
        if not centre.active:
            raise CliError(f"centre {centres.label(centre)} is inactive.", Exit.FAILURE)
    if not wechat_settings(settings).enabled:
        raise CliError(
            "WeChat is off: set REDESK_WECHAT_APP_ID, REDESK_WECHAT_APP_SECRET and "
            "REDESK_WECHAT_TOKEN.",
            Exit.CONFIG,
        )
    client = get_client(settings)
    try:
        answer = client.permanent_qrcode(scene)
        image = centres.as_png(client.qrcode_image(str(answer["ticket"])))
    except WeChatClientException as exc:
        raise CliError(
            f"WeChat refused the QR code: {exc.errcode} {exc.errmsg}", Exit.FAILURE
        ) from None
    except centres.NotAnImage as exc:
        raise CliError(str(exc), Exit.FAILURE) from None
    except Exception as exc:  # a network failure, explained in one line
        raise CliError(
            f"WeChat at REDESK_WECHAT_API_URL could not be reached ({exc})", Exit.UNAVAILABLE
        ) from None
    replace_link(out)
    out.write_bytes(image)
    with session_scope(engine) as session:
        centre = centres.find(session, scene)
        centres.record_qrcode(
            session=session,
            centre=centre,
            ticket=str(answer["ticket"]),
            url=answer.get("url"),
            out=out,
            now=utcnow(),
        )
    say(f"QR code of {centres.label(centre)} (scene {scene}) written: {out}")
    if answer.get("url"):
        say(f"it encodes {answer['url']}")


def _data_help() -> str:
    """The paragraphs of `redesk --help` that say where the data is, as configured now."""
    default = default_data_dir()
    lines = [
        f"Default data directory: {default} (the database redesk.db and media/ are "
        "there, whatever the working directory; REDESK_DATA_DIR moves it)."
    ]
    try:
        settings = get_settings()
    except SettingsError:
        return lines[0]  # the verb itself reports the malformed setting
    url = make_url(settings.database_url).render_as_string(hide_password=True)
    lines.append(f"Database: {url}")
    lines.append(f"Media: {settings.media_dir}")
    return "\n\n".join(lines)


def main(args: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    app.info.help = f"{HELP}\n\n{_data_help()}"
    from bot.channels.base import CommandFailed

    try:
        app(args=args, prog_name="redesk", standalone_mode=False)
    except CliError as exc:
        err.print(f"error: {exc}")
        return int(exc.code)
    except CommandFailed as exc:
        err.print(f"error: {exc}")
        return exc.code
    except SettingsError as exc:
        err.print(f"error: {exc}")
        return int(Exit.CONFIG)
    except SQLAlchemyError as exc:
        err.print(f"error: database failure: {type(exc).__name__}: {exc}")
        return int(Exit.UNAVAILABLE)
    except Exception as exc:
        import click

        # Newer typer vendors click: its exceptions are typer's, not click's.
        if isinstance(exc, click.exceptions.Abort | typer.Abort):
            return int(Exit.FAILURE)
        if isinstance(
            exc, click.ClickException | getattr(typer, "TyperException", click.ClickException)
        ):
            if hasattr(exc, "show"):
                exc.show()
            else:
                err.print(f"error: {exc}")
            return int(Exit.USAGE)
        raise
    return int(Exit.OK)


_mount_channel_commands()


if __name__ == "__main__":
    sys.exit(main())
