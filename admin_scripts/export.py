"""`redesk export`: requests received in a period, with their whole history, as CSV or xlsx.

The rows, the masking and the writers are workflow/export.py's, which the console's download
shares; this module reads the command's options, shows progress on a terminal and records an
export with personal data (`--include-pii`) in the admin audit log before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from admin_scripts.cli import CliError, Exit, check_output
from admin_scripts.manage import audit
from bot.texts import action_label, channel_labels, state_label
from storage.dates import parse_date
from storage.db import session_scope
from storage.models import AdminAudit, utcnow
from workflow import export as exporting
from workflow.deadlines import LOCAL_TZ
from workflow.export import (
    CENTRE_HEADER,
    EVENT_HEADERS,
    EVENTS_SHEET,
    FORMATS,
    FORMULA_START,
    HISTORY_SEPARATOR,
    REQUEST_HEADERS,
    REQUESTS_SHEET,
    XLSX_ILLEGAL,
    XLSX_WIDTHS,
    CsvSink,
    Labels,
    Sink,
    Summary,
    XlsxSink,
    event_row,
    redactor_for,
    request_headers,
    request_row,
)
from workflow.masking import MOBILE, Redactor, mask_mobiles, mask_name, mask_phone

#: Requests read per round trip (and events fetched per query): memory holds about one batch.
BATCH_SIZE = exporting.BATCH_SIZE

#: Fewer rows than this export in a blink: no progress bar.
PROGRESS_MIN_ROWS = 2000

#: Rows of an Excel sheet, the header included.
SHEET_ROWS = exporting.SHEET_ROWS


def labels() -> Labels:
    """The labels people read in an export (bot/texts.py)."""
    return Labels(state=state_label, action=action_label, channels=channel_labels())


# --- options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to export, in what form, and where."""

    first_day: date | None
    last_day: date | None
    format: str
    out: str
    events: str | None
    include_pii: bool
    #: Only the requests held in this centre's subtree (its code); None: every centre.
    centre: str | None = None

    @property
    def start(self) -> datetime | None:
        """The first moment of the period (Shanghai midnight of the first day), UTC."""
        if self.first_day is None:
            return None
        return datetime.combine(self.first_day, time(0), LOCAL_TZ).astimezone(UTC)

    @property
    def end(self) -> datetime | None:
        """The moment after the period (Shanghai midnight after the last day), UTC."""
        if self.last_day is None:
            return None
        return datetime.combine(self.last_day + timedelta(days=1), time(0), LOCAL_TZ).astimezone(
            UTC
        )

    @property
    def to_stdout(self) -> bool:
        """Whether the requests go to standard output."""
        return self.out == "-"


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return parse_date(value)
    except ValueError as exc:
        raise CliError(f"{option} {exc}", Exit.USAGE) from None


def parse_options(
    *,
    from_: str | None,
    to: str | None,
    format_: str | None,
    out: str | None,
    events: str | None,
    include_pii: bool,
    now: datetime,
    force: bool = False,
    centre: str | None = None,
) -> Options:
    """Checks the command's options; usage errors raise CliError with Exit.USAGE.

    Without --format, the format follows --out's suffix (.xlsx), else csv. Without --out, the
    file is redesk-export-YYYYMMDD-HHMMSS.<format> (Shanghai time) in the current directory.
    An existing file or a symbolic link at --out or --events is refused unless ``force``
    (cli.check_output).
    """
    first, last = _day(from_, "--from"), _day(to, "--to")
    if first is not None and last is not None and last < first:
        raise CliError(f"--to {last} is before --from {first}.", Exit.USAGE)
    if format_ is None:
        format_ = "xlsx" if out is not None and out.lower().endswith(".xlsx") else "csv"
    format_ = format_.lower()
    if format_ not in FORMATS:
        raise CliError(f"--format must be csv or xlsx, not {format_!r}.", Exit.USAGE)
    if out is None:
        stamp = now.astimezone(LOCAL_TZ).strftime("%Y%m%d-%H%M%S")
        out = f"redesk-export-{stamp}.{format_}"
    if out == "-" and format_ == "xlsx":
        raise CliError(
            "An xlsx workbook cannot go to standard output: name a file with --out.", Exit.USAGE
        )
    if out != "-":
        check_output(out, "--out", force=force)
    if events is not None:
        if format_ == "xlsx":
            raise CliError(
                f"--events is for csv; an xlsx export has the events on its {EVENTS_SHEET} sheet.",
                Exit.USAGE,
            )
        if events == "-":
            raise CliError("--events needs a file name.", Exit.USAGE)
        if out != "-" and _written_at(events) == _written_at(out):
            raise CliError("--events and --out name the same file.", Exit.USAGE)
        check_output(events, "--events", force=force)
    return Options(
        first_day=first,
        last_day=last,
        format=format_,
        out=out,
        events=events,
        include_pii=include_pii,
        centre=centre,
    )


def open_sink(options: Options, *, with_centre: bool = False) -> Sink:
    """The writer for the chosen format (`with_centre`: with the 中心 column)."""
    return exporting.open_sink(
        options.format, options.out, events=options.events, with_centre=with_centre
    )


# --- the export ---------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Rows per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "— rows/s" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed"
        )


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long exports, only when stderr is a terminal."""
    console = Console(stderr=True)
    if total < PROGRESS_MIN_ROWS or not console.is_terminal:
        yield lambda rows: None
        return
    columns = (
        TextColumn("exporting"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("export", total=total)
        yield lambda rows: progress.advance(task, rows)


def _written_at(path: str) -> str:
    """The absolute path a file is written at: its directory resolved, its own name kept
    (a symbolic link there, replaced with --force, is not where the data goes)."""
    target = Path(path)
    return str(target.absolute().parent.resolve() / target.name)


def record_pii_use(engine: Engine, options: Options, rows: int) -> AdminAudit:
    """Records an export with personal data, committed on its own before the export starts."""
    out = options.out if options.to_stdout else _written_at(options.out)
    detail: dict[str, Any] = {
        "from": options.first_day.isoformat() if options.first_day else None,
        "to": options.last_day.isoformat() if options.last_day else None,
        "format": options.format,
        "out": out,
        "rows": rows,
    }
    if options.centre is not None:
        detail["centre"] = options.centre
    if options.events:
        detail["events"] = _written_at(options.events)
    with session_scope(engine) as session:
        record = audit(session, action="export_pii", detail=detail, at=utcnow())
        session.expunge(record)
    return record


def _check_sheet_limits(exc: exporting.TooManyRows) -> CliError:
    """The refusal of an xlsx export whose sheets would hold more rows than Excel opens."""
    return CliError(
        f"{exc.requests} requests with {exc.events} events do not fit an xlsx sheet (Excel "
        f"opens {exc.sheet_rows - 1} rows); export a shorter period, or use --format csv with "
        "--events FILE.",
        Exit.USAGE,
    )


def export(options: Options, *, engine: Engine, say: Console) -> Summary:
    """Writes the export `options` describes; returns what was written.

    Raises:
        CliError: an unknown --centre (Exit.NOT_FOUND), an xlsx too big for Excel
            (Exit.USAGE), or the output could not be written (Exit.FAILURE).
    """
    audit_id = None
    with Session(exporting.reader(engine)) as session:
        try:
            chosen = exporting.plan(
                session,
                start=options.start,
                end=options.end,
                centre=options.centre,
                xlsx=options.format == "xlsx",
                sheet_rows=SHEET_ROWS,
            )
        except exporting.UnknownCentre as exc:
            raise CliError(
                f"--centre: no centre with the code {exc.code!r}.", Exit.NOT_FOUND
            ) from None
        except exporting.TooManyRows as exc:
            raise _check_sheet_limits(exc) from None
        if options.include_pii:
            record = record_pii_use(engine, options, chosen.total)
            audit_id = record.id
            say.print(
                f"personal data included: this use is recorded in the admin audit log "
                f"(entry {record.id}, user {record.actor})",
                markup=False,
                highlight=False,
            )
        try:
            sink = open_sink(options, with_centre=chosen.with_centre)
        except OSError as exc:
            raise CliError(f"cannot write the export: {exc}", Exit.FAILURE) from None
        try:
            with _progress(chosen.total) as advance:
                requests, events = exporting.write_rows(
                    session,
                    chosen,
                    sink,
                    include_pii=options.include_pii,
                    labels=labels(),
                    batch_size=BATCH_SIZE,
                    advance=advance,
                )
            sink.finish()
        except OSError as exc:
            sink.abort()
            raise CliError(f"cannot write the export: {exc}", Exit.FAILURE) from None
        except BaseException:
            sink.abort()
            raise
    return Summary(requests=requests, events=events, audit_id=audit_id)


__all__ = [
    "BATCH_SIZE",
    "CENTRE_HEADER",
    "EVENTS_SHEET",
    "EVENT_HEADERS",
    "FORMATS",
    "FORMULA_START",
    "HISTORY_SEPARATOR",
    "MOBILE",
    "PROGRESS_MIN_ROWS",
    "REQUESTS_SHEET",
    "REQUEST_HEADERS",
    "SHEET_ROWS",
    "XLSX_ILLEGAL",
    "XLSX_WIDTHS",
    "CsvSink",
    "Options",
    "Redactor",
    "Sink",
    "Summary",
    "XlsxSink",
    "event_row",
    "export",
    "labels",
    "mask_mobiles",
    "mask_name",
    "mask_phone",
    "parse_options",
    "record_pii_use",
    "redactor_for",
    "request_headers",
    "request_row",
]
