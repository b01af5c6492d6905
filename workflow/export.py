"""The export of requests received in a period, with their whole history, as CSV or xlsx: the
one implementation behind `redesk export` (admin_scripts/export.py) and the console's download
(GET /api/console/export).

The export streams: requests are read through a server-side cursor in batches, each batch's
events come with one more query, and rows are written as they come (xlsx through openpyxl's
write-only workbook). Memory holds about one batch, however long the period.

Requesters' personal data is masked unless the caller asks for it; the caller records such an
export in the admin audit log before anything is written. Workflow does not import the chat
side: the labels people read (states, actions, channels) come in as `Labels`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import Row
from sqlalchemy.engine import Engine
from sqlmodel import Session

from storage import queries
from storage.db import read_engine
from storage.models import Role
from workflow.deadlines import format_local
from workflow.errors import WorkflowError
from workflow.masking import Redactor

#: Requests read per round trip (and events fetched per query): memory holds about one batch.
BATCH_SIZE = 1000

#: Rows of an Excel sheet, the header included.
SHEET_ROWS = 1_048_576

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


# --- rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """What people read for a state, an action and a channel (bot/texts.py provides them)."""

    state: Callable[[str], str]
    action: Callable[[str], str]
    channels: Mapping[str, str]


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


def event_row(event: Row[Any], request: Row[Any], redact: Redactor, labels: Labels) -> list[str]:
    """One row of the events sheet / file."""
    return [
        request.number,
        _local(event.created_at),
        labels.action(event.action),
        labels.state(event.from_state) if event.from_state else "",
        labels.state(event.to_state) if event.to_state else "",
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
    labels: Labels,
    *,
    with_centre: bool = False,
) -> list[Any]:
    """One row of the requests sheet / file, its history in the last cell (`with_centre`:
    the holding centre's name after 渠道)."""
    history = HISTORY_SEPARATOR.join(
        f"{_local(event.created_at)} {labels.action(event.action)} "
        f"{_actor(event, request, redact)}" + (f"：{redact.text(event.note)}" if event.note else "")
        for event in events
    )
    centre = [request.centre_name] if with_centre else []
    return [
        request.number,
        _local(request.created_at),
        labels.channels.get(request.channel, request.channel),
        *centre,
        request.category or "",
        labels.state(request.state),
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


def open_sink(
    format_: str, out: str, *, events: str | None = None, with_centre: bool = False
) -> Sink:
    """The writer for a format (csv, xlsx) to `out` (`-`: standard output, csv only), with the
    中心 column when `with_centre`."""
    headers = request_headers(with_centre=with_centre)
    if format_ == "xlsx":
        return XlsxSink(out, headers)
    return CsvSink(out, events, headers)


# --- the export ---------------------------------------------------------------------------


class ExportError(WorkflowError):
    """An export that cannot be made as asked."""


class UnknownCentre(ExportError):
    """No centre has the code asked for."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class TooManyRows(ExportError):
    """An xlsx export whose sheets would hold more rows than Excel opens."""

    def __init__(self, requests: int, events: int, sheet_rows: int) -> None:
        super().__init__(f"{requests} requests, {events} events")
        self.requests = requests
        self.events = events
        self.sheet_rows = sheet_rows


@dataclass(frozen=True)
class Plan:
    """What an export will read: the period, the centre's subtree, and how many requests."""

    start: datetime | None
    end: datetime | None
    #: The condition on Request of the centre's subtree, or None for every centre.
    within: Any
    #: Whether the requests sheet has the 中心 column (a centre named, or several centres).
    with_centre: bool
    #: The requests the export will hold.
    total: int


@dataclass(frozen=True)
class Summary:
    """What an export wrote."""

    requests: int
    events: int
    audit_id: int | None


def reader(engine: Engine) -> Engine:
    """The read-only engine; on PostgreSQL one snapshot for the count and the rows."""
    found = read_engine(engine)
    if found.dialect.name == "postgresql":
        found = found.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return found


def plan(
    session: Session,
    *,
    start: datetime | None,
    end: datetime | None,
    centre: str | None,
    xlsx: bool,
    sheet_rows: int = SHEET_ROWS,
) -> Plan:
    """Counts what an export of the requests received in [start, end) in `centre`'s subtree
    (its code; None: every centre) will hold.

    Raises:
        UnknownCentre: No centre has that code.
        TooManyRows: `xlsx` and a sheet would hold more than `sheet_rows` rows.
    """
    within = centre_condition(session, centre)
    with_centre = centre is not None or len(queries.list_centres(session=session)) > 1
    total = queries.count_requests_received(session=session, start=start, end=end, within=within)
    if xlsx:
        events = queries.count_events_received(session=session, start=start, end=end, within=within)
        if max(total, events) + 1 > sheet_rows:
            raise TooManyRows(total, events, sheet_rows)
    return Plan(start=start, end=end, within=within, with_centre=with_centre, total=total)


def write_rows(
    session: Session,
    chosen: Plan,
    sink: Sink,
    *,
    include_pii: bool,
    labels: Labels,
    batch_size: int = BATCH_SIZE,
    advance: Callable[[int], None] = lambda rows: None,
) -> tuple[int, int]:
    """Writes every request of `chosen` and its events to `sink` (not finished: the caller
    finishes or aborts it); (requests, events) written. `advance` hears of each batch."""
    requests = events = 0
    for batch in queries.stream_requests_received(
        session=session,
        start=chosen.start,
        end=chosen.end,
        batch_size=batch_size,
        within=chosen.within,
    ):
        history: dict[int, list[Row[Any]]] = defaultdict(list)
        for event in queries.events_of_requests(
            session=session, request_ids=[row.id for row in batch]
        ):
            history[event.request_id].append(event)
        for row in batch:
            redact = redactor_for(row, include_pii)
            sink.request(
                request_row(row, history[row.id], redact, labels, with_centre=chosen.with_centre)
            )
            for event in history[row.id]:
                sink.event(event_row(event, row, redact, labels))
                events += 1
            requests += 1
        advance(len(batch))
    return requests, events


def centre_condition(session: Session, code: str | None) -> Any:
    """The condition on Request of a centre's subtree (its code), or None for every centre.

    Raises:
        UnknownCentre: No centre has that code.
    """
    if code is None:
        return None
    centre = queries.get_centre_by_code(session=session, code=code)
    if centre is None:
        raise UnknownCentre(code)
    return queries.subtree_condition(centre)
