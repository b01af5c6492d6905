"""centres: a tree of service centres; every request, person with a role, department and
invitation in one; existing data moves into the default centre; requests get tick_at

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 16:30:00
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The centre a fresh or upgraded install holds everything in.
DEFAULT_CODE = 'default'
DEFAULT_NAME = '党群服务中心'
DEFAULT_LEVEL = '社区'

#: What SQLite's reflection calls the unnamed unique constraints of 0001.
_NAMING = {'uq': 'uq_%(table_name)s_%(column_0_name)s'}


def _centre_fk(batch_op: object, table: str, *, index: bool = True) -> None:
    batch_op.add_column(sa.Column('centre_id', sa.Integer(), nullable=True))
    batch_op.create_foreign_key(
        f'fk_{table}_centre_id', 'centres', ['centre_id'], ['id'])
    if index:
        batch_op.create_index(f'ix_{table}_centre_id', ['centre_id'], unique=False)


def _drop_name_unique(table: str) -> None:
    """Drops 0001's unique(name) of `table`, whatever the dialect named it."""
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table(table, naming_convention=_NAMING) as batch_op:
            batch_op.drop_constraint(f'uq_{table}_name', type_='unique')
    else:
        op.drop_constraint(f'{table}_name_key', table, type_='unique')


def upgrade() -> None:
    op.create_table(
        'centres',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=32), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('level', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('parent_id', sa.Integer(), nullable=True),
        sa.Column('path', sa.String(length=400), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('is_default', sa.Boolean(), nullable=False),
        sa.Column('days_off', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['parent_id'], ['centres.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('code'),
    )
    with op.batch_alter_table('centres', schema=None) as batch_op:
        batch_op.create_index('ix_centres_parent_id', ['parent_id'], unique=False)
        batch_op.create_index('ix_centres_path', ['path'], unique=False)

    centres = sa.table(
        'centres',
        sa.column('id', sa.Integer()),
        sa.column('code', sa.String()),
        sa.column('name', sa.String()),
        sa.column('level', sa.String()),
        sa.column('parent_id', sa.Integer()),
        sa.column('path', sa.String()),
        sa.column('active', sa.Boolean()),
        sa.column('is_default', sa.Boolean()),
        sa.column('days_off', sa.JSON()),
        sa.column('created_at', sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    now = datetime.now(UTC)
    op.bulk_insert(centres, [{
        'code': DEFAULT_CODE, 'name': DEFAULT_NAME, 'level': DEFAULT_LEVEL, 'parent_id': None,
        'path': '/', 'active': True, 'is_default': True, 'days_off': [],
        'created_at': now.replace(tzinfo=None) if bind.dialect.name == 'sqlite' else now,
    }])
    default_id = bind.execute(
        sa.select(centres.c.id).where(centres.c.code == DEFAULT_CODE)).scalar_one()
    bind.execute(
        centres.update().where(centres.c.id == default_id).values(path=f'/{default_id}/'))

    _drop_name_unique('departments')
    _drop_name_unique('categories')
    with op.batch_alter_table('departments', schema=None) as batch_op:
        _centre_fk(batch_op, 'departments')
        batch_op.create_unique_constraint('uq_departments_centre_name', ['centre_id', 'name'])
    with op.batch_alter_table('categories', schema=None) as batch_op:
        _centre_fk(batch_op, 'categories')
        batch_op.create_unique_constraint('uq_categories_centre_name', ['centre_id', 'name'])
    with op.batch_alter_table('people', schema=None) as batch_op:
        _centre_fk(batch_op, 'people')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        _centre_fk(batch_op, 'invitations', index=False)
    with op.batch_alter_table('requests', schema=None) as batch_op:
        _centre_fk(batch_op, 'requests', index=False)
        batch_op.add_column(sa.Column('tick_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_requests_tick_at', ['tick_at'], unique=False)

    # Everything there is belongs to the default centre. Categories stay of no centre: they
    # apply everywhere, as they did.
    for table in ('departments', 'people', 'invitations', 'requests'):
        bind.execute(sa.text(f'UPDATE {table} SET centre_id = :centre').bindparams(
            centre=default_id))
    # Every open request is looked at by the next tick, which sets when to look again.
    bind.execute(sa.text(
        "UPDATE requests SET tick_at = updated_at "
        "WHERE state NOT IN ('closed', 'rejected', 'cancelled')"))

    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.alter_column('centre_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index('ix_requests_centre_state', ['centre_id', 'state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_centre_state')
        batch_op.drop_index('ix_requests_tick_at')
        batch_op.drop_column('tick_at')
        batch_op.drop_constraint('fk_requests_centre_id', type_='foreignkey')
        batch_op.drop_column('centre_id')
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_constraint('fk_invitations_centre_id', type_='foreignkey')
        batch_op.drop_column('centre_id')
    with op.batch_alter_table('people', schema=None) as batch_op:
        batch_op.drop_index('ix_people_centre_id')
        batch_op.drop_constraint('fk_people_centre_id', type_='foreignkey')
        batch_op.drop_column('centre_id')
    for table in ('categories', 'departments'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'uq_{table}_centre_name', type_='unique')
            batch_op.drop_index(f'ix_{table}_centre_id')
            batch_op.drop_constraint(f'fk_{table}_centre_id', type_='foreignkey')
            batch_op.drop_column('centre_id')
            batch_op.create_unique_constraint(f'uq_{table}_name', ['name'])
    op.drop_table('centres')
