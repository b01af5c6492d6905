"""Realistic demo departments and categories for a 商圈 party–mass service centre."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from storage import queries
from storage.models import Category, Department, DepartmentKind, Route

#: (name, kind, resolution deadline in working days or None for the category's).
DEPARTMENTS: list[tuple[str, str, int | None]] = [
    ("街道办事处", DepartmentKind.STREET, None),
    ("城管执法", DepartmentKind.FUNCTIONAL, 5),
    ("市场监管", DepartmentKind.FUNCTIONAL, 7),
    ("交警", DepartmentKind.FUNCTIONAL, 5),
    ("住建", DepartmentKind.FUNCTIONAL, 10),
    ("物业服务中心", DepartmentKind.SOCIAL, 3),
    ("社区卫生服务中心", DepartmentKind.SOCIAL, 3),
    ("法律援助工作站", DepartmentKind.SOCIAL, 10),
    ("商圈志愿服务队", DepartmentKind.SOCIAL, 3),
]


@dataclass(frozen=True)
class DemoCategory:
    """One demo category."""

    name: str
    keywords: list[str]
    response_hours: int
    resolution_days: int
    department: str | None = None
    urgent: bool = False
    fallback: bool = False


CATEGORIES: list[DemoCategory] = [
    DemoCategory(
        "紧急求助", ["紧急", "救命", "火灾", "燃气泄漏", "煤气", "触电", "晕倒"], 0, 0, urgent=True
    ),
    DemoCategory(
        "市政设施",
        ["路灯", "井盖", "下水道", "排水", "积水", "道路", "人行道", "护栏", "管道", "漏水"],
        8,
        5,
    ),
    DemoCategory(
        "市容环境",
        ["垃圾", "占道", "乱摆", "油烟", "违章搭建", "小广告", "乱贴"],
        8,
        5,
        department="城管执法",
    ),
    DemoCategory("噪音扰民", ["噪音", "施工", "吵", "扰民", "广场舞"], 8, 5, department="城管执法"),
    DemoCategory(
        "消费维权",
        ["退款", "假货", "商家", "消费", "价格", "缺斤短两", "食品安全"],
        8,
        7,
        department="市场监管",
    ),
    DemoCategory(
        "交通停车",
        ["停车", "违停", "堵车", "红绿灯", "信号灯", "共享单车"],
        8,
        5,
        department="交警",
    ),
    DemoCategory("物业小区", ["物业", "电梯", "门禁", "小区", "楼道"], 8, 3),
    DemoCategory("劳动纠纷", ["工资", "欠薪", "劳动合同", "辞退", "社保"], 24, 13),
    DemoCategory("法律咨询", ["法律", "律师", "纠纷", "房东", "租房", "合同"], 24, 10),
    DemoCategory("为老助残", ["老人", "独居", "残疾", "助餐", "看护"], 8, 3),
    DemoCategory("政策咨询", ["政策", "咨询", "怎么办理", "补贴", "证明", "流动党员"], 24, 3),
    DemoCategory("意见建议", ["建议", "意见", "希望增加", "能不能"], 24, 13),
    DemoCategory("其他", [], 8, 5, fallback=True),
]


def load_demo(session: Session) -> tuple[int, int]:
    """Adds the demo departments and categories that are not there yet.

    Returns:
        How many departments and categories were added.
    """
    added_departments = added_categories = 0
    home = queries.default_centre(session=session).id
    for name, kind, days in DEPARTMENTS:
        if queries.get_department_by_name(session=session, name=name) is None:
            session.add(Department(name=name, kind=kind, resolution_days=days, centre_id=home))
            added_departments += 1
    session.flush()
    existing = {
        category.name for category in queries.list_categories(session=session, active_only=False)
    }
    for demo in CATEGORIES:
        if demo.name in existing:
            continue
        department = (
            queries.get_department_by_name(session=session, name=demo.department)
            if demo.department
            else None
        )
        session.add(
            Category(
                name=demo.name,
                keywords=demo.keywords,
                route=Route.DEPARTMENT if department else Route.COMMITTEE,
                department_id=department.id if department else None,
                response_hours=demo.response_hours,
                resolution_days=demo.resolution_days,
                urgent=demo.urgent,
                is_fallback=demo.fallback,
            )
        )
        added_categories += 1
    return added_departments, added_categories
