"""custom_tools: what a tool declares it does (effects)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('custom_tools', schema=None) as batch_op:
        batch_op.add_column(sa.Column('effects', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('custom_tools', schema=None) as batch_op:
        batch_op.drop_column('effects')
