"""dicomweb: what QIDO-RS matches and answers without reading the images again

Study-level matching keys (PatientID, PatientName, StudyDate, AccessionNumber) on
``studies``; each instance's header as DICOM JSON (no pixel data) on ``instances``. NULL
means "not indexed yet": rows from before this revision are indexed from the stored file's
header the first time a query reaches them.

Revision ID: 0010_dicomweb
Revises: 0009_monitor
Create Date: 2026-12-03 09:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_dicomweb"
down_revision: str | None = "0009_monitor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STUDY_COLUMNS = ("patient_id", "patient_name", "study_date", "accession_number")


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("patient_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("patient_name", sa.String(324), nullable=True))
        batch.add_column(sa.Column("study_date", sa.String(8), nullable=True))
        batch.add_column(sa.Column("accession_number", sa.String(64), nullable=True))
        batch.create_index("ix_studies_patient_id", ["patient_id"])
        batch.create_index("ix_studies_study_date", ["study_date"])
        batch.create_index("ix_studies_accession_number", ["accession_number"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("header_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("header_json")
    with op.batch_alter_table("studies") as batch:
        batch.drop_index("ix_studies_accession_number")
        batch.drop_index("ix_studies_study_date")
        batch.drop_index("ix_studies_patient_id")
        for name in reversed(_STUDY_COLUMNS):
            batch.drop_column(name)
