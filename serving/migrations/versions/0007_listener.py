"""calling AE titles of the DICOM listener: ae_titles maps each to its hospital

Revision ID: 0007_listener
Revises: 0006_loop3
Create Date: 2026-12-03 09:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_listener"
down_revision: str | None = "0006_loop3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ae_titles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospitals.id"], name=op.f("fk_ae_titles_hospital_id_hospitals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ae_titles")),
        sa.UniqueConstraint("ae_title", name=op.f("uq_ae_titles_ae_title")),
    )
    with op.batch_alter_table("ae_titles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ae_titles_hospital_id"), ["hospital_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ae_titles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ae_titles_hospital_id"))
    op.drop_table("ae_titles")
