"""findings.calibrated_score: each box's score on the scale of the study score and thresholds

The detector's score stays in ``score``; ``calibrated_score`` is that score through the model
version's score calibration (``Thresholds.study_score``), the number the case view, the
operating threshold and the study's suspicion score share. NULL for findings recorded before
this revision (readers fall back to ``score``).

Revision ID: 0011_finding_calibrated
Revises: 0010_dicomweb
Create Date: 2026-12-04 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_finding_calibrated"
down_revision: str | None = "0010_dicomweb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("calibrated_score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("calibrated_score")
