"""accounts: staff accounts of the console (username, password, sessions, login attempts);
chat identities linked to an account's person; every person with a role becomes an account

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 19:00:00
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Roles held by staff: each person with one becomes an account (no password until
#: `redesk staff reset-password` gives them a setup link). Groups are chats, not people.
STAFF_ROLES = ('worker', 'leader', 'department', 'admin')


def upgrade() -> None:
    op.create_table(
        'accounts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('password_hash', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('setup_token_hash', sa.String(length=64), nullable=True),
        sa.Column('setup_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('notify_person_id', sa.Integer(), nullable=True),
        sa.Column('sessions_valid_after', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['notify_person_id'], ['people.id'], ),
        sa.ForeignKeyConstraint(['person_id'], ['people.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('person_id'),
        sa.UniqueConstraint('setup_token_hash'),
        sa.UniqueConstraint('username'),
    )
    op.create_table(
        'console_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('csrf_token', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_console_sessions_account_id', ['account_id'], unique=False)
    op.create_table(
        'login_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('username', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_login_attempts_username_at', ['username', 'at'], unique=False)
        batch_op.create_index('ix_login_attempts_address_at', ['address', 'at'], unique=False)
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.add_column(sa.Column('principal_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_people_principal_id', ['principal_id'], unique=False)
        batch_op.create_foreign_key('fk_people_principal_id', 'people', ['principal_id'], ['id'])
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('account_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            'fk_invitations_account_id', 'accounts', ['account_id'], ['id'])

    # Every person who holds a staff role today becomes an account of their own, nothing
    # else changes: their chat identity is the account's person.
    bind = op.get_bind()
    people = sa.table(
        'people',
        sa.column('id', sa.Integer()),
        sa.column('channel', sa.String()),
        sa.column('external_id', sa.String()),
        sa.column('role', sa.String()),
    )
    accounts = sa.table(
        'accounts',
        sa.column('username', sa.String()),
        sa.column('person_id', sa.Integer()),
        sa.column('active', sa.Boolean()),
        sa.column('created_at', sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    stamp = now.replace(tzinfo=None) if bind.dialect.name == 'sqlite' else now
    taken: set[str] = set()
    rows = []
    for person_id, channel, external_id in bind.execute(
        sa.select(people.c.id, people.c.channel, people.c.external_id)
        .where(people.c.role.in_(STAFF_ROLES))
        .order_by(people.c.id)
    ):
        rows.append({
            'username': migrated_username(channel, external_id, person_id, taken),
            'person_id': person_id,
            'active': True,
            'created_at': stamp,
        })
    if rows:
        op.bulk_insert(accounts, rows)


def migrated_username(channel: str, external_id: str, person_id: int, taken: set[str]) -> str:
    """A username for a chat identity that becomes an account: `<channel>-<id>`, kept to
    lower-case letters, digits, dots, dashes and underscores, unique among `taken`."""
    cleaned = re.sub(r'[^a-z0-9._-]+', '', f'{channel}-{external_id}'.lower())[:48]
    name = cleaned or f'person-{person_id}'
    if name in taken:
        name = f'{name}-{person_id}'
    taken.add(name)
    return name


def downgrade() -> None:
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_constraint('fk_invitations_account_id', type_='foreignkey')
        batch_op.drop_column('account_id')
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_constraint('fk_people_principal_id', type_='foreignkey')
        batch_op.drop_index('ix_people_principal_id')
        batch_op.drop_column('principal_id')
    op.drop_table('login_attempts')
    op.drop_table('console_sessions')
    op.drop_table('accounts')
