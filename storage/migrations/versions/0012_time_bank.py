"""time bank: hour accounts (one per centre, one per volunteer), immutable hour movements
between them, each centre's rewards catalogue and the redemptions of its rewards

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 20:15:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: A movement is never changed: an UPDATE is refused by the database itself (a correction is
#: a new, compensating movement). Deleting is left to whoever empties a database.
PG_IMMUTABLE = """
CREATE FUNCTION hour_movements_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'hour movements are immutable: record a compensating movement';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER hour_movements_no_update BEFORE UPDATE ON hour_movements
    FOR EACH ROW EXECUTE FUNCTION hour_movements_immutable();
"""
SQLITE_IMMUTABLE = """
CREATE TRIGGER hour_movements_no_update BEFORE UPDATE ON hour_movements
BEGIN
    SELECT RAISE(ABORT, 'hour movements are immutable: record a compensating movement');
END;
"""


def upgrade() -> None:
    op.create_table(
        'rewards',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('centre_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('minutes', sa.Integer(), nullable=False),
        sa.Column('stock', sa.Integer(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('minutes > 0', name='ck_rewards_minutes'),
        sa.CheckConstraint('stock IS NULL OR stock >= 0', name='ck_rewards_stock'),
        sa.ForeignKeyConstraint(['centre_id'], ['centres.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('centre_id', 'name', name='uq_rewards_centre_name'),
    )
    with op.batch_alter_table('rewards', schema=None) as batch_op:
        batch_op.create_index('ix_rewards_centre_id', ['centre_id'], unique=False)
    op.create_table(
        'hour_accounts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('centre_id', sa.Integer(), nullable=True),
        sa.Column('person_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'centre' AND centre_id IS NOT NULL AND person_id IS NULL) OR "
            "(kind = 'volunteer' AND person_id IS NOT NULL AND centre_id IS NULL)",
            name='ck_hour_accounts_owner',
        ),
        sa.ForeignKeyConstraint(['centre_id'], ['centres.id'], ),
        sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('centre_id'),
        sa.UniqueConstraint('person_id'),
    )
    op.create_table(
        'hour_movements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('from_account_id', sa.Integer(), nullable=False),
        sa.Column('to_account_id', sa.Integer(), nullable=False),
        sa.Column('minutes', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('request_id', sa.Integer(), nullable=True),
        sa.Column('reward_id', sa.Integer(), nullable=True),
        sa.Column('recorded_by_id', sa.Integer(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('from_account_id <> to_account_id', name='ck_hour_movements_accounts'),
        sa.CheckConstraint('minutes > 0', name='ck_hour_movements_minutes'),
        sa.ForeignKeyConstraint(['from_account_id'], ['hour_accounts.id'], ),
        sa.ForeignKeyConstraint(['recorded_by_id'], ['people.id'], ),
        sa.ForeignKeyConstraint(['request_id'], ['requests.id'], ),
        sa.ForeignKeyConstraint(['reward_id'], ['rewards.id'], ),
        sa.ForeignKeyConstraint(['to_account_id'], ['hour_accounts.id'], ),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('hour_movements', schema=None) as batch_op:
        batch_op.create_index(
            'ix_hour_movements_from_created', ['from_account_id', 'created_at'], unique=False)
        batch_op.create_index('ix_hour_movements_request_id', ['request_id'], unique=False)
        batch_op.create_index(
            'ix_hour_movements_to_created', ['to_account_id', 'created_at'], unique=False)
    op.create_table(
        'redemptions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('reward_id', sa.Integer(), nullable=False),
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('movement_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('given_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('given_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['given_by_id'], ['people.id'], ),
        sa.ForeignKeyConstraint(['movement_id'], ['hour_movements.id'], ),
        sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
        sa.ForeignKeyConstraint(['reward_id'], ['rewards.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('movement_id'),
    )
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.create_index('ix_redemptions_person_id', ['person_id'], unique=False)
        batch_op.create_index('ix_redemptions_reward_id', ['reward_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(PG_IMMUTABLE)
    else:
        op.execute(SQLITE_IMMUTABLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS hour_movements_no_update ON hour_movements')
        op.execute('DROP FUNCTION IF EXISTS hour_movements_immutable()')
    else:
        op.execute('DROP TRIGGER IF EXISTS hour_movements_no_update')
    op.drop_table('redemptions')
    op.drop_table('hour_movements')
    op.drop_table('hour_accounts')
    op.drop_table('rewards')
