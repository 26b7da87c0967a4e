"""custom_tools: names up to 128 characters, as MCP allows

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('custom_tools', schema=None) as batch_op:
        batch_op.alter_column('name', existing_type=sa.String(length=64), type_=sa.String(length=128),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('custom_tools', schema=None) as batch_op:
        batch_op.alter_column('name', existing_type=sa.String(length=128), type_=sa.String(length=64),
                              existing_nullable=False)
