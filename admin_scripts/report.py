"""How a stats Report is shown: a rich table, CSV, JSON, xlsx, and a PNG chart."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from admin_scripts.stats import (
    COUNTS,
    DURATIONS,
    MEASURES,
    RATES,
    Figures,
    Report,
    describe_period,
    duration,
    flat,
    percent,
    table_columns,
)
from bot.texts import ROLE_LABELS

#: The first column of a flat row, and the label of the totals row.
GROUP_COLUMN = "分组"
TOTAL = "合计"

#: --by -> what the group column holds, for headings.
GROUP_NAMES: dict[str, str] = {
    "category": "类别",
    "department": "部门",
    "worker": ROLE_LABELS["worker"],
    "day": "日",
    "week": "周（周一）",
    "month": "月",
    "centre": "中心",
}


def render_table(console: Console, report: Report, departments: Sequence[Figures]) -> None:
    """The totals, the rows of the grouping, and the "who is slow" department ranking."""
    scope = f"  {escape(report.centre.name)}（含下级）" if report.centre is not None else ""
    console.print(f"[bold]诉求统计[/bold]  {describe_period(report.period)}{scope}")
    console.print(_totals_table(report.totals))
    if report.by is not None:
        title = "中心（慢者在前）" if report.by == "centre" else GROUP_NAMES[report.by]
        console.print(_rows_table(title, report.rows, ranked=report.by in ("department", "centre")))
    if report.by != "department" and departments:
        console.print(_rows_table("部门（慢者在前）", departments, ranked=True))


def _totals_table(totals: Figures) -> Table:
    table = Table(title="合计", show_header=True, header_style="bold")
    table.add_column("指标")
    table.add_column("数值", justify="right")
    for name, label in COUNTS:
        table.add_row(label, str(totals.counts[name]))
    for name, label, _, _ in RATES:
        table.add_row(label, percent(totals.rates[name]))
    for name, label, _ in DURATIONS:
        for measure, shown in MEASURES:
            shown = "中位数" if measure == "median" else shown
            working = totals.durations.get(f"{name}_{measure}_working_seconds")
            calendar = totals.durations.get(f"{name}_{measure}_calendar_seconds")
            table.add_row(
                f"{label}用时{shown}", f"工作 {duration(working)} / 自然 {duration(calendar)}"
            )
    return table


def _rows_table(title: str, rows: Sequence[Figures], *, ranked: bool) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    if ranked:
        table.add_column("排名", justify="right")
    table.add_column(title.split("（")[0], no_wrap=True)
    for _, label in COUNTS[:4]:
        table.add_column(label, justify="right")
    for _, label, _, _ in RATES[:3]:
        table.add_column(label, justify="right")
    table.add_column("回单用时中位（工作时间）", justify="right")
    table.add_column("回单用时平均（工作时间）", justify="right")
    for index, row in enumerate(rows, start=1):
        cells = [row.key or ""]
        cells += [str(row.counts[name]) for name, _ in COUNTS[:4]]
        cells += [percent(row.rates[name]) for name, _, _, _ in RATES[:3]]
        cells.append(duration(row.durations.get("reply_median_working_seconds")))
        cells.append(duration(row.durations.get("reply_mean_working_seconds")))
        table.add_row(*([str(index)] if ranked else []), *cells)
    return table


def _flat_rows(report: Report) -> list[list[Any]]:
    rows = [[row.key, *flat(row)] for row in report.rows]
    rows.append([TOTAL, *flat(report.totals)])
    return rows


def to_csv(report: Report) -> str:
    """The rows then the totals row, with Chinese column names (rates as fractions)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([GROUP_COLUMN, *table_columns()])
    for row in _flat_rows(report):
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()


def to_json(report: Report) -> str:
    """One object (docs/statistics.md)."""
    return json.dumps(report.as_json(), ensure_ascii=False, indent=2)


def write_xlsx(report: Report, path: Path) -> None:
    """One sheet 统计: the rows then the totals row; rates as percentages."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "统计"
    columns = [GROUP_COLUMN, *table_columns()]
    sheet.append(columns)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    rate_columns = {
        index + 1
        for index, name in enumerate(columns)
        if name in {label for _, label, _, _ in RATES}
    }
    for row in _flat_rows(report):
        sheet.append(row)
        for column in rate_columns:
            sheet.cell(row=sheet.max_row, column=column).number_format = "0.0%"
    sheet.freeze_panes = "B2"
    book.properties.title = f"诉求统计 {describe_period(report.period)}"
    book.save(path)


def write_chart(
    trend: Report, departments: Sequence[Figures], path: Path, *, by_centre: bool = False
) -> None:
    """A PNG: received and closed per period, and the 三率 per department (`by_centre`: the
    rows given are centres)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    font = _cjk_font()
    font_manager.fontManager.addfont(str(font))
    name = font_manager.FontProperties(fname=str(font)).get_name()
    with matplotlib.rc_context({"font.family": name, "axes.unicode_minus": False}):
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), layout="constrained")
        keys = [row.key or "" for row in trend.rows]
        top.plot(keys, [row.counts["received"] for row in trend.rows], marker="o", label="受理量")
        top.plot(keys, [row.counts["closed"] for row in trend.rows], marker="s", label="办结量")
        top.set_title(f"受理与办结趋势（{GROUP_NAMES.get(trend.by or 'month', '')}）")
        top.legend()
        top.tick_params(axis="x", labelrotation=45)
        names = [row.key or "" for row in departments]
        width = 0.25
        for offset, (rate, label, _, _) in enumerate(RATES[:3]):
            values = [100 * (row.rates[rate].value or 0.0) for row in departments]
            top_positions = [index + (offset - 1) * width for index in range(len(names))]
            bottom.bar(top_positions, values, width, label=label)
        bottom.set_xticks(range(len(names)), names)
        bottom.set_ylim(0, 105)
        bottom.set_ylabel("%")
        bottom.set_title(f"各{'中心' if by_centre else '部门'}三率（无数据记为 0）")
        bottom.legend()
        scope = f" {trend.centre.name}（含下级）" if trend.centre is not None else ""
        figure.suptitle(f"诉求统计 {describe_period(trend.period)}{scope}")
        figure.savefig(path, format="png", dpi=100)
        plt.close(figure)


def _cjk_font() -> Path:
    """Noto Sans CJK SC, shipped by the mplfonts package."""
    import mplfonts

    return Path(mplfonts.__file__).parent / "fonts" / "NotoSansCJKsc-Regular.otf"
