"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 02:28:31.282705
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_records',
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('record_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('decision_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('call_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('tool', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('allow', sa.Boolean(), nullable=True),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('input', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('policy_revision', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('record_id')
    )
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.create_index('ix_audit_agent_time', ['agent_id', 'timestamp'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_allow'), ['allow'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_decision_id'), ['decision_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_timestamp'), ['timestamp'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_tool'), ['tool'], unique=False)
        batch_op.create_index('ix_audit_session_seq', ['session_id', 'seq'], unique=False)

    op.create_table('principals',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('tenant', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('key_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('key_prefix', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('principals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_principals_key_hash'), ['key_hash'], unique=True)

    op.create_table('revocations',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('tool', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('lifted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('lifted_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revocations_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_revocations_lifted_at'), ['lifted_at'], unique=False)

    op.create_table('sessions',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('container_id', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('call_count', sa.Integer(), nullable=False),
    sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('ended_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sessions_agent_id'), ['agent_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sessions_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_status'))
        batch_op.drop_index(batch_op.f('ix_sessions_agent_id'))

    op.drop_table('sessions')
    with op.batch_alter_table('revocations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revocations_lifted_at'))
        batch_op.drop_index(batch_op.f('ix_revocations_agent_id'))

    op.drop_table('revocations')
    with op.batch_alter_table('principals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_principals_key_hash'))

    op.drop_table('principals')
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_session_seq')
        batch_op.drop_index(batch_op.f('ix_audit_records_tool'))
        batch_op.drop_index(batch_op.f('ix_audit_records_timestamp'))
        batch_op.drop_index(batch_op.f('ix_audit_records_kind'))
        batch_op.drop_index(batch_op.f('ix_audit_records_decision_id'))
        batch_op.drop_index(batch_op.f('ix_audit_records_call_id'))
        batch_op.drop_index(batch_op.f('ix_audit_records_allow'))
        batch_op.drop_index('ix_audit_agent_time')

    op.drop_table('audit_records')
