"""bind failures: failed 绑定 attempts, counted per person and per address to refuse guessing

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'bind_failures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('identity', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('bind_failures', schema=None) as batch_op:
        batch_op.create_index('ix_bind_failures_person_at', ['person_id', 'at'], unique=False)
        batch_op.create_index('ix_bind_failures_address_at', ['address', 'at'], unique=False)


def downgrade() -> None:
    op.drop_table('bind_failures')
