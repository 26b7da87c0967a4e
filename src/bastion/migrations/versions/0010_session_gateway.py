"""sessions: the gateway that owns each one (cluster mode)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gateway_id', sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f('ix_sessions_gateway_id'), ['gateway_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_gateway_id'))
        batch_op.drop_column('gateway_id')
