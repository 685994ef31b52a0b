"""Enumerations of the service whose values are the strings on the wire and in the database."""

from __future__ import annotations

from enum import StrEnum


class HospitalKind(StrEnum):
    COMMUNITY = "community"
    CENTRE = "centre"


class Role(StrEnum):
    """What a user is; hospitals authenticate as themselves (machine tokens), not as users."""

    SPECIALIST = "specialist"
    ADMIN = "admin"
    #: A person at a community hospital: sees that hospital's studies and referrals, and
    #: (licensed) requests a referral of one of them up to the centre.
    COMMUNITY_DOCTOR = "community_doctor"


class PrincipalKind(StrEnum):
    """Who calls: a hospital's system (machine token) or a user (specialist or administrator)."""

    HOSPITAL = "hospital"
    USER = "user"


class ClaimOutcome(StrEnum):
    """How a specialist's claim on a study ended (``claims.outcome``)."""

    EXPIRED = "expired"
    RELEASED = "released"
    DECIDED = "decided"


class StudyStatus(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    TRIAGED = "triaged"
    FAILED = "failed"


class Priority(StrEnum):
    URGENT = "urgent"
    SUSPICIOUS = "suspicious"
    ROUTINE = "routine"
    NEEDS_MANUAL_REVIEW = "needs_manual_review"

    @property
    def rank(self) -> int:
        """Worklist order: lower comes first.

        A study whose inference failed is not known to be benign, so it sits above the
        routine studies; a model flag is acted on before it.
        """
        return _PRIORITY_RANK[self]

    @property
    def flagged(self) -> bool:
        """Whether a study of this priority belongs on a specialist's worklist."""
        return self is not Priority.ROUTINE


_PRIORITY_RANK = {
    Priority.URGENT: 0,
    Priority.SUSPICIOUS: 1,
    Priority.NEEDS_MANUAL_REVIEW: 2,
    Priority.ROUTINE: 3,
}


class ReviewStatus(StrEnum):
    """Where a study stands with the specialists."""

    PENDING = "pending"
    DECIDED = "decided"


class SeriesStatus(StrEnum):
    """A series' place in triage, as the study's result shows it (from its latest jobs)."""

    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    #: kept for the record (localizer, dose report, SR ...), not a diagnostic series
    NOT_TRIAGED = "not_triaged"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class Decision(StrEnum):
    REFER = "refer"
    RETURN = "return"
    MORE_IMAGING = "more_imaging"


class ReferralStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    CLOSED = "closed"


class ReferralStage(StrEnum):
    """Where a referral stands: up to the centre, then (optionally) back down.

    ``requested`` -> ``scheduled`` -> ``seen`` -> ``diagnosed`` -> ``returned`` ->
    ``acknowledged`` -> ``closed``; ``diagnosed`` may also be closed directly, and any open
    stage may end as ``lost`` (lost to follow-up, with who marked it).
    """

    REQUESTED = "requested"
    SCHEDULED = "scheduled"
    SEEN = "seen"
    DIAGNOSED = "diagnosed"
    RETURNED = "returned"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"
    LOST = "lost"

    @property
    def is_open(self) -> bool:
        return self not in (ReferralStage.CLOSED, ReferralStage.LOST)


class LungRads(StrEnum):
    """Lung-RADS-style category recorded with a surveillance decision."""

    CAT_1 = "1"
    CAT_2 = "2"
    CAT_3 = "3"
    CAT_4A = "4A"
    CAT_4B = "4B"
    CAT_4X = "4X"


class OutcomeKind(StrEnum):
    MALIGNANT = "malignant"
    BENIGN = "benign"
    NO_CANCER_12_MONTHS = "no_cancer_12_months"


class WebhookEvent(StrEnum):
    STUDY_STATUS = "study.status"
    STUDY_DECISION = "study.decision"
    REFERRAL_OVERDUE = "referral.overdue"
    #: not a webhook: the study's DICOM SR pushed to the hospital's PACS (same outbox)
    RESULT_SR = "result.sr"


class AuditAction(StrEnum):
    STUDY_READ = "study.read"
    STUDY_RESULT_READ = "study.result.read"
    STUDY_REPORT_READ = "study.report.read"
    STUDY_RENDER_READ = "study.render.read"
    STUDY_CREATED = "study.created"
    CLAIM = "study.claim"
    RELEASE = "study.release"
    REVIEW = "study.review"
    WORKLIST_READ = "worklist.read"
    TOKEN_ISSUED = "token.issued"
    REFERRAL_STEP = "referral.step"
    OUTCOME_RECORDED = "outcome.recorded"
    FOLLOWUP_SET = "followup.set"
    FOLLOWUP_CLOSED = "followup.closed"
    LICENCE_GRANTED = "licence.granted"
    TIMELINE_READ = "patient.timeline.read"
    MODEL_PROMOTED = "model.promoted"
    DRIFT_ALARM = "monitoring.alarm"
    DRIFT_ALARM_ACTION = "monitoring.alarm.action"


class AlarmAction(StrEnum):
    """What a drift alarm does to its hospital's studies (docs/monitoring.md)."""

    WARN = "warn"  # a banner on the worklist, an operator webhook, a metric; triage goes on
    HOLD = "hold"  # and the hospital's new studies go to people, unscored, in arrival order
