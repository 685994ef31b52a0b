"""results pushed back to hospitals: result_destinations, findings.reportable, the outbox's
destination_kind

Revision ID: 0008_srpush
Revises: 0007_listener
Create Date: 2026-12-03 09:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from oncotriage.serving.db.base import UTCDateTime

revision: str = "0008_srpush"
down_revision: str | None = "0007_listener"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "result_destinations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("auth", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=True),
        sa.Column("secret", sa.String(length=2000), nullable=True),
        sa.Column("ae_title", sa.String(length=16), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospitals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hospital_id"),
    )
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reportable", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("destination_kind", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.drop_column("destination_kind")
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_column("reportable")
    op.drop_table("result_destinations")
