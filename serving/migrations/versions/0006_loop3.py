"""a community doctor's referral request has no specialist's decision: referrals.review_id
may be null

Revision ID: 0006_loop3
Revises: 0003_intake
Create Date: 2026-12-03 07:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_loop3"
down_revision: str | None = "0003_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.alter_column("review_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    # Referrals requested by community doctors have no review; they cannot survive a
    # downgrade to a schema that requires one.
    op.execute("DELETE FROM referrals WHERE review_id IS NULL")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.alter_column("review_id", existing_type=sa.Integer(), nullable=False)
