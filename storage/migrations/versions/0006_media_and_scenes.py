"""media and scenes: the QR scene an inbound message and a person came through

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scene', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scene', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('scene_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_column('scene_at')
        batch_op.drop_column('scene')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_column('scene')
