"""close the loop: patients, referral lifecycle, follow-ups, outcomes, licences

Revision ID: 0005_loop
Revises: 0002_series_role
Create Date: 2026-12-03 06:59:38.264108
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_loop"
down_revision: str | None = "0002_series_role"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("centre_id", sa.Integer(), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["centre_id"], ["hospitals.id"], name=op.f("fk_patients_centre_id_hospitals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("centre_id", "pseudonym", name=op.f("uq_patients_centre_id_pseudonym")),
    )
    op.create_table(
        "referral_licences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_referral_licences_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_licences")),
    )
    with op.batch_alter_table("referral_licences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_referral_licences_user_id"), ["user_id"], unique=False)

    op.create_table(
        "patient_studies",
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_patient_studies_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_patient_studies_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_id", name=op.f("pk_patient_studies")),
    )
    with op.batch_alter_table("patient_studies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_studies_patient_id"), ["patient_id"], unique=False
        )

    op.create_table(
        "followups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("hospital_id", sa.Integer(), nullable=False),
        sa.Column("referral_id", sa.Integer(), nullable=True),
        sa.Column(
            "category",
            sa.Enum("1", "2", "3", "4A", "4B", "4X", name="lungrads", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by_study_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["closed_by_study_id"],
            ["studies.id"],
            name=op.f("fk_followups_closed_by_study_id_studies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_followups_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospitals.id"], name=op.f("fk_followups_hospital_id_hospitals")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_followups_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name=op.f("fk_followups_referral_id_referrals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followups")),
    )
    with op.batch_alter_table("followups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_followups_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_followups_hospital_id"), ["hospital_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_followups_patient_id"), ["patient_id"], unique=False)

    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("referral_id", sa.Integer(), nullable=True),
        sa.Column("study_id", sa.String(length=36), nullable=True),
        sa.Column("review_id", sa.Integer(), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "malignant",
                "benign",
                "no_cancer_12_months",
                name="outcomekind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("site", sa.String(length=200), nullable=False),
        sa.Column("histology", sa.String(length=200), nullable=False),
        sa.Column("cancer_stage", sa.String(length=32), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_outcomes_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"], ["users.id"], name=op.f("fk_outcomes_recorded_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name=op.f("fk_outcomes_referral_id_referrals")
        ),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["reviews.id"],
            name=op.f("fk_outcomes_review_id_reviews"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_outcomes_study_id_studies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
    )
    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outcomes_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_outcomes_referral_id"), ["referral_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_outcomes_study_id"), ["study_id"], unique=False)

    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "stage",
                sa.Enum(
                    "requested",
                    "scheduled",
                    "seen",
                    "diagnosed",
                    "returned",
                    "acknowledged",
                    "closed",
                    "lost",
                    name="referralstage",
                    native_enum=False,
                    length=32,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("owner_hospital_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("appointment_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("diagnosed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("return_plan", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lost_by_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_referrals_due_at"), ["due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_referrals_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_referrals_stage"), ["stage"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_referrals_lost_by_id_users"), "users", ["lost_by_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_referrals_owner_hospital_id_hospitals"),
            "hospitals",
            ["owner_hospital_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_referrals_patient_id_patients"), "patients", ["patient_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_referrals_patient_id_patients"), type_="foreignkey")
        batch_op.drop_constraint(
            batch_op.f("fk_referrals_owner_hospital_id_hospitals"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("fk_referrals_lost_by_id_users"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_referrals_stage"))
        batch_op.drop_index(batch_op.f("ix_referrals_patient_id"))
        batch_op.drop_index(batch_op.f("ix_referrals_due_at"))
        batch_op.drop_column("lost_by_id")
        batch_op.drop_column("lost_at")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("acknowledged_at")
        batch_op.drop_column("return_plan")
        batch_op.drop_column("returned_at")
        batch_op.drop_column("diagnosed_at")
        batch_op.drop_column("seen_at")
        batch_op.drop_column("scheduled_at")
        batch_op.drop_column("appointment_at")
        batch_op.drop_column("escalated_at")
        batch_op.drop_column("due_at")
        batch_op.drop_column("owner_hospital_id")
        batch_op.drop_column("stage")
        batch_op.drop_column("patient_id")

    with op.batch_alter_table("outcomes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outcomes_study_id"))
        batch_op.drop_index(batch_op.f("ix_outcomes_referral_id"))
        batch_op.drop_index(batch_op.f("ix_outcomes_patient_id"))

    op.drop_table("outcomes")
    with op.batch_alter_table("followups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_followups_patient_id"))
        batch_op.drop_index(batch_op.f("ix_followups_hospital_id"))
        batch_op.drop_index(batch_op.f("ix_followups_due_at"))

    op.drop_table("followups")
    with op.batch_alter_table("patient_studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_studies_patient_id"))

    op.drop_table("patient_studies")
    with op.batch_alter_table("referral_licences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_referral_licences_user_id"))

    op.drop_table("referral_licences")
    op.drop_table("patients")
