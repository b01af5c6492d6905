"""`redesk export`: requests received in a period, with their whole history, as CSV or xlsx.

The export streams: requests are read through a server-side cursor in batches of BATCH_SIZE,
each batch's events come with one more query, and rows are written as they come (xlsx through
openpyxl's write-only workbook). Memory holds about one batch, however long the period.

Requesters' personal data is masked unless the admin asks for it (`--include-pii`); such an
export is recorded in the admin audit log before anything is written.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

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
from sqlalchemy import Row
from sqlalchemy.engine import Engine
from sqlmodel import Session

from admin_scripts.cli import CliError, Exit, check_output
from admin_scripts.manage import audit
from bot.texts import action_label, channel_labels, state_label
from storage import queries
from storage.dates import parse_date
from storage.db import read_engine, session_scope
from storage.models import AdminAudit, Role, utcnow
from workflow.deadlines import LOCAL_TZ, format_local

#: Requests read per round trip (and events fetched per query): memory holds about one batch.
BATCH_SIZE = 1000

#: Fewer rows than this export in a blink: no progress bar.
PROGRESS_MIN_ROWS = 2000

#: The formats and the file suffix of each.
FORMATS: tuple[str, ...] = ("csv", "xlsx")

#: The requests sheet / file: one row per request.
REQUEST_HEADERS: tuple[str, ...] = (
    "编号",
    "受理时间",
    "渠道",
    "类别",
    "状态",
    "部门",
    "承办人",
    "群众",
    "联系电话",
    "诉求内容",
    "办理结果",
    "是否解决",
    "满意度",
    "重办次数",
    "首次响应时间",
    "是否按时响应",
    "首次回单时间",
    "办结时间",
    "响应时限",
    "办结时限",
    "办理经过",
)

#: The column of the centre holding each request, after 渠道: there when the export names a
#: centre or the install has several (a single-centre install's export is unchanged).
CENTRE_HEADER = "中心"


def request_headers(*, with_centre: bool) -> tuple[str, ...]:
    """The requests sheet's columns: REQUEST_HEADERS, with 中心 after 渠道 if `with_centre`."""
    if not with_centre:
        return REQUEST_HEADERS
    at = REQUEST_HEADERS.index("渠道") + 1
    return (*REQUEST_HEADERS[:at], CENTRE_HEADER, *REQUEST_HEADERS[at:])


#: The events sheet / file: one row per event (outcome ok) of the exported requests.
EVENT_HEADERS: tuple[str, ...] = ("编号", "时间", "动作", "从", "到", "操作人", "备注")

#: Sheet names of the xlsx workbook.
REQUESTS_SHEET = "诉求"
EVENTS_SHEET = "办理记录"

#: Separator of the events in the 办理经过 cell.
HISTORY_SEPARATOR = "；"

#: A mainland mobile number (11 digits starting with 1, maybe grouped 3-4-4 and prefixed
#: +86 / 0086 / 86) that is not part of a longer number.
MOBILE = re.compile(
    r"(?<![\d+])(?P<prefix>(?:\+|00)?86[- ]?)?"
    r"(?P<mobile>1\d{2}[- ]?\d{4}[- ]?\d{4})(?!\d)"
)

#: Characters a spreadsheet reads as the start of a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: Control characters an xlsx cell cannot hold.
XLSX_ILLEGAL = re.compile(r"[\000-\010\013\014\016-\037]")

#: Column widths of the xlsx sheets (characters), by header.
XLSX_WIDTHS: dict[str, float] = {
    "编号": 18,
    "受理时间": 17,
    "中心": 16,
    "时间": 17,
    "诉求内容": 40,
    "办理结果": 30,
    "办理经过": 60,
    "首次响应时间": 17,
    "首次回单时间": 17,
    "办结时间": 17,
    "响应时限": 17,
    "办结时限": 17,
    "备注": 40,
}


# --- masking ------------------------------------------------------------------------------


def mask_name(name: str | None) -> str:
    """A name reduced to its first character and "*" (张三 -> 张*; one character -> *)."""
    name = (name or "").strip()
    if not name:
        return ""
    return "*" if len(name) == 1 else name[0] + "*"


def mask_phone(phone: str | None) -> str:
    """A phone number reduced to its first 3 and last 4 characters (138****5678).

    Anything shorter than a mobile number (11 characters) becomes "****".
    """
    phone = (phone or "").strip()
    if not phone:
        return ""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 11 else "****"


def mask_mobiles(text: str) -> str:
    """`text` with every mobile number in it masked (13812345678 -> 138****5678)."""

    def masked(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group("mobile"))
        return (match.group("prefix") or "") + mask_phone(digits)

    return MOBILE.sub(masked, text)


class Redactor:
    """Masks one request's personal data in its cells, or passes everything through."""

    def __init__(
        self, *, names: Sequence[str | None], phones: Sequence[str | None], include_pii: bool
    ) -> None:
        self.include_pii = include_pii
        secrets: dict[str, str] = {}
        # One-character names cannot be looked for in text without masking every such
        # character; short phone-like strings likewise.
        for name in names:
            if name and len(name.strip()) >= 2:
                secrets[name.strip()] = mask_name(name)
        for phone in phones:
            if phone and len(phone.strip()) >= 5:
                secrets[phone.strip()] = mask_phone(phone)
        #: Longest first, so a name inside a longer one does not leave the rest showing.
        self.secrets = sorted(secrets.items(), key=lambda item: -len(item[0]))

    def name(self, value: str | None) -> str:
        """A requester's name."""
        return (value or "").strip() if self.include_pii else mask_name(value)

    def phone(self, value: str | None) -> str:
        """A requester's phone number."""
        return (value or "").strip() if self.include_pii else mask_phone(value)

    def text(self, value: str | None) -> str:
        """Free text (request, result, note): the requester's name and phone and every mobile
        number in it masked."""
        if not value:
            return ""
        if self.include_pii:
            return value
        for secret, masked in self.secrets:
            value = value.replace(secret, masked)
        return mask_mobiles(value)


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


# --- rows ---------------------------------------------------------------------------------


def _local(moment: datetime | None) -> str:
    """A moment as the histories show it (workflow.deadlines.format_local), "" for none."""
    return format_local(moment, missing="")


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("是" if value else "否")


def _actor(event: Row[Any], request: Row[Any], redact: Redactor) -> str:
    """Who did it: workers and staff by name, the requester masked, nobody as 系统."""
    if event.actor_id is None:
        return "系统"
    if not event.actor_name:
        return f"用户{event.actor_id}"
    if event.actor_role == Role.REQUESTER or event.actor_id == request.requester_id:
        return redact.name(event.actor_name)
    return str(event.actor_name)


def event_row(event: Row[Any], request: Row[Any], redact: Redactor) -> list[str]:
    """One row of the events sheet / file."""
    return [
        request.number,
        _local(event.created_at),
        action_label(event.action),
        state_label(event.from_state) if event.from_state else "",
        state_label(event.to_state) if event.to_state else "",
        _actor(event, request, redact),
        redact.text(event.note),
    ]


def _undertaker(request: Row[Any], events: Sequence[Row[Any]], redact: Redactor) -> str:
    """承办人: the worker handling it (做单), else who took or completed it in the department
    it is forwarded to now."""
    if request.handler_name:
        return str(request.handler_name)
    if not request.department:
        return ""
    found = ""
    for event in events:
        if event.action in ("forward", "return", "recall", "reopen"):
            found = ""
        elif event.action in ("take", "complete"):
            found = _actor(event, request, redact)
    return found


def request_row(
    request: Row[Any],
    events: Sequence[Row[Any]],
    redact: Redactor,
    *,
    with_centre: bool = False,
) -> list[Any]:
    """One row of the requests sheet / file, its history in the last cell (`with_centre`:
    the holding centre's name after 渠道)."""
    history = HISTORY_SEPARATOR.join(
        f"{_local(event.created_at)} {action_label(event.action)} "
        f"{_actor(event, request, redact)}" + (f"：{redact.text(event.note)}" if event.note else "")
        for event in events
    )
    centre = [request.centre_name] if with_centre else []
    return [
        request.number,
        _local(request.created_at),
        channel_labels().get(request.channel, request.channel),
        *centre,
        request.category or "",
        state_label(request.state),
        request.department or "",
        _undertaker(request, events, redact),
        redact.name(request.contact_name or request.requester_name),
        redact.phone(request.contact_phone or request.requester_phone),
        redact.text(request.text),
        redact.text(request.result),
        _yes_no(request.solved),
        request.satisfaction or "",
        request.reopen_count,
        _local(request.first_action_at),
        _yes_no(request.responded_in_time),
        _local(request.first_replied_at),
        _local(request.closed_at),
        _local(request.response_due_at),
        _local(request.resolution_due_at),
        history,
    ]


def redactor_for(request: Row[Any], include_pii: bool) -> Redactor:
    """The masking of one request: its requester's names and phone numbers."""
    return Redactor(
        names=[request.contact_name, request.requester_name],
        phones=[request.contact_phone, request.requester_phone],
        include_pii=include_pii,
    )


# --- writers ------------------------------------------------------------------------------


class Sink(Protocol):
    """Where the rows go."""

    def request(self, values: list[Any]) -> None:
        """Writes one request row."""

    def event(self, values: list[str]) -> None:
        """Writes one event row."""

    def finish(self) -> None:
        """Completes the output (the files appear under their names only now)."""

    def abort(self) -> None:
        """Drops whatever was written."""


class _Target:
    """A file written under a temporary name beside it and renamed when complete, so a failed
    export leaves no half file behind."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        # absolute(), not resolve(): beside the name given, so the rename replaces a symbolic
        # link there (allowed by --force) instead of writing where it points.
        handle, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".part", dir=self.path.absolute().parent
        )
        os.close(handle)
        self.partial = Path(name)

    def commit(self) -> None:
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class CsvSink:
    """UTF-8 with a BOM (Excel reads the Chinese right), RFC 4180 quoting, CRLF line ends."""

    def __init__(
        self, out: str, events: str | None, headers: Sequence[str] = REQUEST_HEADERS
    ) -> None:
        self._targets: list[_Target] = []
        self._closed = False
        self._stdout: io.TextIOWrapper | None = None
        if out == "-":
            sys.stdout.flush()
            if hasattr(sys.stdout, "buffer"):
                self._stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8-sig", newline="")
                self._requests_file: IO[str] = self._stdout
            else:  # a text-only stream (some embedders): the BOM by hand
                self._requests_file = sys.stdout
                sys.stdout.write("\ufeff")
        else:
            self._requests_file = self._open(out)
        self._events_file = self._open(events) if events else None
        self._requests = csv.writer(self._requests_file)
        self._requests.writerow(headers)
        self._events = csv.writer(self._events_file) if self._events_file else None
        if self._events is not None:
            self._events.writerow(EVENT_HEADERS)

    def _open(self, path: str) -> IO[str]:
        target = _Target(path)
        self._targets.append(target)
        return target.partial.open("w", encoding="utf-8-sig", newline="")

    def request(self, values: list[Any]) -> None:
        self._requests.writerow([_csv_cell(value) for value in values])

    def event(self, values: list[str]) -> None:
        if self._events is not None:
            self._events.writerow([_csv_cell(value) for value in values])

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stdout is not None:
            self._stdout.flush()
            self._stdout.detach()  # leave sys.stdout open
            self._stdout = None
        elif self._requests_file is sys.stdout:
            sys.stdout.flush()
        else:
            self._requests_file.close()
        if self._events_file is not None:
            self._events_file.close()

    def finish(self) -> None:
        self._close()
        for target in self._targets:
            target.commit()

    def abort(self) -> None:
        self._close()
        for target in self._targets:
            target.discard()


class XlsxSink:
    """A write-only workbook: the requests sheet is written as rows come, event rows are
    spooled to a temporary file and copied into the second sheet at the end (write-only
    sheets are written one after the other)."""

    def __init__(self, out: str, headers: Sequence[str] = REQUEST_HEADERS) -> None:
        from openpyxl import Workbook

        self._target = _Target(out)
        self._workbook = Workbook(write_only=True)
        self._requests = self._sheet(REQUESTS_SHEET, headers)
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
        self._spooled = csv.writer(self._spool)

    def _sheet(self, title: str, headers: Sequence[str]) -> Any:
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

        sheet = self._workbook.create_sheet(title)
        for index, header in enumerate(headers, 1):
            sheet.column_dimensions[get_column_letter(index)].width = XLSX_WIDTHS.get(header, 12)
        sheet.freeze_panes = "B2"
        bold = Font(bold=True)
        cells = []
        for header in headers:
            cell = WriteOnlyCell(sheet, header)
            cell.font = bold
            cells.append(cell)
        sheet.append(cells)
        return sheet

    @staticmethod
    def _cells(sheet: Any, values: Sequence[Any]) -> list[Any]:
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import ERROR_CODES

        cells: list[Any] = []
        for value in values:
            if isinstance(value, str):
                value = XLSX_ILLEGAL.sub("", value)
                if not value:
                    value = None
                elif value.startswith("=") or value in ERROR_CODES:
                    # Text, never a formula or an error value.
                    cell = WriteOnlyCell(sheet, value)
                    cell.data_type = "s"
                    value = cell
            cells.append(value)
        return cells

    def request(self, values: list[Any]) -> None:
        self._requests.append(self._cells(self._requests, values))

    def event(self, values: list[str]) -> None:
        self._spooled.writerow(values)

    def finish(self) -> None:
        events = self._sheet(EVENTS_SHEET, EVENT_HEADERS)
        self._spool.seek(0)
        for values in csv.reader(self._spool):
            events.append(self._cells(events, values))
        self._spool.close()
        self._workbook.save(self._target.partial)
        self._target.commit()

    def abort(self) -> None:
        self._spool.close()
        self._target.discard()


def open_sink(options: Options, *, with_centre: bool = False) -> Sink:
    """The writer for the chosen format (`with_centre`: with the 中心 column)."""
    headers = request_headers(with_centre=with_centre)
    if options.format == "xlsx":
        return XlsxSink(options.out, headers)
    return CsvSink(options.out, options.events, headers)


# --- the export ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What an export wrote."""

    requests: int
    events: int
    audit_id: int | None


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


def _reader(engine: Engine) -> Engine:
    """The read-only engine; on PostgreSQL one snapshot for the count and the rows."""
    reader = read_engine(engine)
    if reader.dialect.name == "postgresql":
        reader = reader.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    return reader


#: Rows of an Excel sheet, the header included.
SHEET_ROWS = 1_048_576


def _check_sheet_limits(
    session: Session, options: Options, requests: int, within: Any = None
) -> None:
    """Refuses an xlsx export whose sheets would hold more rows than Excel opens."""
    events = queries.count_events_received(
        session=session, start=options.start, end=options.end, within=within
    )
    if max(requests, events) + 1 > SHEET_ROWS:
        raise CliError(
            f"{requests} requests with {events} events do not fit an xlsx sheet (Excel opens "
            f"{SHEET_ROWS - 1} rows); export a shorter period, or use --format csv with "
            "--events FILE.",
            Exit.USAGE,
        )


def export(options: Options, *, engine: Engine, say: Console) -> Summary:
    """Writes the export `options` describes; returns what was written.

    Raises:
        CliError: the output could not be written (Exit.FAILURE).
    """
    requests = events = 0
    audit_id = None
    with Session(_reader(engine)) as session:
        within = _centre_condition(session, options.centre)
        with_centre = options.centre is not None or len(queries.list_centres(session=session)) > 1
        total = queries.count_requests_received(
            session=session, start=options.start, end=options.end, within=within
        )
        if options.format == "xlsx":
            _check_sheet_limits(session, options, total, within)
        if options.include_pii:
            audit = record_pii_use(engine, options, total)
            audit_id = audit.id
            say.print(
                f"personal data included: this use is recorded in the admin audit log "
                f"(entry {audit.id}, user {audit.actor})",
                markup=False,
                highlight=False,
            )
        try:
            sink = open_sink(options, with_centre=with_centre)
        except OSError as exc:
            raise CliError(f"cannot write the export: {exc}", Exit.FAILURE) from None
        try:
            with _progress(total) as advance:
                for batch in queries.stream_requests_received(
                    session=session,
                    start=options.start,
                    end=options.end,
                    batch_size=BATCH_SIZE,
                    within=within,
                ):
                    history: dict[int, list[Row[Any]]] = defaultdict(list)
                    for event in queries.events_of_requests(
                        session=session, request_ids=[row.id for row in batch]
                    ):
                        history[event.request_id].append(event)
                    for row in batch:
                        redact = redactor_for(row, options.include_pii)
                        sink.request(
                            request_row(row, history[row.id], redact, with_centre=with_centre)
                        )
                        for event in history[row.id]:
                            sink.event(event_row(event, row, redact))
                            events += 1
                        requests += 1
                    advance(len(batch))
            sink.finish()
        except OSError as exc:
            sink.abort()
            raise CliError(f"cannot write the export: {exc}", Exit.FAILURE) from None
        except BaseException:
            sink.abort()
            raise
    return Summary(requests=requests, events=events, audit_id=audit_id)


def _centre_condition(session: Session, code: str | None) -> Any:
    """The condition on Request of --centre (its subtree), or None for every centre.

    Raises:
        CliError: No centre has that code (Exit.NOT_FOUND).
    """
    if code is None:
        return None
    centre = queries.get_centre_by_code(session=session, code=code)
    if centre is None:
        raise CliError(f"--centre: no centre with the code {code!r}.", Exit.NOT_FOUND)
    return queries.subtree_condition(centre)
