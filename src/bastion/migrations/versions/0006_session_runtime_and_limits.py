"""sessions: runtime tier and container limits

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runtime', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False,
                                      server_default='runc'))
        batch_op.add_column(sa.Column('limits', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('limits')
        batch_op.drop_column('runtime')
