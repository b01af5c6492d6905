"""reminders: done reminders, escalations and digests; when deadlines were set

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 07:45:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deadlines_set_at', sa.DateTime(timezone=True),
                                      nullable=True))
    op.execute("UPDATE requests SET deadlines_set_at = created_at")
    op.create_table(
        'reminders',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=True),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['request_id'], ['requests.id'], ),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reminders_request_id'), ['request_id'],
                              unique=False)


def downgrade() -> None:
    op.drop_table('reminders')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_column('deadlines_set_at')
