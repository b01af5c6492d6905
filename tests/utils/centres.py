"""A small network of centres on the world's database: district D with communities C1 and C2
and the 商圈 B under it, each with its workers, a district leader, a community leader, a
district department and residents of each community.

tests/conftest.py offers it as the `tree` fixture.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session

from storage import queries
from storage.db import session_scope
from storage.models import Category, Centre, CentreLevel, Department, Person
from tests.utils.world import NOW, World
from workflow import service

_ids = itertools.count(1)


@dataclass
class Tree:
    """District D (a root) over C1, C2 (社区) and B (商圈), and the people in them."""

    world: World
    district: Centre
    c1: Centre
    c2: Centre
    business: Centre
    #: The district's 城管执法, offered for 转单 in the whole district.
    d_department: Department
    #: C1's own 社区网格 (for C1's requests only).
    c1_department: Department
    d_worker: Person
    d_leader: Person
    c1_worker: Person
    c1_worker2: Person
    c1_leader: Person
    c1_group: Person
    c2_worker: Person
    b_worker: Person
    d_staff: Person
    c1_staff: Person
    c1_resident: Person
    c2_resident: Person

    def submit(
        self, resident: Person | None = None, text: str = "小区门口的路灯坏了", now: datetime = NOW
    ) -> str:
        """A new request of a resident (C1's by default); its number."""
        request = self.world.do(service.submit, resident or self.c1_resident, text, now=now)
        return str(request.number)

    def held_by(self, number: str) -> int:
        """The id of the centre that holds a request now."""
        return self.world.request(number).centre_id

    def everyone(self) -> list[Person]:
        """Every person of the tree."""
        return [
            self.d_worker,
            self.d_leader,
            self.c1_worker,
            self.c1_worker2,
            self.c1_leader,
            self.c1_group,
            self.c2_worker,
            self.b_worker,
            self.d_staff,
            self.c1_staff,
            self.c1_resident,
            self.c2_resident,
        ]


def _person(
    session: Session,
    name: str,
    role: str,
    centre: Centre,
    department: Department | None = None,
) -> Person:
    person = Person(
        channel="web",
        external_id=f"tree{next(_ids)}",
        display_name=name,
        role=role,
        centre_id=centre.id,
        department_id=department.id if department else None,
    )
    session.add(person)
    return person


def add_district(session: Session) -> dict[str, Centre]:
    """District D (a root) with C1 and C2 (社区) and B (商圈) under it, by code."""
    district = queries.add_centre(
        session=session, code="D", name="锦江区党群服务中心", level=CentreLevel.DISTRICT
    )
    centres = {"D": district}
    for code, name, level in [
        ("C1", "春熙社区", CentreLevel.COMMUNITY),
        ("C2", "东风社区", CentreLevel.COMMUNITY),
        ("B", "春熙路商圈", CentreLevel.BUSINESS),
    ]:
        centres[code] = queries.add_centre(
            session=session, code=code, name=name, level=level, parent=district
        )
    return centres


def place(engine: Engine, person_id: int, centre: Centre) -> None:
    """Moves a person (e.g. a worker bound through the desk) into `centre`."""
    with session_scope(engine) as session:
        person = session.get(Person, person_id)
        assert person is not None
        person.centre_id = centre.id
        session.add(person)


def make_tree(world: World) -> Tree:
    """The network, its departments, a category of no centre and its people (one transaction)."""
    with session_scope(world.engine) as session:
        centres = add_district(session)
        district, c1, c2, business = (centres[code] for code in ("D", "C1", "C2", "B"))
        d_department = Department(name="城管执法", centre_id=district.id)
        c1_department = Department(name="社区网格", centre_id=c1.id)
        session.add_all([d_department, c1_department])
        session.add(
            Category(name="市政设施", keywords=["路灯"], response_hours=4, resolution_days=5)
        )
        session.flush()
        people = {
            "d_worker": _person(session, "区王", "worker", district),
            "d_leader": _person(session, "区刘主任", "leader", district),
            "c1_worker": _person(session, "春熙王书记", "worker", c1),
            "c1_worker2": _person(session, "春熙赵委员", "worker", c1),
            "c1_leader": _person(session, "春熙李主任", "leader", c1),
            "c1_group": _person(session, "春熙党委群", "group", c1),
            "c2_worker": _person(session, "东风孙书记", "worker", c2),
            "b_worker": _person(session, "商圈周书记", "worker", business),
            "d_staff": _person(session, "城管小陈", "department", district, d_department),
            "c1_staff": _person(session, "网格员小吴", "department", c1, c1_department),
            "c1_resident": _person(session, "张三", "requester", c1),
            "c2_resident": _person(session, "李四", "requester", c2),
        }
        session.flush()
    return Tree(
        world=world,
        district=district,
        c1=c1,
        c2=c2,
        business=business,
        d_department=d_department,
        c1_department=c1_department,
        **people,
    )
