"""card messages: where each delivered card is, so that it can be updated when it goes stale;
web messages that update an earlier one

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 06:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'card_messages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=False),
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('outbox_id', sa.Integer(), nullable=False),
        sa.Column('chat_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column('message_id', sa.BigInteger(), nullable=True),
        sa.Column('web_seq', sa.Integer(), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('buttons', sa.JSON(), nullable=False),
        sa.Column('open', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
        sa.ForeignKeyConstraint(['request_id'], ['requests.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('outbox_id'),
    )
    with op.batch_alter_table('card_messages', schema=None) as batch_op:
        batch_op.create_index('ix_card_messages_request_open', ['request_id', 'open'],
                              unique=False)
    with op.batch_alter_table('web_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updates', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('web_messages', schema=None) as batch_op:
        batch_op.drop_column('updates')
    op.drop_table('card_messages')
