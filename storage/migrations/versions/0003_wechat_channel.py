"""wechat channel: the customer-service window and fetched media

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 07:10:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_inbound_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('window_sent', sa.Integer(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=500),
                                      nullable=True))
        batch_op.add_column(sa.Column('stored_path',
                                      sqlmodel.sql.sqltypes.AutoString(length=255),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.drop_column('stored_path')
        batch_op.drop_column('url')
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_column('window_sent')
        batch_op.drop_column('last_inbound_at')
