"""intake: a radiograph series whose pixel spacing was estimated (millimetres approximate)

Revision ID: 0003_intake
Revises: 0005_loop
Create Date: 2026-12-03 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_intake"
# Chained after main's head at the time of the rebase; the coordinator re-chains.
down_revision: str | None = "0005_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.add_column(
            sa.Column("spacing_estimated", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("spacing_estimated")
