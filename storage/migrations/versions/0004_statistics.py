"""statistics: figures fixed when they happen, and the admin audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('responded_in_time', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('response_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('response_work_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('first_replied_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('reply_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reply_work_seconds', sa.Integer(), nullable=True))
    # Requests acted on before this revision: whether in time is known from the columns (the
    # deadline may have moved with a reopen); durations stay unknown (NULL).
    op.execute("UPDATE requests SET responded_in_time = (first_action_at <= response_due_at) "
               "WHERE first_action_at IS NOT NULL AND response_due_at IS NOT NULL")
    op.create_table(
        'admin_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('admin_audit')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        for column in ('reply_work_seconds', 'reply_seconds', 'first_replied_at',
                       'response_work_seconds', 'response_seconds', 'responded_in_time'):
            batch_op.drop_column(column)
