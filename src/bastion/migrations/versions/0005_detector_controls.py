"""detector controls: per-agent modes, suppressions, annotations

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('detector_modes',
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('set_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('agent_id')
    )
    op.create_table('detector_suppressions',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('tool', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('pattern', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('lifted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('lifted_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('detector_suppressions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_detector_suppressions_lifted_at'), ['lifted_at'], unique=False)

    op.create_table('detector_annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('revocation_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('agent_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('detector_annotations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_detector_annotations_revocation_id'), ['revocation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_detector_annotations_session_id'), ['session_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('detector_annotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_detector_annotations_session_id'))
        batch_op.drop_index(batch_op.f('ix_detector_annotations_revocation_id'))
    op.drop_table('detector_annotations')
    with op.batch_alter_table('detector_suppressions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_detector_suppressions_lifted_at'))
    op.drop_table('detector_suppressions')
    op.drop_table('detector_modes')
