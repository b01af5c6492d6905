"""A small network of centres beside the default one, for the tests of how residents reach
a centre: a district (锦江区) with two communities and a 商圈 under it.

The default centre (党群服务中心, code `default`) stays a root, so the top of the choice has
two centres: 1. the default one, 2. the district.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from storage import queries
from storage.db import session_scope
from storage.models import Centre, CentreLevel


@dataclass(frozen=True)
class Network:
    """The ids of the centres made (the default one included)."""

    default: int
    district: int
    chunxi: int
    shuyuan: int
    hejiang: int

    def name(self, engine: Engine, centre_id: int) -> str:
        """A centre's name."""
        with Session(engine) as session:
            centre = session.get(Centre, centre_id)
            assert centre is not None
            return centre.name


#: (code, name, level) of the district's centres, in the order made.
CHILDREN = (
    ("chunxi", "春熙路商圈党群服务中心", CentreLevel.BUSINESS),
    ("shuyuan", "书院街社区党群服务中心", CentreLevel.COMMUNITY),
    ("hejiang", "合江亭社区党群服务中心", CentreLevel.COMMUNITY),
)


def add_network(engine: Engine) -> Network:
    """Adds the district 锦江区党群服务中心 (code jinjiang) and its three centres."""
    with session_scope(engine) as session:
        default = queries.default_centre(session=session)
        district = queries.add_centre(
            session=session, code="jinjiang", name="锦江区党群服务中心", level=CentreLevel.DISTRICT
        )
        made = [
            queries.add_centre(session=session, code=code, name=name, level=level, parent=district)
            for code, name, level in CHILDREN
        ]
        ids = [default.id, district.id, *(centre.id for centre in made)]
    assert all(isinstance(i, int) for i in ids)
    return Network(*(int(i) for i in ids if i is not None))


def deactivate(engine: Engine, code: str) -> None:
    """Deactivates a centre."""
    with session_scope(engine) as session:
        centre = queries.get_centre_by_code(session=session, code=code)
        assert centre is not None
        centre.active = False
        session.add(centre)
