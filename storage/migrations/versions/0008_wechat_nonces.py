"""wechat nonces: the (timestamp, nonce) of every WeChat callback within the replay window,
with a digest of its body, for deployments without Redis

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'wechat_nonces',
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('wechat_nonces', schema=None) as batch_op:
        batch_op.create_index('ix_wechat_nonces_expires_at', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wechat_nonces', schema=None) as batch_op:
        batch_op.drop_index('ix_wechat_nonces_expires_at')
    op.drop_table('wechat_nonces')
