"""Admin benchmark: `redesk stats` and `redesk export` over a million requests.

`python -m bench admin [--requests N]`:

1. a fresh PostgreSQL database (`redesk db upgrade`), filled with psycopg COPY from a seeded
   generator: 1,050 centres (1 city, 10 districts, 1,039 社区/商圈/楼宇/园区/市场 under them),
   20 categories, 30 departments, 50 workers, 200 department staff, 0.3 × N requesters, N
   requests held across the tree over two years (daily and weekly seasonality) with about 6 events
   each, consistent with the state and with the per-request statistics columns; then
   VACUUM (ANALYZE);
2. `redesk stats --format json`, `--by department`, `--by month` and `--by centre` (the 10
   districts of a 1+10+N tree of 1,050 centres, and the city centre's own) as real processes,
   three times each (median), wall time and peak RSS (`--only centre` runs one of them);
3. the same figures written by hand in SQL (one statement per invocation) run by `psql` in the
   same run and timed the same way, their results checked against redesk's JSON;
4. `redesk export` to CSV (all rows) and xlsx (all rows when that is projected to take at most
   ten minutes, else the first ~100,000), rows/s and peak RSS.

Peak memory is the "Maximum resident set size" GNU time (`/usr/bin/time -v`) reports for the
process: its whole life, the PostgreSQL server excluded. (Not `ru_maxrss` from `os.wait4()`
in this process: Linux carries the pre-exec high-water mark over exec, so every child would
show at least this process's own RSS.)

Working seconds are approximated as calendar seconds × 9/24 (and deadlines in working hours or
days as the matching calendar spans): the figures only need to be consistent, not calendrical.

`python -m bench.admin trace ARGS...` runs `redesk ARGS...` in-process and writes every SQL
statement it sent, with its time, as JSON to $BENCH_TRACE_OUT (used to explain the timings).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench import common

SHANGHAI = ZoneInfo("Asia/Shanghai")

#: Calendar seconds per working hour / working day under the approximation (9 of 24 hours,
#: 5 of 7 days).
WORK_HOUR = 3600 * 24 // 9
WORK_DAY = 86400 * 7 // 5

#: Seconds of local (UTC+8) time ahead of UTC.
LOCAL_OFFSET = 8 * 3600

TERMINAL = ("closed", "rejected", "cancelled")

# --- the organisation ---------------------------------------------------------------------

#: (name, kind, own resolution days or None).
DEPARTMENTS: tuple[tuple[str, str, int | None], ...] = (
    *(
        (f"{name}街道", "街道", None)
        for name in ("东华", "西苑", "南湖", "北关", "中山", "长安", "新华", "和平", "青山", "白云")
    ),
    ("城管执法", "职能部门", None),
    ("住建局", "职能部门", 10),
    ("交通运输局", "职能部门", None),
    ("市场监管局", "职能部门", None),
    ("生态环境局", "职能部门", 10),
    ("水务局", "职能部门", None),
    ("卫健委", "职能部门", None),
    ("教育局", "职能部门", None),
    ("人社局", "职能部门", None),
    ("民政局", "职能部门", None),
    ("公安分局", "职能部门", 3),
    ("消防救援大队", "职能部门", 3),
    ("自然资源局", "职能部门", 15),
    ("园林绿化局", "职能部门", None),
    ("供电公司", "职能部门", None),
    ("社区志愿者协会", "社会组织", None),
    ("物业管理协会", "社会组织", None),
    ("老年人协会", "社会组织", None),
    ("法律援助中心", "社会组织", None),
    ("心理咨询服务站", "社会组织", None),
)

#: (name, share of requests, response hours, resolution days, department it is routed to
#: automatically or None, departments forwards usually go to). Departments by 1-based index.
CATEGORIES: tuple[tuple[str, float, int, int, int | None, tuple[int, ...]], ...] = (
    ("市政设施", 14, 8, 5, None, (11, 1, 2, 3, 4, 5)),
    ("环境卫生", 12, 8, 3, None, (11, 15, 6, 7, 8)),
    ("噪音扰民", 8, 4, 3, None, (15, 21, 11)),
    ("交通出行", 6, 8, 5, None, (13, 21)),
    ("物业管理", 9, 8, 5, None, (27, 1, 2, 3, 9, 10)),
    ("房屋建设", 4, 8, 10, None, (12, 23)),
    ("供水供电", 5, 4, 3, 25, (25, 16)),
    ("燃气供暖", 4, 4, 3, None, (12, 16)),
    ("市场监管", 5, 8, 5, None, (14,)),
    ("医疗卫生", 3, 8, 5, None, (17,)),
    ("教育", 3, 8, 10, None, (18,)),
    ("劳动保障", 4, 8, 10, None, (19, 29)),
    ("社会保障", 3, 8, 10, None, (20, 28)),
    ("治安", 3, 2, 3, 21, (21,)),
    ("消防安全", 2, 2, 2, 22, (22,)),
    ("园林绿化", 3, 8, 5, None, (24, 4, 5)),
    ("违章建筑", 3, 8, 10, None, (11, 23)),
    ("停车管理", 4, 8, 5, None, (13, 11, 6)),
    ("公共服务", 3, 8, 5, None, (26, 28, 30)),
    ("其他", 3, 8, 5, None, (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)),
)

#: What residents write, per category (the first phrase of CATEGORIES' order).
COMPLAINTS: tuple[tuple[str, ...], ...] = (
    ("路灯不亮了", "人行道地砖松动", "井盖缺失很危险", "下水道堵塞"),
    ("垃圾没人清运", "楼道堆满杂物", "公厕很脏", "小区污水外溢"),
    ("晚上施工太吵", "广场舞音响太大声", "楼上装修噪音", "商铺喇叭扰民"),
    ("公交站台破损", "红绿灯坏了", "路口拥堵严重", "道路积水无法通行"),
    ("物业不维修电梯", "物业费不透明", "门禁坏了没人修", "地下室漏水"),
    ("外墙瓷砖脱落", "楼顶漏雨", "房屋出现裂缝"),
    ("小区停水", "停电没有通知", "水压太低", "电表读数异常"),
    ("暖气不热", "燃气管道有异味", "供暖费争议"),
    ("超市卖过期食品", "商家缺斤短两", "价格欺诈"),
    ("社区诊所排队太久", "疫苗接种预约难", "药店乱收费"),
    ("学校门口交通乱", "校外培训乱收费", "入学咨询"),
    ("公司拖欠工资", "没有签劳动合同", "社保断缴"),
    ("低保申请咨询", "养老金发放问题", "残疾人补贴咨询"),
    ("小区有可疑人员", "电动车被盗", "夜间有人打架"),
    ("消防通道被占用", "楼道电动车充电", "灭火器过期"),
    ("树枝挡住窗户", "绿地被占用种菜", "行道树倒伏"),
    ("楼顶私搭乱建", "一楼违建扩院", "违规改建商铺"),
    ("乱停车堵住出口", "停车位被占", "僵尸车长期占位"),
    ("社区服务中心办事难", "公共厕所不开放", "图书馆开放时间太短"),
    ("有个问题想咨询", "建议增加便民设施", "反映一个情况"),
)

PLACES: tuple[str, ...] = (
    "幸福小区",
    "阳光花园",
    "锦绣家园",
    "和谐里",
    "翠湖苑",
    "春晖小区",
    "金桥新村",
    "滨江花园",
    "丽景湾",
    "文化路",
    "人民路",
    "建设街",
    "解放路",
    "新华路",
    "长江路",
    "黄河路",
)

RESULTS: tuple[str, ...] = (
    "已派人现场处理完毕",
    "已联系相关单位整改到位",
    "已约谈当事方并督促整改",
    "已维修恢复正常",
    "已清理完毕",
    "已答复群众并解释政策",
    "已协调解决",
    "经核实已处理",
)

REASONS: tuple[str, ...] = (
    "不属于本部门职责",
    "信息不全无法处理",
    "需由其他部门办理",
    "地址不在辖区内",
)

# --- the network of centres (1+10+N) -------------------------------------------------------

#: The city centre (the default centre `redesk db upgrade` made, renamed) and its code.
CITY = ("shenzhen", "深圳市党群服务中心")

#: The ten district centres.
DISTRICTS: tuple[str, ...] = (
    "福田区",
    "罗湖区",
    "南山区",
    "盐田区",
    "宝安区",
    "龙岗区",
    "龙华区",
    "坪山区",
    "光明区",
    "大鹏新区",
)

#: Centres under the districts: 1,050 in all with the city and the districts.
NEIGHBOURHOOD_CENTRES = 1039

#: The kinds of neighbourhood centre and their shares (社区 most).
NEIGHBOURHOOD_KINDS: tuple[tuple[str, float], ...] = (
    ("社区", 0.7),
    ("商圈", 0.1),
    ("楼宇", 0.1),
    ("园区", 0.06),
    ("市场", 0.04),
)

#: Shares of the requests held by the city centre and by the district centres themselves
#: (上报 up the tree); the rest are held by the neighbourhood centres.
CITY_SHARE, DISTRICT_SHARE = 0.02, 0.08


@dataclass(frozen=True)
class Tree:
    """The centres: (id, code, name, level, parent id, path), parents first."""

    rows: list[tuple[int, str, str, str, int | None, str]]

    @property
    def ids(self) -> list[int]:
        """Every centre id."""
        return [row[0] for row in self.rows]


def centre_tree(rng: random.Random) -> Tree:
    """1 city centre (id 1), 10 districts (ids 2..11) and 1,039 centres spread over them."""
    rows: list[tuple[int, str, str, str, int | None, str]] = [(1, *CITY, "市", None, "/1/")]
    for index, name in enumerate(DISTRICTS, start=2):
        rows.append((index, f"d{index - 1:02d}", f"{name}党群服务中心", "区", 1, f"/1/{index}/"))
    kinds = [kind for kind, _ in NEIGHBOURHOOD_KINDS]
    weights = [share for _, share in NEIGHBOURHOOD_KINDS]
    for number in range(1, NEIGHBOURHOOD_CENTRES + 1):
        centre = len(DISTRICTS) + 1 + number
        district = 2 + rng.randrange(len(DISTRICTS))
        kind = rng.choices(kinds, weights=weights)[0]
        name = f"{DISTRICTS[district - 2]}{rng.choice(PLACES)}{number}号{kind}党群服务中心"
        rows.append((centre, f"n{number:04d}", name, kind, district, f"/1/{district}/{centre}/"))
    return Tree(rows)


def holding_centres(rng: random.Random, tree: Tree, count: int) -> list[int]:
    """The centre holding each of `count` requests: CITY_SHARE the city, DISTRICT_SHARE the
    districts, the rest the neighbourhood centres (some busier than others)."""
    districts = [row[0] for row in tree.rows if row[3] == "区"]
    neighbourhood = [row[0] for row in tree.rows if row[4] is not None and row[3] != "区"]
    busy = [0.5 + rng.random() for _ in neighbourhood]
    share = 1.0 - CITY_SHARE - DISTRICT_SHARE
    population = [1, *districts, *neighbourhood]
    weights = [
        CITY_SHARE,
        *[DISTRICT_SHARE / len(districts)] * len(districts),
        *[share * b / sum(busy) for b in busy],
    ]
    return rng.choices(population, weights=weights, k=count)


SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文辉志鹏飞宇晨欣怡子涵浩然"

CHANNELS: tuple[tuple[str, float], ...] = (("telegram", 0.45), ("wechat", 0.40), ("web", 0.15))

#: Relative intake per weekday (Monday first) and per local hour.
WEEKDAY_WEIGHTS = (1.0, 1.0, 0.97, 0.95, 0.9, 0.45, 0.4)
HOUR_WEIGHTS = (
    0.3,
    0.2,
    0.1,
    0.1,
    0.1,
    0.2,
    0.5,
    1.5,
    4.0,
    7.0,
    8.0,
    7.5,
    5.0,
    5.5,
    7.0,
    7.5,
    7.0,
    6.0,
    4.5,
    4.0,
    3.5,
    3.0,
    2.0,
    1.0,
)


# --- generation ---------------------------------------------------------------------------


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def _phone(rng: random.Random) -> str:
    return f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"


def _null(value: object) -> str:
    return "\\N" if value is None else str(value)


def _bool(value: bool | None) -> str:
    return "\\N" if value is None else ("t" if value else "f")


class _Timestamps:
    """Epoch seconds as PostgreSQL text (UTC), with the date part cached per day."""

    def __init__(self) -> None:
        self._days: dict[int, str] = {}

    def __call__(self, moment: int | None) -> str:
        if moment is None:
            return "\\N"
        day, second = divmod(moment, 86400)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)).strftime("%Y-%m-%d")
            self._days[day] = prefix
        return f"{prefix} {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+00"


@dataclass
class Organisation:
    """Ids of everything requests refer to."""

    workers: list[int]
    staff: dict[int, list[int]]
    requesters: int
    first_requester: int


@dataclass
class Generated:
    """What the load wrote and how long it took."""

    people: int = 0
    requests: int = 0
    events: int = 0
    requests_seconds: float = 0.0
    people_seconds: float = 0.0
    vacuum_seconds: float = 0.0
    database_mb: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    cpu: str = ""


def _intake_times(rng: random.Random, count: int, end_day: date, days: int) -> list[int]:
    """`count` intake instants (epoch seconds) over `days` days before `end_day` (Shanghai),
    with weekly and daily seasonality, a slow upward trend and a summer bump, sorted."""
    first = end_day - timedelta(days=days)
    weights = []
    for index in range(days):
        day = first + timedelta(days=index)
        trend = 0.8 + 0.4 * index / days
        season = 1.0 + 0.12 * math.sin(2 * math.pi * (day.timetuple().tm_yday - 100) / 365)
        weights.append(WEEKDAY_WEIGHTS[day.weekday()] * trend * season)
    start = int(datetime(first.year, first.month, first.day, tzinfo=SHANGHAI).timestamp())
    chosen_days = rng.choices(range(days), weights=weights, k=count)
    chosen_hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=count)
    moments = [
        start + day * 86400 + hour * 3600 + rng.randrange(3600)
        for day, hour in zip(chosen_days, chosen_hours, strict=True)
    ]
    moments.sort()
    return moments


def _office(rng: random.Random, moment: int) -> int:
    """The moment staff get to something that arrived at `moment`: nights wait for the
    morning, and most weekends for Monday."""
    local = moment + LOCAL_OFFSET
    day, second = divmod(local, 86400)
    hour = second // 3600
    if hour < 8:
        local = day * 86400 + 8 * 3600 + rng.randrange(7200)
    elif hour >= 19:
        local = (day + 1) * 86400 + 8 * 3600 + rng.randrange(7200)
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    if weekday >= 5 and rng.random() < 0.7:
        local = (local // 86400 + 7 - weekday) * 86400 + 8 * 3600 + rng.randrange(7200)
    return max(local - LOCAL_OFFSET, moment)


class History:
    """One request's life, simulated up to the horizon, as a requests row and event rows."""

    __slots__ = (
        "rng",
        "org",
        "horizon",
        "events",
        "t",
        "state",
        "dept",
        "handler",
        "first_action_at",
        "responded_in_time",
        "response_seconds",
        "result",
        "replied_at",
        "first_replied_at",
        "reply_seconds",
        "closed_at",
        "solved",
        "satisfaction",
        "reopen_count",
        "response_due",
        "resolution_due",
        "created",
        "requester",
        "category",
        "deadlines_set",
    )

    def __init__(self, rng: random.Random, org: Organisation, horizon: int) -> None:
        self.rng = rng
        self.org = org
        self.horizon = horizon
        #: (actor, action, from, to, outcome, note, epoch seconds)
        self.events: list[tuple[int | None, str, str | None, str | None, str, str | None, int]] = []
        self.t = self.created = self.response_due = self.resolution_due = 0
        self.deadlines_set = 0
        self.state = "new"
        self.requester = self.category = self.reopen_count = 0
        self.dept: int | None = None
        self.handler: int | None = None
        self.first_action_at: int | None = None
        self.responded_in_time: bool | None = None
        self.response_seconds: int | None = None
        self.result: str | None = None
        self.replied_at: int | None = None
        self.first_replied_at: int | None = None
        self.reply_seconds: int | None = None
        self.closed_at: int | None = None
        self.solved: bool | None = None
        self.satisfaction: str | None = None

    def _event(
        self, actor: int | None, action: str, to: str | None, note: str | None, outcome: str = "ok"
    ) -> None:
        self.events.append(
            (actor, action, self.state if action != "submit" else None, to, outcome, note, self.t)
        )
        if outcome == "ok" and to is not None:
            self.state = to

    def _mark_first_action(self) -> None:
        if self.first_action_at is None:
            self.first_action_at = self.t
            self.responded_in_time = self.t <= self.response_due
            self.response_seconds = self.t - self.created

    def _at(self, moment: int) -> bool:
        """Moves the clock; False when the moment is beyond the horizon (nothing happens)."""
        if moment >= self.horizon:
            return False
        self.t = moment
        return True

    def _wait(self, median: float, sigma: float, office: bool = True) -> int:
        delay = int(self.rng.lognormvariate(math.log(median), sigma))
        moment = self.t + max(delay, 60)
        return _office(self.rng, moment) if office else moment

    def _worker(self) -> int:
        return self.rng.choice(self.org.workers)

    def _staff(self) -> int:
        assert self.dept is not None
        return self.rng.choice(self.org.staff[self.dept])

    def _forward_to(self, department: int, actor: int | None, note: str) -> None:
        self._event(actor, "forward", "forwarded", note)
        self.dept = department
        self.handler = None
        own = DEPARTMENTS[department - 1][2]
        if own is not None:
            self.resolution_due = self.t + own * WORK_DAY
            self.deadlines_set = self.t
        if actor is not None:
            self._mark_first_action()

    def _maybe_supplement(self, until: int) -> None:
        """A requester sometimes adds something before the next step."""
        if self.rng.random() < 0.06 and until - self.t > 120:
            moment = self.t + self.rng.randrange(60, until - self.t)
            if self._at(moment):
                self._event(self.requester, "supplement", self.state, "补充：具体位置在东门附近")

    def simulate(self, created: int, requester: int, category: int) -> None:
        rng = self.rng
        self.events = []
        self.t = self.created = self.deadlines_set = created
        self.state = "new"
        self.requester = requester
        self.category = category
        _, _, response_hours, resolution_days, routed, targets = CATEGORIES[category - 1]
        self.dept = self.handler = self.first_action_at = self.responded_in_time = None
        self.response_seconds = self.result = self.replied_at = self.first_replied_at = None
        self.reply_seconds = self.closed_at = self.solved = self.satisfaction = None
        self.reopen_count = 0
        self.response_due = created + response_hours * WORK_HOUR
        self.resolution_due = created + resolution_days * WORK_DAY
        self._event(requester, "submit", "new", None)
        if routed is not None:
            self._forward_to(routed, None, "按类别自动转单")
        stuck = rng.random() < 0.005  # a few requests sit somewhere for months
        for _step in range(40):
            state = self.state
            if state in TERMINAL:
                break
            if (
                state in ("new", "handling", "forwarded", "dept_handling", "review")
                and rng.random() < 0.004
            ):
                if not self._at(self._wait(6 * 3600, 1.5, office=False)):
                    break
                self._event(requester, "cancel", "cancelled", None)
                self.closed_at = self.t
                break
            if state == "new":
                moment = self._wait(1.5 * 3600, 1.3)
                if (
                    self.first_action_at is None
                    and moment > self.response_due > self.t
                    and self._at(self.response_due)
                ):
                    self._event(None, "remind", "new", "响应已超时")
                self._maybe_supplement(moment)
                if not self._at(moment):
                    break
                roll = rng.random()
                if roll < 0.03 and self.reopen_count == 0 and self.first_action_at is None:
                    self._event(self._worker(), "reject", "rejected", rng.choice(REASONS))
                    self._mark_first_action()
                    self.closed_at = self.t
                elif roll < 0.42:
                    self._event(self._worker(), "accept", "handling", None)
                    self.handler = self.events[-1][0]
                    self._mark_first_action()
                else:
                    department = (
                        rng.choice(targets)
                        if rng.random() < 0.8
                        else rng.randrange(1, len(DEPARTMENTS) + 1)
                    )
                    self._forward_to(department, self._worker(), DEPARTMENTS[department - 1][0])
            elif state == "forwarded":
                moment = self._wait(3 * 3600, 1.2)
                if stuck:
                    moment += rng.randrange(30, 500) * 86400
                if not self._at(moment):
                    break
                if rng.random() < 0.05:
                    self._event(self._staff(), "return", "new", rng.choice(REASONS))
                    self.dept = None
                else:
                    self._event(self._staff(), "take", "dept_handling", None)
            elif state in ("handling", "dept_handling"):
                median = 36 * 3600 if state == "dept_handling" else 20 * 3600
                moment = self._wait(median, 1.0)
                if rng.random() < 0.05 and self._at(self.t + (moment - self.t) // 2):
                    actor = self._worker() if state == "handling" else self._staff()
                    self._event(actor, "comment", state, "正在协调处理")
                self._maybe_supplement(moment)
                if not self._at(moment):
                    break
                if state == "dept_handling" and rng.random() < 0.02:
                    self._event(self._staff(), "return", "new", rng.choice(REASONS))
                    self.dept = None
                else:
                    actor = (
                        self.handler
                        if state == "handling" and self.handler
                        else self._staff()
                        if state == "dept_handling"
                        else self._worker()
                    )
                    result = rng.choice(RESULTS)
                    self._event(actor, "complete", "review", result)
                    self.result = result
            elif state == "review":
                if not self._at(self._wait(2 * 3600, 1.0)):
                    break
                if rng.random() < 0.05:
                    back = "dept_handling" if self.dept is not None else "handling"
                    self._event(self._worker(), "send_back", back, "请补充现场照片")
                else:
                    self._event(self._worker(), "approve", "replied", None)
                    self.replied_at = self.t
                    if self.first_replied_at is None:
                        self.first_replied_at = self.t
                        self.reply_seconds = self.t - self.created
            elif state == "replied":
                rated = rng.random() < 0.72
                moment = self.t + int(rng.lognormvariate(math.log(10 * 3600), 1.0)) + 60
                if not rated or moment > self.t + 7 * 86400:
                    if not self._at(self.t + 7 * 86400):
                        break
                    self._event(None, "auto_close", "closed", None)
                    self.closed_at = self.t
                    break
                if not self._at(moment):
                    break
                roll = rng.random()
                if roll < 0.80:
                    solved, satisfaction = True, "满意"
                elif roll < 0.92:
                    solved, satisfaction = True, "基本满意"
                elif roll < 0.96:
                    solved, satisfaction = False, rng.choice(("不满意", "基本满意"))
                else:
                    solved, satisfaction = True, "不满意"
                rating = f"{'已解决' if solved else '未解决'} {satisfaction}"
                self.solved, self.satisfaction = solved, satisfaction
                if solved and satisfaction != "不满意":
                    self._event(requester, "rate", "closed", rating)
                    self.closed_at = self.t
                    if rng.random() < 0.01 and self._at(self.t + 3600):
                        self._event(requester, "rate", "closed", rating, outcome="refused")
                else:
                    self._event(requester, "reopen", "new", rating)
                    self.reopen_count += 1
                    self.response_due = self.t + response_hours * WORK_HOUR
                    self.resolution_due = self.t + resolution_days * WORK_DAY
                    self.deadlines_set = self.t
                    self.dept = self.handler = self.result = self.replied_at = None

    def updated_at(self) -> int:
        """When the request last changed (its last event that happened)."""
        return max(event[6] for event in self.events if event[4] == "ok")


class Loader:
    """Streams the generated rows into PostgreSQL with COPY."""

    def __init__(self, url: str, requests: int, seed: int, end_day: date, days: int) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.count = requests
        self.seed = seed
        self.end_day = end_day
        self.days = days
        self.ts = _Timestamps()
        # Its own generator, so the rest of the data is the same for a seed as before there
        # were centres.
        self.centre_rng = random.Random(seed + 1)
        self.tree = centre_tree(self.centre_rng)

    def _organisation(self, connection: Any, rng: random.Random, created: int) -> Organisation:
        """Departments, categories, workers, staff and requesters."""
        ts = self.ts
        with connection.cursor() as cursor:
            # The default centre of the upgrade (id 1) becomes the city centre.
            cursor.execute("DELETE FROM centres WHERE id <> 1")
            city = self.tree.rows[0]
            cursor.execute(
                "UPDATE centres SET code = %s, name = %s, level = %s, path = %s WHERE id = 1",
                (city[1], city[2], city[3], city[5]),
            )
            cursor.executemany(
                "INSERT INTO centres (id, code, name, level, parent_id, path, active, "
                "is_default, days_off, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, true, false, '[]', %s)",
                [(*row, datetime.fromtimestamp(created, UTC)) for row in self.tree.rows[1:]],
            )
            cursor.executemany(
                "INSERT INTO departments (id, name, kind, active, resolution_days, created_at, "
                "centre_id) VALUES (%s, %s, %s, true, %s, %s, 1)",
                [
                    (index, name, kind, days, datetime.fromtimestamp(created, UTC))
                    for index, (name, kind, days) in enumerate(DEPARTMENTS, 1)
                ],
            )
            cursor.executemany(
                "INSERT INTO categories (id, name, keywords, route, department_id, response_hours,"
                " resolution_days, urgent, is_fallback, active) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true)",
                [
                    (
                        index,
                        name,
                        json.dumps([name[:2]], ensure_ascii=False),
                        "department" if routed else "committee",
                        routed,
                        hours,
                        days,
                        hours <= 2,
                        name == "其他",
                    )
                    for index, (name, _, hours, days, routed, _) in enumerate(CATEGORIES, 1)
                ],
            )
        workers = list(range(1, 51))
        staff: dict[int, list[int]] = {}
        next_id = 51
        for department in range(1, len(DEPARTMENTS) + 1):
            count = 200 // len(DEPARTMENTS) + (1 if department <= 200 % len(DEPARTMENTS) else 0)
            staff[department] = list(range(next_id, next_id + count))
            next_id += count
        requesters = max(100, int(self.count * 0.3))
        columns = (
            "id, channel, external_id, display_name, phone, role, department_id, "
            "unreachable, web_seq, window_sent, created_at"
        )
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY people ({columns}) FROM STDIN") as copy,
        ):
            stamp = ts(created)
            lines = []
            for person in workers:
                role = "leader" if person <= 3 else "worker"
                lines.append(
                    f"{person}\ttelegram\tw{person}\t{_name(rng)}\t{_phone(rng)}\t"
                    f"{role}\t\\N\tf\t0\t0\t{stamp}\n"
                )
            for department, people in staff.items():
                for person in people:
                    lines.append(
                        f"{person}\twechat\td{person}\t{_name(rng)}\t{_phone(rng)}\t"
                        f"department\t{department}\tf\t0\t0\t{stamp}\n"
                    )
            copy.write("".join(lines))
            lines = []
            for person in range(next_id, next_id + requesters):
                channel = (
                    "telegram"
                    if rng.random() < 0.45
                    else "wechat"
                    if rng.random() < 0.73
                    else "web"
                )
                phone = _phone(rng) if rng.random() < 0.6 else None
                lines.append(
                    f"{person}\t{channel}\tr{person}\t{_name(rng)}\t{_null(phone)}\t"
                    f"requester\t\\N\tf\t0\t0\t{stamp}\n"
                )
                if len(lines) >= 5000:
                    copy.write("".join(lines))
                    lines = []
            copy.write("".join(lines))
        return Organisation(
            workers=workers, staff=staff, requesters=requesters, first_requester=next_id
        )

    def run(self) -> Generated:
        """Generates and loads everything; returns the counts and times."""
        import psycopg
        from psycopg.copy import QueuedLibpqWriter

        rng = random.Random(self.seed)
        result = Generated()
        end = datetime(self.end_day.year, self.end_day.month, self.end_day.day, tzinfo=SHANGHAI)
        horizon = int(end.timestamp())
        began = time.monotonic()
        moments = _intake_times(rng, self.count, self.end_day, self.days)
        with psycopg.connect(self.url) as main, psycopg.connect(self.url) as side:
            for connection in (main, side):
                # The generator keeps every reference consistent; skip the per-row FK triggers.
                with contextlib.suppress(psycopg.Error):
                    connection.execute("SET session_replication_role = replica")
                connection.execute("SET synchronous_commit = off")
            org = self._organisation(main, rng, moments[0] - 30 * 86400)
            main.commit()
            result.people = len(org.workers) + sum(map(len, org.staff.values())) + org.requesters
            result.people_seconds = time.monotonic() - began
            began = time.monotonic()
            request_columns = (
                "id, number, requester_id, channel, text, category_id, state, department_id, "
                "handler_id, result, solved, satisfaction, reopen_count, created_at, "
                "updated_at, first_action_at, response_due_at, resolution_due_at, replied_at, "
                "closed_at, responded_in_time, response_seconds, response_work_seconds, "
                "first_replied_at, reply_seconds, reply_work_seconds, centre_id, tick_at"
            )
            # Revision 0005 added when the deadlines were last set; filled when present.
            deadlines_set = bool(
                main.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = 'requests' "
                    "AND column_name = 'deadlines_set_at'"
                ).fetchone()
            )
            if deadlines_set:
                request_columns += ", deadlines_set_at"
            event_columns = (
                "id, request_id, actor_id, action, from_state, to_state, outcome, note, created_at"
            )
            with (
                main.cursor() as requests_cursor,
                side.cursor() as events_cursor,
                requests_cursor.copy(
                    f"COPY requests ({request_columns}) FROM STDIN",
                    writer=QueuedLibpqWriter(requests_cursor),
                ) as copy_r,
                events_cursor.copy(
                    f"COPY events ({event_columns}) FROM STDIN",
                    writer=QueuedLibpqWriter(events_cursor),
                ) as copy_e,
            ):
                counters = self._requests(
                    rng, org, moments, horizon, copy_r.write, copy_e.write, result, deadlines_set
                )
            main.commit()
            side.commit()
            with main.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO request_counters (day, last) VALUES (%s, %s)",
                    sorted(counters.items()),
                )
                for table in (
                    "centres",
                    "departments",
                    "categories",
                    "people",
                    "requests",
                    "events",
                ):
                    cursor.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
            main.commit()
        result.requests_seconds = time.monotonic() - began
        began = time.monotonic()
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute("VACUUM (ANALYZE)")
        result.database_mb = (
            int(common.pg_scalar(self.url, "SELECT pg_database_size(current_database())")) / 2**20
        )
        result.vacuum_seconds = time.monotonic() - began
        return result

    def _requests(
        self,
        rng: random.Random,
        org: Organisation,
        moments: Sequence[int],
        horizon: int,
        write_request: Callable[[str], None],
        write_event: Callable[[str], None],
        result: Generated,
        deadlines_set: bool,
    ) -> dict[str, int]:
        ts = self.ts
        category_weights = [share for _, share, *_ in CATEGORIES]
        categories = rng.choices(
            range(1, len(CATEGORIES) + 1), weights=category_weights, k=len(moments)
        )
        history = History(rng, org, horizon)
        centres = holding_centres(self.centre_rng, self.tree, len(moments))
        counters: dict[str, int] = {}
        event_id = 0
        request_lines: list[str] = []
        event_lines: list[str] = []
        states: dict[str, int] = {}
        first_requester, requesters = org.first_requester, org.requesters
        last_day, day = -1, ""
        for request_id, (created, category) in enumerate(zip(moments, categories, strict=True), 1):
            # A few residents write often: the square skews towards the first ids.
            requester = first_requester + int(requesters * rng.random() ** 2)
            history.simulate(created, requester, category)
            local_day = (created + LOCAL_OFFSET) // 86400
            if local_day != last_day:
                day = datetime.fromtimestamp(local_day * 86400, UTC).strftime("%Y%m%d")
                last_day = local_day
            sequence = counters[day] = counters.get(day, 0) + 1
            complaint = rng.choice(COMPLAINTS[category - 1])
            place = rng.choice(PLACES)
            text = f"{place}{rng.randrange(1, 40)}号楼附近{complaint}，请尽快处理"
            if rng.random() < 0.08:
                text += f"，联系电话{_phone(rng)}"
            h = history
            states[h.state] = states.get(h.state, 0) + 1
            response_work = None if h.response_seconds is None else h.response_seconds * 9 // 24
            reply_work = None if h.reply_seconds is None else h.reply_seconds * 9 // 24
            channel = (
                CHANNELS[0][0]
                if requester % 20 < 9
                else CHANNELS[1][0]
                if requester % 20 < 17
                else CHANNELS[2][0]
            )
            request_lines.append(
                f"{request_id}\tSQ-{day}-{sequence:04d}\t{requester}\t{channel}\t{text}\t"
                f"{category}\t{h.state}\t{_null(h.dept)}\t{_null(h.handler)}\t"
                f"{_null(h.result)}\t{_bool(h.solved)}\t{_null(h.satisfaction)}\t"
                f"{h.reopen_count}\t{ts(created)}\t{ts(h.updated_at())}\t"
                f"{ts(h.first_action_at)}\t{ts(h.response_due)}\t{ts(h.resolution_due)}\t"
                f"{ts(h.replied_at)}\t{ts(h.closed_at)}\t{_bool(h.responded_in_time)}\t"
                f"{_null(h.response_seconds)}\t{_null(response_work)}\t"
                f"{ts(h.first_replied_at)}\t{_null(h.reply_seconds)}\t{_null(reply_work)}\t"
                f"{centres[request_id - 1]}\t"
                # Open requests: tick_at as the migration sets it (their last change).
                f"{ts(None if h.state in TERMINAL else h.updated_at())}"
                + (f"\t{ts(h.deadlines_set)}\n" if deadlines_set else "\n")
            )
            for actor, action, source, target, outcome, note, moment in h.events:
                event_id += 1
                event_lines.append(
                    f"{event_id}\t{request_id}\t{_null(actor)}\t{action}\t{_null(source)}\t"
                    f"{_null(target)}\t{outcome}\t{_null(note)}\t{ts(moment)}\n"
                )
            if len(request_lines) >= 2000:
                write_request("".join(request_lines))
                write_event("".join(event_lines))
                request_lines, event_lines = [], []
        write_request("".join(request_lines))
        write_event("".join(event_lines))
        result.requests = len(moments)
        result.events = event_id
        result.states = states
        return counters


# --- measuring a process ------------------------------------------------------------------


@dataclass
class Run:
    """One child process: wall time, peak RSS and CPU."""

    seconds: float
    rss_mb: float
    cpu_seconds: float
    returncode: int
    output: str
    errors: str


#: GNU time: its "Maximum resident set size" is the child's own high-water mark.
GNU_TIME = "/usr/bin/time"


def _vm_hwm(pid: int) -> float:
    """VmHWM of a live process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def measure(
    command: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    monitor: common.CpuMonitor | None = None,
    label: str = "",
) -> Run:
    """Runs `command` to completion: wall time, peak RSS and CPU.

    Peak RSS and CPU come from GNU time (`/usr/bin/time -v`). Not `ru_maxrss` of a child
    this process waits for: the kernel carries the pre-exec high-water mark over exec, and
    Python spawns with vfork, so that figure is at least this (large) process's own RSS.
    Without GNU time, VmHWM is polled from /proc every 20 ms (may miss the last 20 ms).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".time") as report,
    ):
        wrapped = (
            [GNU_TIME, "-v", "-o", report.name, *command]
            if os.path.exists(GNU_TIME)
            else list(command)
        )
        began = time.monotonic()
        process = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=out, stderr=err)
        if monitor is not None:
            monitor.labels[process.pid] = label
        peak = 0.0
        if wrapped[0] != GNU_TIME:
            while process.poll() is None:
                peak = max(peak, _vm_hwm(process.pid))
                time.sleep(0.02)
        process.wait()
        seconds = time.monotonic() - began
        cpu = float("nan")
        if wrapped[0] == GNU_TIME:
            text = report.read()
            found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
            peak = int(found.group(1)) / 1024 if found else float("nan")
            user = re.search(r"User time \(seconds\): ([\d.]+)", text)
            system = re.search(r"System time \(seconds\): ([\d.]+)", text)
            if user and system:
                cpu = float(user.group(1)) + float(system.group(1))
            status = re.search(r"Exit status: (\d+)", text)
            returncode = int(status.group(1)) if status else process.returncode
        else:
            returncode = process.returncode
        out.seek(0)
        err.seek(0)
        return Run(
            seconds=seconds,
            rss_mb=peak,
            cpu_seconds=cpu,
            returncode=returncode,
            output=out.read().decode(errors="replace"),
            errors=err.read().decode(errors="replace"),
        )


def _redesk_env(url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("REDESK_")}
    env["REDESK_DATABASE_URL"] = url
    return env


# --- the hand-written SQL -----------------------------------------------------------------


#: The groupings compared, as `redesk stats` arguments, and the SQL key of each.
INVOCATIONS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("totals", ("stats", "--format", "json"), None),
    (
        "--by department",
        ("stats", "--by", "department", "--format", "json"),
        "coalesce(d.name, '党委自办')",
    ),
    (
        "--by month",
        ("stats", "--by", "month", "--format", "json"),
        "to_char(timezone('Asia/Shanghai', r.created_at), 'YYYY-MM')",
    ),
    (
        "--by centre",
        ("stats", "--by", "centre", "--format", "json"),
        # The district on the held centre's path ("/1/<district>/..."), or the city itself.
        f"coalesce(g.name, '{CITY[1]}（本级）')",
    ),
)

COUNT_KEYS = (
    "received",
    "closed",
    "open",
    "overdue",
    "forwarded",
    "returned",
    "rejected",
    "cancelled",
    "reopened",
    "responded_in_time",
    "rated",
    "solved",
    "satisfied",
    "replied",
)
DURATION_COLUMNS = (
    ("first_action", "calendar", "response_seconds"),
    ("first_action", "working", "response_work_seconds"),
    ("reply", "calendar", "reply_seconds"),
    ("reply", "working", "reply_work_seconds"),
)
RATE_PARTS = {
    "response_rate": ("responded_in_time", "received"),
    "resolution_rate": ("solved", "rated"),
    "satisfaction_rate": ("satisfied", "rated"),
    "rating_rate": ("rated", "replied"),
}


def hand_sql(group: str | None, now: str) -> str:
    """One statement: every figure of docs/statistics.md for the totals and, with a group,
    per group (ROLLUP), for requests of all dates."""
    is_open = "r.state NOT IN ('closed', 'rejected', 'cancelled')"
    figures = f"""
    count(*),
    count(*) FILTER (WHERE r.state = 'closed'),
    count(*) FILTER (WHERE {is_open}),
    count(*) FILTER (WHERE {is_open} AND r.resolution_due_at < '{now}'::timestamptz),
    count(*) FILTER (WHERE ev.forwarded),
    count(*) FILTER (WHERE ev.returned),
    count(*) FILTER (WHERE r.state = 'rejected'),
    count(*) FILTER (WHERE r.state = 'cancelled'),
    count(*) FILTER (WHERE r.reopen_count > 0),
    count(*) FILTER (WHERE r.responded_in_time),
    count(r.solved),
    count(*) FILTER (WHERE r.solved),
    count(*) FILTER (WHERE r.solved IS NOT NULL AND r.satisfaction IN ('满意', '基本满意')),
    count(r.first_replied_at),
    percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY r.response_seconds),
    percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY r.response_work_seconds),
    percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY r.reply_seconds),
    percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY r.reply_work_seconds)"""
    key = "''" if group is None else group
    total = "true" if group is None else f"GROUPING({group}) = 1"
    joins = "LEFT JOIN departments d ON d.id = r.department_id" if "d.name" in key else ""
    if "g.name" in key:
        joins = (
            "JOIN centres c ON c.id = r.centre_id\n"
            "LEFT JOIN centres g ON g.id = nullif(split_part(c.path, '/', 3), '')::int"
        )
    grouping = "" if group is None else f"GROUP BY ROLLUP ({group})"
    return f"""WITH ev AS (
    SELECT request_id, bool_or(action = 'forward') AS forwarded,
           bool_or(action = 'return') AS returned
    FROM events
    WHERE outcome = 'ok' AND action IN ('forward', 'return')
    GROUP BY request_id
)
SELECT {key}, {total},{figures}
FROM requests r
LEFT JOIN ev ON ev.request_id = r.id
{joins}
{grouping};
"""


def _parse_psql(text: str) -> dict[str | None, dict[str, Any]]:
    """psql -A -t rows -> key (None: totals) -> figures."""
    found: dict[str | None, dict[str, Any]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split("\t")
        key, total, rest = cells[0], cells[1] == "t", cells[2:]
        figures: dict[str, Any] = {
            name: int(value)
            for name, value in zip(COUNT_KEYS, rest[: len(COUNT_KEYS)], strict=True)
        }
        for (name, unit, _), cell in zip(DURATION_COLUMNS, rest[len(COUNT_KEYS) :], strict=True):
            values = [float(v) for v in cell.strip("{}").split(",")] if cell else [None, None]
            figures[f"{name}_median_{unit}_seconds"] = values[0]
            figures[f"{name}_p90_{unit}_seconds"] = values[1]
        found[None if total else key] = figures
    return found


def compare(report: dict[str, Any], hand: dict[str | None, dict[str, Any]]) -> list[str]:
    """Where redesk's JSON and the hand-written SQL disagree (empty: they agree)."""
    problems: list[str] = []
    rows: dict[str | None, dict[str, Any]] = {None: report["totals"]}
    rows.update({row["key"]: row for row in report["rows"]})
    if set(rows) != set(hand):
        problems.append(
            f"groups differ: only redesk {sorted(map(str, set(rows) - set(hand)))},"
            f" only SQL {sorted(map(str, set(hand) - set(rows)))}"
        )
    for key in set(rows) & set(hand):
        mine, theirs = rows[key], hand[key]
        where = "totals" if key is None else key
        for name in COUNT_KEYS[:9]:
            if mine[name] != theirs[name]:
                problems.append(f"{where} {name}: redesk {mine[name]}, SQL {theirs[name]}")
        for name, (numerator, denominator) in RATE_PARTS.items():
            rate = mine[name]
            if (rate["numerator"], rate["denominator"]) != (theirs[numerator], theirs[denominator]):
                problems.append(
                    f"{where} {name}: redesk {rate['numerator']}/"
                    f"{rate['denominator']}, SQL {theirs[numerator]}/"
                    f"{theirs[denominator]}"
                )
        for name, unit, _ in DURATION_COLUMNS:
            for label in ("median", "p90"):
                figure = f"{name}_{label}_{unit}_seconds"
                value, exact = mine[figure], theirs[figure]
                if value is None or exact is None:
                    if value is not exact:
                        problems.append(f"{where} {figure}: redesk {value}, SQL {exact}")
                elif abs(round(exact, 1) - value) > 1e-6:
                    problems.append(f"{where} {figure}: redesk {value}, SQL {exact}")
    return problems


def largest_duration_gap(report: dict[str, Any], hand: dict[str | None, dict[str, Any]]) -> float:
    """The largest |redesk − exact| over the percentiles (redesk's JSON rounds to 0.1 s)."""
    rows: dict[str | None, dict[str, Any]] = {None: report["totals"]}
    rows.update({row["key"]: row for row in report["rows"]})
    gap = 0.0
    for key in set(rows) & set(hand):
        for name, unit, _ in DURATION_COLUMNS:
            for label in ("median", "p90"):
                figure = f"{name}_{label}_{unit}_seconds"
                value, exact = rows[key][figure], hand[key][figure]
                if value is not None and exact is not None:
                    gap = max(gap, abs(value - exact))
    return gap


# --- the stats comparison -----------------------------------------------------------------


@dataclass
class StatsResult:
    """One invocation: redesk's runs and psql's runs, and whether they agree."""

    name: str
    arguments: tuple[str, ...]
    redesk: list[Run]
    psql: list[Run]
    problems: list[str]
    groups: int
    gap: float
    totals: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _median(runs: list[Run], attribute: str) -> float:
        return float(statistics.median(getattr(run, attribute) for run in runs))

    def median(self, which: str, attribute: str = "seconds") -> float:
        """The median of a figure over the runs of redesk or psql."""
        return self._median(self.redesk if which == "redesk" else self.psql, attribute)


def selected(only: str | None) -> tuple[tuple[str, tuple[str, ...], str | None], ...]:
    """The INVOCATIONS named in `only` (comma-separated: totals, department, month, centre);
    None: all of them."""
    if not only:
        return INVOCATIONS
    names = {name.strip() for name in only.split(",") if name.strip()}
    chosen = tuple(item for item in INVOCATIONS if item[0].removeprefix("--by ") in names)
    unknown = names - {item[0].removeprefix("--by ") for item in chosen}
    if unknown:
        raise SystemExit(f"--only: unknown invocation(s) {', '.join(sorted(unknown))}")
    return chosen


def run_stats(
    url: str,
    directory: Path,
    repeats: int,
    monitor: common.CpuMonitor,
    invocations: Sequence[tuple[str, tuple[str, ...], str | None]] = INVOCATIONS,
) -> list[StatsResult]:
    """Every invocation `repeats` times, redesk and psql interleaved."""
    env = _redesk_env(url)
    psql_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    results: list[StatsResult] = []
    for name, arguments, group in invocations:
        redesk_runs: list[Run] = []
        psql_runs: list[Run] = []
        problems: list[str] = []
        groups = 0
        gap = 0.0
        totals: dict[str, Any] = {}
        for attempt in range(repeats):
            run = measure(
                [common.redesk_executable(), *arguments], env, directory, monitor, "redesk stats"
            )
            if run.returncode != 0:
                raise RuntimeError(f"redesk {' '.join(arguments)} failed:\n{run.errors}")
            report = json.loads(run.output)
            redesk_runs.append(run)
            script = directory / f"hand-{len(results)}.sql"
            script.write_text(hand_sql(group, report["generated_at"]), encoding="utf-8")
            hand = measure(
                [
                    "psql",
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-F",
                    "\t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-f",
                    str(script),
                    psql_url,
                ],
                env,
                directory,
                monitor,
                "psql",
            )
            if hand.returncode != 0:
                raise RuntimeError(f"psql failed:\n{hand.errors}")
            psql_runs.append(hand)
            figures = _parse_psql(hand.output)
            found = compare(report, figures)
            gap = max(gap, largest_duration_gap(report, figures))
            groups = len(report["rows"])
            totals = report["totals"]
            problems += [f"run {attempt + 1}: {problem}" for problem in found]
            print(
                f"  {name} run {attempt + 1}: redesk {run.seconds:.2f} s "
                f"({run.rss_mb:.0f} MB), psql {hand.seconds:.2f} s; "
                f"{'equal' if not found else f'{len(found)} differences'}",
                file=sys.stderr,
            )
        results.append(
            StatsResult(name, arguments, redesk_runs, psql_runs, problems, groups, gap, totals)
        )
    return results


# --- where redesk's time goes -------------------------------------------------------------


def trace_main(argv: list[str]) -> int:
    """`python -m bench.admin trace ARGS`: runs `redesk ARGS` in this process and writes each
    SQL statement it sent, with its seconds, to $BENCH_TRACE_OUT as JSON."""
    import psycopg
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    statements: list[dict[str, Any]] = []
    began_at: list[float] = []

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        began_at.append(time.perf_counter())

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        seconds = time.perf_counter() - began_at.pop()
        try:
            text = psycopg.ClientCursor(cursor.connection).mogrify(statement, parameters)
        except Exception:
            text = statement
        statements.append({"sql": text, "seconds": seconds})

    from admin_scripts.cli import main

    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    total = time.perf_counter() - began
    Path(os.environ["BENCH_TRACE_OUT"]).write_text(
        json.dumps({"code": code, "seconds": total, "statements": statements}, ensure_ascii=False),
        encoding="utf-8",
    )
    return code


def _cohort_of(sql: str) -> str:
    """Which cohort a statement of workflow/stats.py counts: totals or a grouping."""
    if re.search(r"SELECT ''(::\w+)? AS grp", sql):
        return "totals"
    if "党委自办" in sql:
        return "department"
    for unit, pattern in (("month", "YYYY-MM'"), ("week", "'week'"), ("day", "YYYY-MM-DD")):
        if pattern in sql:
            return unit
    return "other"


def _shape(sql: str) -> str:
    """A short name for a statement: "counts <cohort>", "percentiles <cohort>", or its verb."""
    if "percentile_cont" in sql:
        return f"percentiles {_cohort_of(sql)}"
    if "count(*) AS received" in sql:
        return f"counts {_cohort_of(sql)}"
    return sql.split()[0].lower() if sql.split() else "?"


def cohort_blocks(statements: Sequence[tuple[str, float]]) -> list[tuple[str, int, float]]:
    """Consecutive statements per cohort: (cohort, statements, seconds), in order. compute()
    sends a cohort's counts, then its four percentile statements."""
    blocks: list[tuple[str, int, float]] = []
    for shape, seconds in statements:
        kind, _, cohort = shape.partition(" ")
        if kind == "counts" or not blocks or kind not in ("percentiles",):
            blocks.append((cohort or shape, 1, seconds))
        else:
            label, count, total = blocks[-1]
            blocks[-1] = (label, count + 1, total + seconds)
    return blocks


@dataclass
class Trace:
    """What one `redesk stats` invocation sent to the database."""

    name: str
    seconds: float
    statements: list[tuple[str, float]]
    plans: dict[str, str]


def trace_stats(
    url: str,
    directory: Path,
    plans: Path | None,
    invocations: Sequence[tuple[str, tuple[str, ...], str | None]] = INVOCATIONS,
) -> list[Trace]:
    """Each invocation once, in-process with statement timing; EXPLAIN ANALYZE of the
    slowest counting statement and of the hand-written SQL."""
    import psycopg

    env = _redesk_env(url)
    env["BENCH_TRACE_OUT"] = str(directory / "trace.json")
    psql_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    traces = []
    for name, arguments, group in invocations:
        answer = subprocess.run(
            [sys.executable, "-m", "bench.admin", "trace", *arguments],
            env=env,
            cwd=common.ROOT,
            capture_output=True,
            timeout=3600,
        )
        if answer.returncode != 0:
            raise RuntimeError(f"trace failed:\n{answer.stderr.decode()}")
        data = json.loads((directory / "trace.json").read_text(encoding="utf-8"))
        statements = [(_shape(item["sql"]), item["seconds"]) for item in data["statements"]]
        found: dict[str, str] = {}
        counts = [item for item in data["statements"] if "count(*) AS received" in item["sql"]]
        slowest = max(counts, key=lambda item: item["seconds"]) if counts else None
        now = datetime.now(UTC).isoformat()
        with psycopg.connect(psql_url, autocommit=True) as connection:
            targets = [("hand-written SQL", hand_sql(group, now))]
            if slowest is not None:
                targets.insert(0, ("redesk " + _shape(slowest["sql"]), slowest["sql"]))
            for label, sql in targets:
                rows = connection.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql).fetchall()
                found[label] = "\n".join(row[0] for row in rows)
        if plans is not None:
            plans.mkdir(parents=True, exist_ok=True)
            slug = name.replace("--by ", "by-")
            for label, plan in found.items():
                path = plans / f"{slug}-{label.split()[0]}.txt"
                sql = (
                    slowest["sql"]
                    if slowest is not None and label.startswith("redesk")
                    else hand_sql(group, now)
                )
                path.write_text(f"{sql}\n\n{plan}\n", encoding="utf-8")
            (plans / f"{slug}-statements.json").write_text(
                json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"
            )
        traces.append(Trace(name, data["seconds"], statements, found))
    return traces


def _execution_ms(plan: str) -> float:
    found = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return float(found.group(1)) if found else float("nan")


def _jit_ms(plan: str) -> float:
    found = re.search(r"Timing: .*Total ([\d.]+) ms", plan)
    return float(found.group(1)) if found else 0.0


# --- export -------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """One `redesk export`."""

    label: str
    run: Run
    requests: int
    size_mb: float
    events: int


def export_available(url: str, directory: Path) -> bool:
    """Whether `redesk export --help` works."""
    if not (common.ROOT / "admin_scripts" / "export.py").exists():
        return False
    answer = subprocess.run(
        [common.redesk_executable(), "export", "--help"],
        env=_redesk_env(url),
        cwd=directory,
        capture_output=True,
        timeout=120,
    )
    return answer.returncode == 0


def run_export(
    url: str,
    directory: Path,
    output_format: str,
    label: str,
    monitor: common.CpuMonitor,
    period: tuple[str, str] | None = None,
    events: int = 0,
) -> ExportResult:
    """`redesk export --format F --out FILE` (optionally --from/--to), measured."""
    out = directory / f"export.{output_format}"
    arguments = ["export", "--format", output_format, "--out", str(out)]
    if period is not None:
        arguments += ["--from", period[0], "--to", period[1]]
    run = measure(
        [common.redesk_executable(), *arguments],
        _redesk_env(url),
        directory,
        monitor,
        f"redesk export {output_format}",
    )
    if run.returncode != 0 and "schema is not current" in run.errors:
        # The product gained a migration while this (long) run went on: bring the database up
        # to it, say so, and measure again.
        subprocess.run(
            [common.redesk_executable(), "db", "upgrade"],
            env=_redesk_env(url),
            cwd=directory,
            capture_output=True,
            timeout=3600,
            check=True,
        )
        print(
            f"\nNote: the schema changed during the run; `redesk db upgrade` ran before "
            f"the {output_format} export."
        )
        run = measure(
            [common.redesk_executable(), *arguments],
            _redesk_env(url),
            directory,
            monitor,
            f"redesk export {output_format}",
        )
    if run.returncode != 0:
        raise RuntimeError(f"redesk {' '.join(arguments)} failed:\n{run.errors}")
    found = re.search(r"exported (\d+) requests", run.errors)
    size = out.stat().st_size / 2**20 if out.exists() else float("nan")
    out.unlink(missing_ok=True)
    return ExportResult(label, run, int(found.group(1)) if found else -1, size, events)


def _first_rows_period(url: str, rows: int) -> tuple[str, str, int, int]:
    """Shanghai dates from the first day to the day of the `rows`-th request, with the
    requests and events in that span."""
    first = common.pg_scalar(
        url, "SELECT min(timezone('Asia/Shanghai', created_at))::date FROM requests"
    )
    last = common.pg_scalar(
        url,
        "SELECT timezone('Asia/Shanghai', created_at)::date FROM "
        "requests ORDER BY created_at, id OFFSET %s LIMIT 1",
        (rows - 1,),
    )
    count = common.pg_scalar(
        url,
        "SELECT count(*) FROM requests WHERE timezone('Asia/Shanghai', created_at)::date <= %s",
        (last,),
    )
    events = common.pg_scalar(
        url,
        "SELECT count(*) FROM events e JOIN requests r ON r.id = e.request_id WHERE "
        "e.outcome = 'ok' AND timezone('Asia/Shanghai', r.created_at)::date <= %s",
        (last,),
    )
    return first.isoformat(), last.isoformat(), int(count), int(events)


# --- the benchmark ------------------------------------------------------------------------


def _print_generation(generated: Generated) -> None:
    total_rows = generated.people + generated.requests + generated.events
    print("| step | rows | seconds | rows/s |")
    print("|---|---:|---:|---:|")
    print(
        f"| people, departments, categories | {common.fmt(generated.people)} | "
        f"{generated.people_seconds:.1f} | "
        f"{common.fmt(generated.people / max(generated.people_seconds, 1e-9))} |"
    )
    load = generated.requests + generated.events
    print(
        f"| requests + events (COPY, two connections) | {common.fmt(load)} "
        f"({common.fmt(generated.requests)} + {common.fmt(generated.events)}) | "
        f"{generated.requests_seconds:.1f} | "
        f"{common.fmt(load / max(generated.requests_seconds, 1e-9))} |"
    )
    print(f"| VACUUM (ANALYZE) | — | {generated.vacuum_seconds:.1f} | — |")
    seconds = generated.people_seconds + generated.requests_seconds + generated.vacuum_seconds
    print(
        f"| **total** | {common.fmt(total_rows)} | {seconds:.1f} | "
        f"{common.fmt(total_rows / max(seconds, 1e-9))} |"
    )
    states = ", ".join(
        f"{state} {count / generated.requests * 100:.1f} %"
        for state, count in sorted(generated.states.items(), key=lambda item: -item[1])
    )
    print(
        f"\n{generated.events / generated.requests:.2f} events per request; states: {states}; "
        f"database {generated.database_mb:,.0f} MB."
    )
    print(f"\n{generated.cpu}")


def _print_stats(results: list[StatsResult], repeats: int) -> None:
    print(
        f"\nMedian of {repeats} runs each, redesk and psql interleaved; peak = the "
        "process's maximum RSS and CPU = its user + system time, both from "
        "`/usr/bin/time -v`.\n"
    )
    print(
        "| invocation | groups | redesk s | redesk peak MB | redesk CPU s | psql s | "
        "psql peak MB | redesk / psql | ≤ 1.5× | < 300 MB | results equal |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for result in results:
        mine, hand = result.median("redesk"), result.median("psql")
        ratio = mine / hand if hand else float("nan")
        peak = max(run.rss_mb for run in result.redesk)
        print(
            f"| `redesk {' '.join(result.arguments)}` | {result.groups} | {mine:.2f} | "
            f"{peak:.0f} | "
            f"{result.median('redesk', 'cpu_seconds'):.2f} | {hand:.2f} | "
            f"{max(run.rss_mb for run in result.psql):.0f} | **{ratio:.2f}** | "
            f"{'yes' if ratio <= 1.5 else 'no'} | {'yes' if peak < 300 else 'no'} | "
            f"{'yes' if not result.problems else 'NO'} |"
        )
    if results:
        print(f"\n{describe_totals(results[0].totals)}")
    for result in results:
        spread_r = ", ".join(f"{run.seconds:.2f}" for run in result.redesk)
        spread_p = ", ".join(f"{run.seconds:.2f}" for run in result.psql)
        print(
            f"\n{result.name}: redesk runs {spread_r} s; psql runs {spread_p} s; largest "
            f"|redesk − exact| of a percentile {result.gap:.3f} s (JSON rounds to 0.1 s)."
        )
        for problem in result.problems[:20]:
            print(f"- DIFFERENCE {problem}")


def describe_totals(totals: dict[str, Any]) -> str:
    """redesk's totals in one line (counts, rates with their parts, durations in hours)."""
    if not totals:
        return ""
    counts = ", ".join(f"{name} {common.fmt(totals[name])}" for name in COUNT_KEYS[:9])
    rates = ", ".join(
        f"{name} {totals[name]['numerator']:,}/{totals[name]['denominator']:,}"
        f" = {(totals[name]['value'] or 0) * 100:.1f} %"
        for name in RATE_PARTS
    )

    def hours(key: str) -> str:
        value = totals.get(key)
        return "—" if value is None else f"{value / 3600:.1f}"

    durations = "; ".join(
        f"{name.replace('_', ' ')} median / P90 {hours(f'{name}_median_{unit}_seconds')} / "
        f"{hours(f'{name}_p90_{unit}_seconds')} h {unit}"
        for name, unit, _ in DURATION_COLUMNS
    )
    return f"The figures (redesk's totals): {counts}; {rates}; {durations}."


def _print_traces(traces: list[Trace]) -> None:
    print(
        "\nWhere redesk's time goes (one more run of each, in-process, every statement "
        "timed; a cohort is one counts statement and its four percentile statements, in the "
        "order sent; then EXPLAIN ANALYZE of its slowest counts statement and of the "
        "hand-written SQL):\n"
    )
    print(
        "| invocation | total s | statements | in SQL s | cohorts computed, s | "
        "slowest counts: execution ms (JIT ms) | hand SQL: execution ms (JIT ms) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for trace in traces:
        in_sql = sum(seconds for _, seconds in trace.statements)
        blocks = ", ".join(
            f"{label} {seconds:.2f}" for label, _, seconds in cohort_blocks(trace.statements)
        )
        mine = next((plan for label, plan in trace.plans.items() if label.startswith("redesk")), "")
        hand = trace.plans.get("hand-written SQL", "")
        print(
            f"| {trace.name} | {trace.seconds:.2f} | {len(trace.statements)} | {in_sql:.2f} | "
            f"{blocks} | {_execution_ms(mine):,.0f} ({_jit_ms(mine):,.0f}) "
            f"| {_execution_ms(hand):,.0f} ({_jit_ms(hand):,.0f}) |"
        )


def _print_exports(exports: list[ExportResult]) -> None:
    print("\n| export | requests | events | seconds | requests/s | peak MB | CPU s | file MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for item in exports:
        print(
            f"| {item.label} | {common.fmt(item.requests)} | {common.fmt(item.events)} | "
            f"{item.run.seconds:.1f} | {common.fmt(item.requests / item.run.seconds)} | "
            f"{item.run.rss_mb:.0f} | {item.run.cpu_seconds:.1f} | {item.size_mb:,.0f} |"
        )


def _wait_for_export(url: str, directory: Path, minutes: float) -> bool:
    deadline = time.monotonic() + minutes * 60
    while True:
        if export_available(url, directory):
            return True
        if time.monotonic() >= deadline:
            return False
        print("  redesk export is not there yet; checking again in 3 minutes", file=sys.stderr)
        time.sleep(180)


@contextlib.contextmanager
def _phase(title: str) -> Iterator[common.CpuMonitor]:
    print(f"  {title} ...", file=sys.stderr)
    with common.CpuMonitor() as monitor:
        yield monitor


def run(
    requests: int,
    seed: int,
    end: date,
    days: int,
    repeats: int,
    xlsx_sample: int,
    plans: Path | None,
    export_wait: float,
    only: str | None = None,
    exports: bool = True,
) -> None:
    """The whole benchmark; prints Markdown (`only`: these stats invocations; `exports`:
    measure `redesk export` too)."""
    invocations = selected(only)
    with (
        common.fresh_database("admin") as url,
        tempfile.TemporaryDirectory(prefix="redesk-bench-admin-") as temp,
    ):
        directory = Path(temp)
        answer = subprocess.run(
            [common.redesk_executable(), "db", "upgrade"],
            env=_redesk_env(url),
            cwd=directory,
            capture_output=True,
            timeout=300,
        )
        if answer.returncode != 0:
            raise RuntimeError(f"redesk db upgrade failed:\n{answer.stderr.decode()}")
        with _phase(f"generating {requests:,} requests") as monitor:
            generated = Loader(url, requests, seed, end, days).run()
        generated.cpu = monitor.summary()
        print(f"Seed {seed}; intake over the {days} days before {end} (Asia/Shanghai).\n")
        _print_generation(generated)

        with _phase("redesk stats and psql") as monitor:
            results = run_stats(url, directory, repeats, monitor, invocations)
        _print_stats(results, repeats)
        print(f"\n{monitor.summary()}")

        with _phase("tracing redesk stats"):
            traces = trace_stats(url, directory, plans, invocations)
        _print_traces(traces)
        if not exports:
            return

        if not _wait_for_export(url, directory, export_wait):
            print(
                "\nTODO: `redesk export` did not exist (or `redesk export --help` failed) "
                f"after waiting {export_wait:g} minutes; export not measured."
            )
            return
        exports = []
        all_events = int(common.pg_scalar(url, "SELECT count(*) FROM events WHERE outcome = 'ok'"))
        with _phase("redesk export csv") as monitor:
            exports.append(
                run_export(url, directory, "csv", "csv, all rows", monitor, events=all_events)
            )
        print(f"\n{monitor.summary()} (csv)")
        first, last, sample, sample_events = _first_rows_period(url, min(xlsx_sample, requests))
        with _phase(f"redesk export xlsx, {sample:,} rows") as monitor:
            exports.append(
                run_export(
                    url,
                    directory,
                    "xlsx",
                    f"xlsx, --from {first} --to {last}",
                    monitor,
                    (first, last),
                    events=sample_events,
                )
            )
        print(f"{monitor.summary()} (xlsx sample)")
        rate = exports[-1].requests / exports[-1].run.seconds
        projected = requests / rate
        if sample < requests and projected <= 600:
            with _phase("redesk export xlsx, all rows") as monitor:
                exports.append(
                    run_export(url, directory, "xlsx", "xlsx, all rows", monitor, events=all_events)
                )
            print(f"{monitor.summary()} (xlsx)")
        _print_exports(exports)
        if sample < requests and projected > 600:
            print(
                f"\nxlsx of all {requests:,} rows not run: {projected / 60:.0f} minutes "
                f"projected at the sample's {rate:,.0f} requests/s."
            )
        if all_events > 1_048_575:
            print(
                f"\nNote: {all_events:,} events exceed an xlsx sheet's 1,048,576 rows; the "
                "办理记录 sheet of an xlsx export of all rows cannot hold them."
            )


def add_arguments(parser: Any) -> None:
    """The options of `python -m bench admin`."""
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated stats invocations to run: totals, department, month, centre "
        "(default: all)",
    )
    parser.add_argument("--no-export", action="store_true", help="do not measure `redesk export`")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--end", default="2026-11-22", help="intake ends the day before this date (Asia/Shanghai)"
    )
    parser.add_argument("--days", type=int, default=730, help="days of intake")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each stats invocation")
    parser.add_argument(
        "--xlsx-sample",
        type=int,
        default=100_000,
        help="export the first ~N requests to xlsx (all when projected to take at most 10 minutes)",
    )
    parser.add_argument(
        "--plans",
        type=Path,
        default=None,
        help="write the traced statements and EXPLAIN ANALYZE plans here",
    )
    parser.add_argument(
        "--export-wait",
        type=float,
        default=20.0,
        help="minutes to wait for `redesk export` to appear",
    )


def main_from_args(args: Any) -> None:
    """Runs the benchmark with parsed options."""
    run(
        args.requests,
        args.seed,
        date.fromisoformat(args.end),
        args.days,
        args.repeats,
        args.xlsx_sample,
        args.plans,
        args.export_wait,
        only=args.only,
        exports=not args.no_export,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "trace":
        sys.exit(trace_main(sys.argv[2:]))
    sys.exit("usage: python -m bench.admin trace ARGS... (the benchmark: python -m bench admin)")
