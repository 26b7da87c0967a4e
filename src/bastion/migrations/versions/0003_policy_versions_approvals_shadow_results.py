"""policy versions, approvals, shadow results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 12:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('approvals',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tool', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('args_digest', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('call_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('policy_revision', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('decided_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('used_call_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.create_index('ix_approvals_call', ['agent_id', 'session_id', 'tool', 'args_digest'], unique=False)
        batch_op.create_index(batch_op.f('ix_approvals_status'), ['status'], unique=False)

    op.create_table('policy_shadow_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tool', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('shadow_version', sa.Integer(), nullable=False),
    sa.Column('active_revision', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('shadow_revision', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('active_allow', sa.Boolean(), nullable=False),
    sa.Column('shadow_allow', sa.Boolean(), nullable=False),
    sa.Column('active_reasons', sa.JSON(), nullable=False),
    sa.Column('shadow_reasons', sa.JSON(), nullable=False),
    sa.Column('differs', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('policy_shadow_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_shadow_results_differs'), ['differs'], unique=False)
        batch_op.create_index(batch_op.f('ix_policy_shadow_results_shadow_version'), ['shadow_version'], unique=False)

    state = op.create_table('policy_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('active_version', sa.Integer(), nullable=True),
    sa.Column('previous_version', sa.Integer(), nullable=True),
    sa.Column('shadow_version', sa.Integer(), nullable=True),
    sa.Column('changed_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('changed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(state, [{'id': 1, 'generation': 0, 'changed_at': datetime.now(UTC)}])

    op.create_table('policy_versions',
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('revision', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('author', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tests_passed', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('version')
    )
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_versions_revision'), ['revision'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('policy_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_versions_revision'))

    op.drop_table('policy_versions')
    op.drop_table('policy_state')
    with op.batch_alter_table('policy_shadow_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_policy_shadow_results_shadow_version'))
        batch_op.drop_index(batch_op.f('ix_policy_shadow_results_differs'))

    op.drop_table('policy_shadow_results')
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_approvals_status'))
        batch_op.drop_index('ix_approvals_call')

    op.drop_table('approvals')
