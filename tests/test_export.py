"""`redesk export`, run in-process through main([...]) on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import io
import os
import re
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import event, insert
from sqlmodel import Session, col, select

from admin_scripts import export
from admin_scripts.cli import Exit, main
from admin_scripts.manage import admin_user
from bot import runtime as bot_runtime
from storage import queries
from storage.db import get_engine, session_scope
from storage.models import AdminAudit, Event, Person, Request
from tests.utils.cli import isolate_cli
from tests.utils.harness import Desk
from workflow import masking
from workflow.deadlines import LOCAL_TZ, format_local

#: The requester's and the walk-in's personal data, which a masked export must not show.
RESIDENT, RESIDENT_PHONE = "张三丰", "13812345678"
WALK_IN, WALK_IN_PHONE = "李四", "13900001111"


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The command pointed at the database under test, run from an empty directory."""
    here = tmp_path / "here"  # not where the SQLite file is
    here.mkdir()
    isolate_cli(monkeypatch, here, db_url)
    yield here
    bot_runtime.reset()


@dataclass
class Story:
    """Two requests: one through a department to a satisfied close, one walk-in reopened."""

    closed: str
    reopened: str


def tell_story(desk: Desk) -> Story:
    """A resident's request forwarded, taken, completed, approved and rated; a walk-in's
    request handled by the committee and rated 未解决 (reopened)."""
    desk.add_department("城管执法")
    worker = desk.worker("王书记")
    staff = desk.staff("城管执法", "李科长")
    resident = desk.identity(RESIDENT)
    closed = resident.send(f"小区门口的路灯坏了，我是{RESIDENT}，电话{RESIDENT_PHONE}")[-1].number
    resident.send(f"受理 {closed}")  # refused: not in the history
    worker.send(f"转单 {closed} 城管执法")
    staff.send(f"接收 {closed}")
    staff.send(f"办结 {closed} 已修复，已电话告知 {RESIDENT_PHONE}")
    worker.send(f"回单 {closed}")
    resident.send(f"评价 {closed} 已解决 满意")

    worker.intake(
        WALK_IN, WALK_IN_PHONE, f'楼道堆放杂物, "很危险"\n联系人{WALK_IN} {WALK_IN_PHONE}'
    )
    reopened = desk.requests()[-1].number
    worker.send(f"受理 {reopened}")
    worker.send(f"办结 {reopened} 已清理")
    worker.send(f"回单 {reopened}")
    worker.send(f"评价 {reopened} 未解决 不满意")
    return Story(closed=closed, reopened=reopened)


def ok_events(desk: Desk, number: str) -> list[Event]:
    """A request's history without refused attempts."""
    return [e for e in desk.events(number) if e.outcome == "ok"]


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file written by the export (UTF-8 with BOM) as dicts."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def audits(desk: Desk) -> list[AdminAudit]:
    """Every admin audit row."""
    with Session(desk.runtime.engine) as session:
        return list(session.exec(select(AdminAudit)).all())


def everything_masked(text: str) -> None:
    """Asserts no requester's full name or phone number is in `text`, and their masks are."""
    for secret in (RESIDENT, RESIDENT_PHONE, WALK_IN, WALK_IN_PHONE):
        assert secret not in text
    for mask in ("张*", "138****5678", "李*", "139****1111"):
        assert mask in text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("电话13812345678。", "电话138****5678。"),
        ("+8613812345678", "+86138****5678"),
        ("138-1234-5678 或 138 1234 5678", "138****5678 或 138****5678"),
        ("订单号2026113812345678", "订单号2026113812345678"),  # part of a longer number
        ("座机028-86001234", "座机028-86001234"),  # not a mobile number
    ],
)
def test_mobile_numbers_inside_text_are_masked(text: str, masked: str) -> None:
    assert masking.mask_mobiles(text) == masked


def test_names_keep_their_first_character_and_phones_their_ends() -> None:
    assert [masking.mask_name(name) for name in ("张三", "王", "欧阳娜娜", "")] == [
        "张*",
        "*",
        "欧*",
        "",
    ]
    assert [masking.mask_phone(phone) for phone in ("13812345678", "12345", "028-86001234")] == [
        "138****5678",
        "****",
        "028****1234",
    ]


def test_a_csv_export_masks_requesters_names_and_phones_even_inside_the_text(
    cli: Path, desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given requests whose texts, results and notes carry the requesters' names and phones
    tell_story(desk)

    # When they are exported without --include-pii, with the events file
    code = main(["export", "--out", "requests.csv", "--events", "events.csv"])

    # Then neither file shows a requester's full name or phone number
    assert code == Exit.OK
    for name in ("requests.csv", "events.csv"):
        everything_masked((cli / name).read_text(encoding="utf-8-sig"))
    # And workers and department staff keep their names
    requests = (cli / "requests.csv").read_text(encoding="utf-8-sig")
    assert "王书记" in requests and "李科长" in requests
    # And nothing is put on record, and the captured output carries only the summary
    assert audits(desk) == []
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "exported 2 requests to requests.csv, 11 events to events.csv"


def test_the_csv_has_a_bom_the_headers_and_one_row_per_request_with_its_history(
    cli: Path, desk: Desk
) -> None:
    # Given the two stories
    story = tell_story(desk)

    # When exported
    assert main(["export", "--out", "requests.csv"]) == Exit.OK

    # Then the file starts with the BOM and ends rows with CRLF (RFC 4180)
    raw = (cli / "requests.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf" + ",".join(export.REQUEST_HEADERS).encode() + b"\r\n")
    # And there is one row per request, oldest first
    rows = read_csv(cli / "requests.csv")
    assert [row["编号"] for row in rows] == [story.closed, story.reopened]
    closed, reopened = rows
    request = desk.request(story.closed)
    assert closed["受理时间"] == format_local(request.created_at)
    assert (closed["渠道"], closed["状态"], closed["部门"], closed["承办人"]) == (
        "网页",
        "已办结",
        "城管执法",
        "李科长",
    )
    assert (closed["群众"], closed["是否解决"], closed["满意度"], closed["重办次数"]) == (
        "张*",
        "是",
        "满意",
        "0",
    )
    assert closed["是否按时响应"] == "是"
    assert closed["办结时间"] == format_local(request.closed_at)
    assert closed["响应时限"] == format_local(request.response_due_at)
    assert closed["办理结果"] == "已修复，已电话告知 138****5678"
    # And the history holds the ok events only, oldest first, in one cell
    history = closed["办理经过"].split(export.HISTORY_SEPARATOR)
    assert len(history) == len(ok_events(desk, story.closed)) == 6
    first_at = format_local(ok_events(desk, story.closed)[0].created_at)
    assert history[0] == f"{first_at} 接单 张*"
    assert history[1].endswith("转单 王书记：城管执法")
    assert history[-1].endswith("评价 张*：已解决 满意")
    assert "受理 张*" not in closed["办理经过"]
    # And the walk-in's row: contact masked, reopened, text with comma, quotes and newline intact
    assert (reopened["渠道"], reopened["群众"], reopened["联系电话"]) == (
        "接待台",
        "李*",
        "139****1111",
    )
    assert (reopened["状态"], reopened["重办次数"], reopened["是否解决"], reopened["满意度"]) == (
        "待受理",
        "1",
        "否",
        "不满意",
    )
    assert reopened["诉求内容"] == '楼道堆放杂物, "很危险"\n联系人李* 139****1111'
    assert reopened["承办人"] == ""


def test_include_pii_shows_everything_and_puts_the_export_on_record(
    cli: Path, desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the two stories
    tell_story(desk)

    # When exported with personal data
    code = main(
        [
            "export",
            "--from",
            "2000-01-01",
            "--to",
            "2100-12-31",
            "--include-pii",
            "--out",
            "full.csv",
        ]
    )

    # Then names and phones are in full
    assert code == Exit.OK
    rows = read_csv(cli / "full.csv")
    assert (rows[0]["群众"], rows[1]["群众"], rows[1]["联系电话"]) == (
        RESIDENT,
        WALK_IN,
        WALK_IN_PHONE,
    )
    assert RESIDENT_PHONE in rows[0]["诉求内容"]
    # And the use is on record: who, what, where, how many rows
    [audit] = audits(desk)
    assert (audit.actor, audit.action) == (admin_user(), "export_pii")
    assert audit.detail == {
        "from": "2000-01-01",
        "to": "2100-12-31",
        "format": "csv",
        "out": str((cli / "full.csv").resolve()),
        "rows": 2,
    }
    # And the admin is told
    assert "recorded in the admin audit log" in capsys.readouterr().err


def test_a_pii_export_that_fails_half_way_is_on_record_and_leaves_no_file(
    cli: Path, desk: Desk, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the two stories, and a disk that fills up after the first request row
    tell_story(desk)
    written: list[list[Any]] = []
    real_request = export.CsvSink.request

    def fill_up(self: export.CsvSink, values: list[Any]) -> None:
        if written:
            raise OSError(28, "No space left on device")
        written.append(values)
        real_request(self, values)

    monkeypatch.setattr(export.CsvSink, "request", fill_up)

    # When exported with personal data
    code = main(["export", "--include-pii", "--out", "full.csv"])

    # Then the export fails, says why, and leaves no file (not even a partial one)
    assert code == Exit.FAILURE
    assert "No space left on device" in capsys.readouterr().err
    assert written and list(cli.iterdir()) == []
    # But its start is on record
    [audit] = audits(desk)
    assert audit.action == "export_pii" and audit.detail["rows"] == 2


def test_an_xlsx_export_has_the_requests_and_the_events_sheets(cli: Path, desk: Desk) -> None:
    # Given the two stories
    story = tell_story(desk)

    # When exported as xlsx (the format follows the file name)
    assert main(["export", "--out", "export.xlsx"]) == Exit.OK

    # Then the workbook opens with both sheets
    workbook = openpyxl.load_workbook(cli / "export.xlsx")
    assert workbook.sheetnames == [export.REQUESTS_SHEET, export.EVENTS_SHEET]
    requests = list(workbook[export.REQUESTS_SHEET].iter_rows(values_only=True))
    events = list(workbook[export.EVENTS_SHEET].iter_rows(values_only=True))
    workbook.close()
    # And the requests sheet holds the headers and a row per request
    assert requests[0] == export.REQUEST_HEADERS
    header = {name: index for index, name in enumerate(requests[0])}
    closed, reopened = requests[1:]
    assert closed[header["编号"]] == story.closed
    assert closed[header["状态"]] == "已办结"
    assert closed[header["群众"]] == "张*"
    assert closed[header["重办次数"]] == 0
    assert reopened[header["重办次数"]] == 1
    assert reopened[header["联系电话"]] == "139****1111"
    assert str(closed[header["办理经过"]]).count(export.HISTORY_SEPARATOR) == 5
    # And the events sheet a row per ok event, in order, masked like the requests
    assert events[0] == export.EVENT_HEADERS
    expected = ok_events(desk, story.closed) + ok_events(desk, story.reopened)
    assert len(events) - 1 == len(expected) == 11
    assert events[1] == (
        story.closed,
        format_local(expected[0].created_at),
        "接单",
        None,
        "待受理",
        "张*",
        None,
    )
    assert events[2][2:] == ("转单", "待受理", "已转单，待部门接收", "王书记", "城管执法")
    walk_in_intake = events[7]
    assert walk_in_intake[0] == story.reopened
    assert walk_in_intake[5] == "王书记"
    assert walk_in_intake[6] == "接待台代登记：李* 139****1111"
    everything_masked(repr(requests) + repr(events))


def test_an_xlsx_export_too_big_for_a_sheet_is_refused_before_anything_is_written(
    cli: Path, desk: Desk, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the two stories, and sheets that hold only five rows
    tell_story(desk)
    monkeypatch.setattr(export, "SHEET_ROWS", 5)

    # When exported as xlsx
    code = main(["export", "--out", "big.xlsx", "--include-pii"])

    # Then it is refused with the way out, and nothing is written or recorded
    assert code == Exit.USAGE
    assert "--format csv with --events" in capsys.readouterr().err
    assert not (cli / "big.xlsx").exists()
    with Session(get_engine(os.environ["REDESK_DATABASE_URL"])) as session:
        assert session.exec(select(AdminAudit)).all() == []


def test_text_that_looks_like_a_formula_stays_text(cli: Path, desk: Desk) -> None:
    # Given a request whose text would be a formula in a spreadsheet
    resident = desk.identity("王五")
    resident.send('=HYPERLINK("http://example.org","点我")')

    # When exported as csv and as xlsx
    assert main(["export", "--out", "r.csv"]) == Exit.OK
    assert main(["export", "--out", "r.xlsx"]) == Exit.OK

    # Then the csv cell is quoted out of formula position and the xlsx cell is a string
    assert read_csv(cli / "r.csv")[0]["诉求内容"] == '\'=HYPERLINK("http://example.org","点我")'
    workbook = openpyxl.load_workbook(cli / "r.xlsx")
    cell = workbook[export.REQUESTS_SHEET].cell(row=2, column=10)
    assert (cell.value, cell.data_type) == ('=HYPERLINK("http://example.org","点我")', "s")
    workbook.close()


def test_the_period_is_whole_shanghai_days_inclusive(cli: Path, desk: Desk) -> None:
    # Given four requests received just inside and just outside March (Asia/Shanghai),
    # numbered in another order than they came in
    resident = desk.identity("赵六")
    numbers = [resident.send(f"诉求{index}")[-1].number for index in range(4)]
    at = {
        numbers[0]: datetime(2026, 3, 31, 23, 59, tzinfo=LOCAL_TZ),  # last minute: in
        numbers[1]: datetime(2026, 4, 1, 0, 0, tzinfo=LOCAL_TZ),  # next day: out
        numbers[2]: datetime(2026, 2, 28, 23, 59, tzinfo=LOCAL_TZ),  # day before: out
        numbers[3]: datetime(2026, 3, 1, 0, 0, tzinfo=LOCAL_TZ),  # first minute: in
    }
    with session_scope(desk.runtime.engine) as session:
        for number, moment in at.items():
            request = session.exec(select(Request).where(Request.number == number)).one()
            request.created_at = moment.astimezone(UTC)
            session.add(request)

    # When March is exported
    assert (
        main(["export", "--from", "2026-03-01", "--to", "2026-03-31", "--out", "m.csv"]) == Exit.OK
    )

    # Then exactly the two March requests are in, oldest first, in Shanghai time
    rows = read_csv(cli / "m.csv")
    assert [(row["编号"], row["受理时间"]) for row in rows] == [
        (numbers[3], "2026-03-01 00:00"),
        (numbers[0], "2026-03-31 23:59"),
    ]
    # And one day alone is that day
    assert (
        main(["export", "--from", "2026-04-01", "--to", "2026-04-01", "--out", "d.csv"]) == Exit.OK
    )
    assert [row["编号"] for row in read_csv(cli / "d.csv")] == [numbers[1]]
    # And an open start takes everything up to the last day
    assert main(["export", "--to", "2026-02-28", "--out", "f.csv"]) == Exit.OK
    assert [row["编号"] for row in read_csv(cli / "f.csv")] == [numbers[2]]


def test_out_dash_writes_the_csv_to_standard_output(
    cli: Path, desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the two stories
    story = tell_story(desk)

    # When exported to standard output
    assert main(["export", "--out", "-"]) == Exit.OK

    # Then stdout is the CSV alone (with its BOM) and the summary is on stderr
    captured = capsys.readouterr()
    assert captured.out.startswith("\ufeff编号,受理时间,")
    rows = list(csv.DictReader(io.StringIO(captured.out.removeprefix("\ufeff"), newline="")))
    assert [row["编号"] for row in rows] == [story.closed, story.reopened]
    everything_masked(captured.out)
    assert "exported 2 requests to standard output" in captured.err
    assert list(cli.iterdir()) == []


def test_without_out_the_file_is_named_by_the_time_in_the_current_directory(
    cli: Path, desk: Desk
) -> None:
    # Given a request
    desk.identity("钱七").send("井盖松动")

    # When exported without --out, as csv and as xlsx
    assert main(["export"]) == Exit.OK
    assert main(["export", "--format", "xlsx"]) == Exit.OK

    # Then each is a timestamped file here
    names = sorted(path.name for path in cli.iterdir())
    assert len(names) == 2
    assert re.fullmatch(r"redesk-export-\d{8}-\d{6}\.csv", names[0])
    assert re.fullmatch(r"redesk-export-\d{8}-\d{6}\.xlsx", names[1])
    assert len(read_csv(cli / names[0])) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-02-30"], "--from must be a calendar date like 2026-03-01"),
        (["--to", "yesterday"], "--to must be a calendar date like"),
        (["--from", "2026-03-02", "--to", "2026-03-01"], "before --from"),
        (["--format", "pdf"], "--format must be csv or xlsx"),
        (["--format", "xlsx", "--out", "-"], "standard output"),
        (["--out", "x.xlsx", "--events", "e.csv"], "--events is for csv"),
        (["--out", "missing/x.csv"], "does not exist"),
    ],
    ids=[
        "impossible-date",
        "not-a-date",
        "to-before-from",
        "unknown-format",
        "xlsx-to-stdout",
        "events-with-xlsx",
        "no-such-directory",
    ],
)
def test_bad_options_are_usage_errors_and_write_nothing(
    cli: Path, desk: Desk, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # Given a request
    desk.identity("孙八").send("噪音扰民")

    # When the export is called wrongly
    code = main(["export", "--include-pii", *args])

    # Then it is a usage error with one line saying what is wrong, and nothing happened
    assert code == Exit.USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(cli.iterdir()) == []
    assert audits(desk) == []


def test_an_unreachable_database_exits_unavailable(
    cli: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDESK_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    bot_runtime.reset()

    assert main(["export", "--out", "x.csv"]) == Exit.UNAVAILABLE
    assert "does not answer" in capsys.readouterr().err
    assert list(cli.iterdir()) == []


# --- streaming ----------------------------------------------------------------------------


def add_requests(desk: Desk, count: int, *, start: int = 0) -> None:
    """`count` generated requests of one requester, each with two events, inserted in bulk."""
    base = datetime(2026, 5, 1, tzinfo=UTC)
    with session_scope(desk.runtime.engine) as session:
        requester = Person(
            channel="web", external_id=f"bulk-{start}", display_name="周九", phone=RESIDENT_PHONE
        )
        session.add(requester)
        session.flush()
        centre_id = queries.default_centre(session=session).id
        rows = [
            {
                "number": f"SQ-20260501-{start + index:05d}",
                "centre_id": centre_id,
                "requester_id": requester.id,
                "channel": "web",
                "text": f"第{start + index}件：路灯不亮，电话{RESIDENT_PHONE}",
                "state": "handling",
                "created_at": base + timedelta(minutes=start + index),
                "updated_at": base,
                "reopen_count": 0,
            }
            for index in range(count)
        ]
        ids = session.scalars(insert(Request).returning(col(Request.id)), rows).all()
        session.execute(
            insert(Event),
            [
                {
                    "request_id": request_id,
                    "actor_id": requester.id if kind == "submit" else None,
                    "action": kind,
                    "from_state": None if kind == "submit" else "new",
                    "to_state": "new" if kind == "submit" else "handling",
                    "outcome": "ok",
                    "note": None,
                    "created_at": base,
                }
                for request_id in ids
                for kind in ("submit", "accept")
            ],
        )


def test_the_export_reads_through_a_streaming_cursor_in_batches(
    cli: Path, desk: Desk, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 100 requests and batches of 40
    add_requests(desk, 100)
    monkeypatch.setattr(export, "BATCH_SIZE", 40)
    statements: list[tuple[str, bool, str]] = []

    def spy(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        streaming = bool(context.execution_options.get("stream_results"))
        statements.append((statement, streaming, type(cursor).__name__))

    engine = get_engine(db_url)
    event.listen(engine, "before_cursor_execute", spy)
    try:
        # When they are exported
        assert main(["export", "--out", "r.csv", "--events", "e.csv"]) == Exit.OK
    finally:
        event.remove(engine, "before_cursor_execute", spy)

    # Then the requests were read by one streaming query (a named server-side cursor on
    # PostgreSQL), and the events by one query per batch of 40: 3, not 100
    reads = [
        s
        for s in statements
        if re.match(r"\s*SELECT\b.*\bFROM requests\b", s[0], re.S) and "count(" not in s[0]
    ]
    assert len(reads) == 1 and reads[0][1]
    if engine.dialect.name == "postgresql":
        assert reads[0][2] == "ServerCursor"
    event_reads = [s for s in statements if re.search(r"\bFROM events\b", s[0])]
    assert len(event_reads) == 3
    # And every request is there with its history
    rows = read_csv(cli / "r.csv")
    assert len(rows) == 100 and len(read_csv(cli / "e.csv")) == 200
    assert all(row["办理经过"].count(export.HISTORY_SEPARATOR) == 1 for row in rows)
    assert rows[0]["编号"] == "SQ-20260501-00000" and rows[-1]["编号"] == "SQ-20260501-00099"


def peak_memory_of_export(args: list[str]) -> int:
    """The peak of Python memory allocated while the export runs, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert main(args) == Exit.OK
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "xlsx"])
def test_memory_does_not_grow_with_the_number_of_rows(
    cli: Path, desk: Desk, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    # Given batches of 250 rows, and an export run once so that one-time costs
    # (imports, compiled statements) are behind us
    monkeypatch.setattr(export, "BATCH_SIZE", 250)
    add_requests(desk, 1000)
    assert main(["export", "--out", f"warm.{suffix}"]) == Exit.OK

    # When 1,000 rows are exported, then 3,000
    small = peak_memory_of_export(["export", "--out", f"small.{suffix}"])
    add_requests(desk, 2000, start=1000)
    large = peak_memory_of_export(["export", "--out", f"large.{suffix}"])

    # Then the peak stays about the same (holding every row would triple it)
    assert large < small * 1.3, (small, large)
    # And the files hold what they should
    if suffix == "csv":
        assert len(read_csv(cli / "large.csv")) == 3000
    else:
        workbook = openpyxl.load_workbook(cli / "large.xlsx", read_only=True)
        sizes = [
            sum(1 for _ in workbook[name].iter_rows(values_only=True))
            for name in (export.REQUESTS_SHEET, export.EVENTS_SHEET)
        ]
        workbook.close()
        assert sizes == [3001, 6001]


# --- files already there --------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--out", "--events"])
def test_an_existing_file_is_refused_before_anything_is_read_written_or_recorded(
    cli: Path, desk: Desk, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    # Given the two stories and a file of the admin's own where the export would go
    tell_story(desk)
    mine = cli / "mine.csv"
    mine.write_text("keep me\n", encoding="utf-8")
    args = {
        "--out": ["--out", "mine.csv"],
        "--events": ["--out", "requests.csv", "--events", "mine.csv"],
    }[option]

    # When a personal-data export names it
    code = main(["export", "--include-pii", *args])

    # Then it is a usage error with one line naming the file and --force
    assert code == Exit.USAGE
    err = capsys.readouterr().err.strip()
    assert err == f"error: {option} mine.csv exists; pass --force to overwrite it."
    # And the file is untouched, nothing else was written and nothing was put on record
    assert mine.read_text(encoding="utf-8") == "keep me\n"
    assert sorted(path.name for path in cli.iterdir()) == ["mine.csv"]
    assert audits(desk) == []


def test_force_overwrites_an_existing_out_file(cli: Path, desk: Desk) -> None:
    # Given the two stories and last month's export where this one goes
    story = tell_story(desk)
    (cli / "requests.csv").write_text("old\n", encoding="utf-8")

    # When exported with --force
    code = main(["export", "--out", "requests.csv", "--force"])

    # Then the file holds this export
    assert code == Exit.OK
    assert [row["编号"] for row in read_csv(cli / "requests.csv")] == [story.closed, story.reopened]


def test_a_dangling_symlink_is_refused_naming_the_link_and_its_missing_target(
    cli: Path, desk: Desk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a request and a symbolic link here pointing into a directory that does not exist
    desk.identity("周九").send("楼道灯不亮")
    target = tmp_path / "gone" / "loot.csv"
    (cli / "out.csv").symlink_to(target)

    # When the export names the link
    code = main(["export", "--include-pii", "--out", "out.csv"])

    # Then the error names the link and where it points, saying that does not exist
    assert code == Exit.USAGE
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --out out.csv is a symbolic link to {target}, which does not "
        "exist; it is not followed: name another file, or pass --force to replace "
        "the link with the file."
    )
    # And nothing was created, at the link or where it points, and nothing was recorded
    assert not (tmp_path / "gone").exists()
    assert (cli / "out.csv").is_symlink()
    assert audits(desk) == []


def test_a_symlink_to_a_file_is_not_followed_and_with_force_the_link_is_replaced(
    cli: Path, desk: Desk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a request and a link here to a file elsewhere that must stay as it is
    desk.identity("吴十").send("垃圾清运不及时")
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("do not overwrite\n", encoding="utf-8")
    (cli / "out.csv").symlink_to(elsewhere)

    # When exported to the link without --force
    code = main(["export", "--out", "out.csv"])

    # Then it is refused, naming the link and its target, and the target is untouched
    assert code == Exit.USAGE
    assert f"--out out.csv is a symbolic link to {elsewhere};" in capsys.readouterr().err
    assert elsewhere.read_text(encoding="utf-8") == "do not overwrite\n"

    # When exported with --force
    assert main(["export", "--out", "out.csv", "--force"]) == Exit.OK

    # Then the link itself became the export; the file it pointed to is still untouched
    assert not (cli / "out.csv").is_symlink()
    assert len(read_csv(cli / "out.csv")) == 1
    assert elsewhere.read_text(encoding="utf-8") == "do not overwrite\n"
