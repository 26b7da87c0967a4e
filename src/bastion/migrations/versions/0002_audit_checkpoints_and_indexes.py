"""audit: signed checkpoints, risk and metrics columns, indexes for responders' filters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('signature', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_checkpoints_seq'), ['seq'], unique=False)

    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('risk', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('metrics', sa.JSON(), nullable=True))
        batch_op.drop_index(batch_op.f('ix_audit_records_allow'))
        batch_op.drop_index(batch_op.f('ix_audit_records_kind'))
        batch_op.drop_index(batch_op.f('ix_audit_records_decision_id'))
        batch_op.drop_index(batch_op.f('ix_audit_records_tool'))
        batch_op.create_index('ix_audit_agent_seq', ['agent_id', 'seq'], unique=False)
        batch_op.create_index('ix_audit_decision_seq', ['kind', 'allow', 'seq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_decision_seq')
        batch_op.drop_index('ix_audit_agent_seq')
        batch_op.create_index(batch_op.f('ix_audit_records_tool'), ['tool'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_decision_id'), ['decision_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_records_allow'), ['allow'], unique=False)
        batch_op.drop_column('metrics')
        batch_op.drop_column('risk')

    with op.batch_alter_table('audit_checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_checkpoints_seq'))

    op.drop_table('audit_checkpoints')
