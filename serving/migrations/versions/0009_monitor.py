"""monitoring: the monitor's records (input statistics, challenger scores) and drift alarms

Revision ID: 0009_monitor
Revises: 0008_srpush
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_monitor"
down_revision: str | None = "0008_srpush"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitor_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("manufacturer", sa.String(length=200), nullable=False),
        sa.Column("device_model", sa.String(length=200), nullable=False),
        sa.Column("champion_name", sa.String(length=200), nullable=False),
        sa.Column("champion_version", sa.String(length=64), nullable=False),
        sa.Column("champion_raw_score", sa.Float(), nullable=False),
        sa.Column("champion_score", sa.Float(), nullable=False),
        sa.Column("champion_priority", sa.String(length=32), nullable=False),
        sa.Column("challenger_name", sa.String(length=200), nullable=True),
        sa.Column("challenger_version", sa.String(length=64), nullable=True),
        sa.Column("challenger_raw_score", sa.Float(), nullable=True),
        sa.Column("challenger_score", sa.Float(), nullable=True),
        sa.Column("challenger_priority", sa.String(length=32), nullable=True),
        sa.Column("challenger_s", sa.Float(), nullable=True),
        sa.Column("intensity_mean", sa.Float(), nullable=True),
        sa.Column("histogram_distance", sa.Float(), nullable=True),
        sa.Column("spacing_mm", sa.Float(), nullable=True),
        sa.Column("pixels", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_monitor_records_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_monitor_records_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["hospital_id"],
            ["hospitals.id"],
            name=op.f("fk_monitor_records_hospital_id_hospitals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_records")),
        sa.UniqueConstraint("job_id", name=op.f("uq_monitor_records_job_id")),
    )
    op.create_index(
        op.f("ix_monitor_records_study_id"), "monitor_records", ["study_id"], unique=False
    )
    op.create_index(
        op.f("ix_monitor_records_hospital_id"), "monitor_records", ["hospital_id"], unique=False
    )
    op.create_index(
        op.f("ix_monitor_records_created_at"), "monitor_records", ["created_at"], unique=False
    )
    op.create_table(
        "drift_alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=400), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("studies", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cleared_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["hospital_id"],
            ["hospitals.id"],
            name=op.f("fk_drift_alarms_hospital_id_hospitals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_alarms")),
    )
    op.create_index(
        op.f("ix_drift_alarms_hospital_id"), "drift_alarms", ["hospital_id"], unique=False
    )
    op.create_index(op.f("ix_drift_alarms_raised_at"), "drift_alarms", ["raised_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_drift_alarms_raised_at"), table_name="drift_alarms")
    op.drop_index(op.f("ix_drift_alarms_hospital_id"), table_name="drift_alarms")
    op.drop_table("drift_alarms")
    op.drop_index(op.f("ix_monitor_records_created_at"), table_name="monitor_records")
    op.drop_index(op.f("ix_monitor_records_hospital_id"), table_name="monitor_records")
    op.drop_index(op.f("ix_monitor_records_study_id"), table_name="monitor_records")
    op.drop_table("monitor_records")
