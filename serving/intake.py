"""Intake: validate each received DICOM instance, keep the good ones, queue inference.

Used by STOW-RS (``POST /dicomweb/studies``) and by ``POST /v1/studies``. Per instance:

1. parse it (:func:`oncotriage.datasets.reader.read_dataset`), refusing non-DICOM and
   damaged files;
2. check its UIDs (before they go anywhere near the database), the Study Instance UID
   against the URL, its size against ``max_pixels`` (decompression bombs), and
   everything the reader's :func:`validate_instance` checks;
3. write the bytes to the content-addressed store;
4. in one transaction: find or create the study (unique per hospital) and series, record
   the instance (re-sending the same SOP Instance UID with the same bytes is a no-op; with
   different bytes it is refused), and queue inference: one job per radiograph or
   multi-frame object, one job per CT series (re-armed ``series_settle_s`` after its latest
   slice, so a series sent in several requests is read once it is complete).

Failures carry a STOW-RS :class:`~oncotriage.serving.dicomweb.FailureReason` and a message
the hospital can act on; good instances are kept whatever happens to the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydicom.uid import CTImageStorage
from sqlalchemy.orm import Session

from oncotriage.datasets.instance import spacing_is_estimated
from oncotriage.serving import audit, jobs
from oncotriage.serving.db.models import Instance, Job, Series, Study
from oncotriage.serving.db.session import Database
from oncotriage.serving.dicomweb import FailureReason, failure_reason_for
from oncotriage.serving.enums import AuditAction, JobState, Priority, StudyStatus
from oncotriage.serving.patients import link_study, pseudonym_of_dataset
from oncotriage.serving.security import Principal
from oncotriage.serving.settings import Settings
from oncotriage.serving.storage import ContentStore, StoreError
from oncotriage.serving.triage import refresh_study

logger = logging.getLogger(__name__)


@dataclass
class InstanceOutcome:
    """What happened to one received object.

    Attributes:
        index: position in the request (0-based).
        sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid: as read
            ("" when the object could not be parsed or the UID was invalid).
        stored: kept (newly, or already held with identical bytes).
        duplicate: it was already held (idempotent re-send).
        failure_reason: STOW-RS failure reason when not stored.
        message: why it was refused, in words.
        study_id: the service's study id, when stored.
        warning: kept, but the sender should know something (in words).
    """

    index: int
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    stored: bool = False
    duplicate: bool = False
    failure_reason: FailureReason | None = None
    message: str = ""
    study_id: str | None = None
    warning: str = ""


@dataclass
class _Candidate:
    outcome: InstanceOutcome
    modality: str
    rows: int
    columns: int
    frames: int
    is_volume: bool
    content_hash: str
    stored_path: str
    size_bytes: int
    role: str = "diagnostic"
    patient_pseudonym: str | None = None
    spacing_estimated: bool = False
    #: the header as DICOM JSON without pixel data, and the study's matching keys from it
    #: (:mod:`oncotriage.serving.dicomweb_index`)
    header_json: str | None = None
    study_keys: dict[str, str] = field(default_factory=dict)


@dataclass
class IntakeResult:
    outcomes: list[InstanceOutcome] = field(default_factory=list)

    @property
    def study_ids(self) -> list[str]:
        """Studies that received at least one instance, in order of first appearance."""
        seen: dict[str, None] = {}
        for outcome in self.outcomes:
            if outcome.stored and outcome.study_id:
                seen.setdefault(outcome.study_id, None)
        return list(seen)


def _uid(ds: Any, keyword: str) -> str:
    from oncotriage.datasets.reader import is_valid_uid

    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text if is_valid_uid(text) else ""


def _int(ds: Any, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _fail(outcome: InstanceOutcome, reason: FailureReason, message: str) -> InstanceOutcome:
    outcome.stored = False
    outcome.failure_reason = reason
    outcome.message = message
    return outcome


def _check_and_store(
    index: int,
    data: bytes,
    *,
    settings: Settings,
    store: ContentStore,
    expected_study_uid: str | None,
) -> _Candidate | InstanceOutcome:
    """Steps 1-3 of the module docstring for one object (no database). Malformed values
    met anywhere on the way (a Rows element of three bytes, a wrong VR) refuse the object
    with the reason, never fail the request."""
    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.datasets.instance import refuse_bad_values

    outcome = InstanceOutcome(index=index)
    try:
        with refuse_bad_values():
            return _check_and_store_object(
                outcome,
                data,
                settings=settings,
                store=store,
                expected_study_uid=expected_study_uid,
            )
    except UnsupportedImageError as error:
        return _fail(outcome, failure_reason_for(error.code), str(error))


def _check_and_store_object(
    outcome: InstanceOutcome,
    data: bytes,
    *,
    settings: Settings,
    store: ContentStore,
    expected_study_uid: str | None,
) -> _Candidate | InstanceOutcome:
    from oncotriage.datasets.image import UnsupportedImageError
    from oncotriage.datasets.reader import read_dataset, validate_instance

    try:
        ds = read_dataset(data)
    except UnsupportedImageError as error:
        return _fail(outcome, failure_reason_for(error.code), str(error))
    outcome.sop_class_uid = _uid(ds, "SOPClassUID")
    outcome.sop_instance_uid = _uid(ds, "SOPInstanceUID")
    outcome.study_instance_uid = _uid(ds, "StudyInstanceUID")
    outcome.series_instance_uid = _uid(ds, "SeriesInstanceUID")
    missing = [
        label
        for label, value in (
            ("SOP Class UID", outcome.sop_class_uid),
            ("SOP Instance UID", outcome.sop_instance_uid),
            ("Study Instance UID", outcome.study_instance_uid),
            ("Series Instance UID", outcome.series_instance_uid),
        )
        if not value
    ]
    if missing:
        return _fail(
            outcome,
            FailureReason.CANNOT_UNDERSTAND,
            f"missing or invalid {', '.join(missing)}; UIDs are digits and dots, at most 64 "
            "characters",
        )
    if expected_study_uid is not None and outcome.study_instance_uid != expected_study_uid:
        return _fail(
            outcome,
            FailureReason.DATASET_DOES_NOT_MATCH,
            "the instance's Study Instance UID differs from the study in the request URL",
        )
    from oncotriage.datasets.roles import SeriesRole, series_role

    role = series_role(ds)
    if role is not None and role is not SeriesRole.DIAGNOSTIC:
        # kept with the study for the record (a PACS forwards whole studies), not triaged
        return _store_candidate(
            outcome, ds, data, store, settings, role=role, rows=0, columns=0, frames=1
        )
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames = max(1, _int(ds, "NumberOfFrames", 1))
    if rows * columns * frames > settings.max_pixels:
        return _fail(
            outcome,
            FailureReason.OUT_OF_RESOURCES,
            f"image of {rows}x{columns}x{frames} pixels exceeds this service's limit of "
            f"{settings.max_pixels} pixels per object",
        )
    try:
        validate_instance(ds, field_of_view_mm=settings.estimated_chest_field_of_view_mm)
    except UnsupportedImageError as error:
        return _fail(outcome, failure_reason_for(error.code), str(error))
    return _store_candidate(
        outcome,
        ds,
        data,
        store,
        settings,
        role="diagnostic",
        rows=rows,
        columns=columns,
        frames=frames,
    )


def _store_candidate(
    outcome: InstanceOutcome,
    ds: Any,
    data: bytes,
    store: ContentStore,
    settings: Settings,
    *,
    role: str,
    rows: int,
    columns: int,
    frames: int,
) -> _Candidate | InstanceOutcome:
    """Step 3: write the bytes, and describe the instance for step 4."""
    outcome.warning = _charset_warning(ds)
    try:
        stored = store.put(data)
    except StoreError as error:
        logger.error("image store write failed: %s", error)
        return _fail(outcome, FailureReason.PROCESSING_FAILURE, "could not store the image; retry")
    header_json, study_keys = _header_index(ds)
    return _Candidate(
        outcome=outcome,
        modality=str(ds.get("Modality") or "")[:16],
        rows=rows,
        columns=columns,
        frames=frames,
        is_volume=role == "diagnostic" and outcome.sop_class_uid == CTImageStorage and frames == 1,
        content_hash=stored.content_hash,
        stored_path=stored.relative_path,
        size_bytes=stored.size_bytes,
        patient_pseudonym=pseudonym_of_dataset(settings, ds),
        role=str(role),
        spacing_estimated=role == "diagnostic"
        and spacing_is_estimated(ds, settings.estimated_chest_field_of_view_mm),
        header_json=header_json,
        study_keys=study_keys,
    )


def _header_index(ds: Any) -> tuple[str | None, dict[str, str]]:
    """The header JSON and study keys for DICOMweb queries; a header that cannot be written
    as JSON is indexed later from the stored file, never a reason to refuse the image."""
    import json

    from oncotriage.serving.dicomweb_index import header_json_of, study_keys_of

    try:
        header_json = header_json_of(ds)
    except Exception as error:
        logger.warning("header not indexed at intake: %s", error)
        return None, {}
    return header_json, study_keys_of(json.loads(header_json))


def _charset_warning(ds: Any) -> str:
    """Words for the sender when the Specific Character Set names terms DICOM does not
    define (e.g. ``NOT_A_CHARSET``): the instance is kept as sent, its text read as the
    default repertoire, and reports are written in UTF-8."""
    from pydicom.charset import python_encoding

    terms = ds.get("SpecificCharacterSet")
    values = [terms] if isinstance(terms, str) else list(terms or [])
    unknown = [str(term) for term in values if str(term).strip() not in python_encoding]
    if not unknown:
        return ""
    return (
        f"unknown Specific Character Set {', '.join(unknown)[:60]}: kept, its text read as "
        "the default character set (names may show wrongly)"
    )


_insert_statements: dict[tuple[type[Any], str, tuple[str, ...]], Any] = {}


def _insert_new(
    session: Session, model: type[Any], values: dict[str, Any], conflict: Sequence[str]
) -> Any | None:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the new row as an ORM object, or
    ``None`` when a row with the same ``conflict`` key already exists.

    Concurrent requests for the same study (PostgreSQL) then agree on one row, and the
    common case (a new row) costs one statement. The statement is built once per model and
    set of columns and bound to ``values`` each time.
    """
    dialect = session.get_bind().dialect.name
    key = (model, dialect, tuple(values))
    statement = _insert_statements.get(key)
    if statement is None:
        insert: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - other databases are not supported
            raise RuntimeError(f"unsupported database {dialect}; use PostgreSQL or SQLite")
        columns = model.__table__.c
        statement = _insert_statements.setdefault(
            key,
            insert(model)
            .values({name: sa.bindparam(f"{name}_", type_=columns[name].type) for name in values})
            .on_conflict_do_nothing(index_elements=list(conflict))
            .returning(model),
        )
    parameters = {f"{name}_": value for name, value in values.items()}
    return session.scalars(statement, parameters).first()


def _study_for(
    session: Session, principal: Principal, study_uid: str, candidate: _Candidate, now: datetime
) -> tuple[Study, bool]:
    assert principal.hospital_id is not None
    keys = candidate.study_keys or {}
    study = _insert_new(
        session,
        Study,
        {
            "hospital_id": principal.hospital_id,
            "study_instance_uid": study_uid,
            "modality": candidate.modality,
            "received_at": now,
            "updated_at": now,
            # NULL (index later from the stored header) when the header was not indexed
            "patient_id": keys.get("patient_id"),
            "patient_name": keys.get("patient_name"),
            "study_date": keys.get("study_date"),
            "accession_number": keys.get("accession_number"),
        },
        ["hospital_id", "study_instance_uid"],
    )
    if study is not None:
        return study, True
    study = session.scalar(
        sa.select(Study).where(
            Study.hospital_id == principal.hospital_id, Study.study_instance_uid == study_uid
        )
    )
    assert study is not None
    return study, False


def _series_for(session: Session, study: Study, candidate: _Candidate, now: datetime) -> Series:
    uid = candidate.outcome.series_instance_uid
    series = _insert_new(
        session,
        Series,
        {
            "study_id": study.id,
            "series_instance_uid": uid,
            "modality": candidate.modality,
            "is_volume": candidate.is_volume,
            "role": candidate.role,
            "spacing_estimated": candidate.spacing_estimated,
            "created_at": now,
            "updated_at": now,
        },
        ["study_id", "series_instance_uid"],
    )
    if series is None:
        series = session.scalar(
            sa.select(Series).where(Series.study_id == study.id, Series.series_instance_uid == uid)
        )
        assert series is not None
    return series


def _queue_jobs(
    session: Session,
    settings: Settings,
    study: Study,
    series: Series,
    instance: Instance,
    now: datetime,
    series_jobs: dict[int, Job],
) -> float:
    """Queue the instance's inference; returns in how many seconds the job is due.

    ``series_jobs`` holds the waiting job of each volume series this request touched, so
    a series of many slices looks its job up once.
    """
    if not (series.is_volume and instance.frames == 1):
        session.add(
            Job(
                study_id=study.id,
                series_id=series.id,
                instance_id=instance.id,
                max_attempts=settings.job_max_attempts,
                next_attempt_at=now,
                created_at=now,
            )
        )
        return 0.0
    due = now + timedelta(seconds=settings.series_settle_s)
    pending = series_jobs.get(series.id) or session.scalar(
        sa.select(Job).where(
            Job.series_id == series.id,
            Job.instance_id.is_(None),
            Job.state == JobState.QUEUED,
            Job.attempts == 0,
        )
    )
    if pending is not None:
        pending.next_attempt_at = max(pending.next_attempt_at, due)
        series_jobs[series.id] = pending
        return settings.series_settle_s
    job = Job(
        study_id=study.id,
        series_id=series.id,
        instance_id=None,
        max_attempts=settings.job_max_attempts,
        next_attempt_at=due,
        created_at=now,
    )
    session.add(job)
    series_jobs[series.id] = job
    return settings.series_settle_s


def _requeue_failed(
    session: Session,
    settings: Settings,
    study: Study,
    instance: Instance,
    now: datetime,
    series_jobs: dict[int, Job],
) -> bool:
    """Queue ``instance``'s inference again when its last job failed for good; False when
    it has a job waiting or running, or one that succeeded."""
    latest = session.scalar(
        sa.select(Job)
        .where(
            Job.series_id == instance.series_id,
            sa.or_(Job.instance_id == instance.id, Job.instance_id.is_(None)),
        )
        .order_by(Job.id.desc())
        .limit(1)
    )
    if latest is None or latest.state is not JobState.FAILED:
        return False
    latest.state = JobState.SUPERSEDED  # the new job's result replaces its failure
    series = session.get(Series, instance.series_id)
    assert series is not None
    _queue_jobs(session, settings, study, series, instance, now, series_jobs)
    return True


def _held_instances(
    session: Session, hospital_id: int, candidates: Sequence[_Candidate], chunk: int = 500
) -> dict[str, Instance]:
    """The instances this hospital already sent among ``candidates``, by SOP Instance UID
    (one query per ``chunk`` objects rather than one per object)."""
    uids = [candidate.outcome.sop_instance_uid for candidate in candidates]
    held: dict[str, Instance] = {}
    for first in range(0, len(uids), chunk):
        rows = session.scalars(
            _HELD_INSTANCES, {"hospital_id": hospital_id, "uids": uids[first : first + chunk]}
        )
        held.update((row.sop_instance_uid, row) for row in rows)
    return held


_HELD_INSTANCES = sa.select(Instance).where(
    Instance.hospital_id == sa.bindparam("hospital_id", type_=sa.Integer()),
    Instance.sop_instance_uid.in_(sa.bindparam("uids", expanding=True)),
)


def _record(
    session: Session,
    settings: Settings,
    principal: Principal,
    candidates: list[_Candidate],
    now: datetime,
) -> set[float]:
    """Step 4 of the module docstring: one transaction for the whole request.

    Returns:
        in how many seconds the jobs it queued are due (empty when it queued none).
    """
    assert principal.hospital_id is not None
    touched: dict[str, Study] = {}
    due_in_s: set[float] = set()
    # Rows this request already found or made: a CT series' slices share them.
    studies: dict[str, Study] = {}
    series_rows: dict[tuple[str, str], Series] = {}
    series_jobs: dict[int, Job] = {}
    held = _held_instances(session, principal.hospital_id, candidates)
    created: dict[str, Study] = {}
    pseudonyms: dict[str, str | None] = {}
    for candidate in candidates:
        outcome = candidate.outcome
        study = studies.get(outcome.study_instance_uid)
        if study is None:
            study, new = _study_for(session, principal, outcome.study_instance_uid, candidate, now)
            studies[outcome.study_instance_uid] = study
            if new:
                created[study.id] = study
                pseudonyms[study.id] = candidate.patient_pseudonym
        existing = held.get(outcome.sop_instance_uid)
        if existing is None:
            series_key = (study.id, outcome.series_instance_uid)
            series = series_rows.get(series_key)
            if series is None:
                series = series_rows[series_key] = _series_for(session, study, candidate, now)
            instance = _insert_new(
                session,
                Instance,
                {
                    "hospital_id": principal.hospital_id,
                    "study_id": study.id,
                    "series_id": series.id,
                    "sop_instance_uid": outcome.sop_instance_uid,
                    "sop_class_uid": outcome.sop_class_uid,
                    "content_hash": candidate.content_hash,
                    "stored_path": candidate.stored_path,
                    "size_bytes": candidate.size_bytes,
                    "rows": candidate.rows,
                    "columns": candidate.columns,
                    "frames": candidate.frames,
                    "received_at": now,
                    "header_json": candidate.header_json,
                },
                ["hospital_id", "sop_instance_uid"],
            )
            inserted = instance is not None
            if instance is None:  # another request stored it a moment ago
                instance = session.scalar(
                    sa.select(Instance).where(
                        Instance.hospital_id == principal.hospital_id,
                        Instance.sop_instance_uid == outcome.sop_instance_uid,
                    )
                )
            assert instance is not None
            if instance.content_hash == candidate.content_hash and instance.study_id == study.id:
                if inserted and series.role == "diagnostic":
                    due_in_s.add(
                        _queue_jobs(session, settings, study, series, instance, now, series_jobs)
                    )
                    study.queued_at = now
                    touched[study.id] = study
                outcome.stored, outcome.study_id = True, study.id
                continue
            existing = instance
        if existing.study_id != study.id:
            _fail(
                outcome,
                FailureReason.DUPLICATE_SOP_INSTANCE,
                "this SOP Instance UID was already received in another study",
            )
            continue
        # The same SOP Instance UID is the same image (a changed image must get a new UID),
        # even when a sender re-encodes it: the first copy is kept and the re-send succeeds.
        if existing.content_hash != candidate.content_hash:
            logger.info(
                "re-sent instance differs in encoding; the first copy is kept",
                extra={"fields": {"instance_id": existing.id}},
            )
            outcome.warning = (
                "this SOP Instance UID was received before with different bytes; the first "
                "copy is kept (a changed image needs a new SOP Instance UID)"
            )
        outcome.stored, outcome.duplicate, outcome.study_id = True, True, study.id
        if study.status is StudyStatus.FAILED and _requeue_failed(
            session, settings, study, existing, now, series_jobs
        ):
            # a hospital re-sending a study that failed gets it read again
            due_in_s.add(0.0)
            study.queued_at = now
            touched[study.id] = study
    kept = {candidate.outcome.study_id for candidate in candidates if candidate.outcome.stored}
    for study in created.values():
        if study.id in kept:
            audit.record(session, principal, AuditAction.STUDY_CREATED, study_id=study.id)
            # its patient, across the union (answers the patient's open follow-ups)
            link_study(session, study, pseudonyms.get(study.id), now=now)
        else:
            # Every instance of this new study was refused (e.g. its SOP Instance UID is
            # held in another study): no study row without an accepted instance.
            session.execute(sa.delete(Series).where(Series.study_id == study.id))
            session.execute(sa.delete(Study).where(Study.id == study.id))
    session.flush()
    for study in touched.values():
        refresh_study(session, study, now=now)
    for study in studies.values():
        if study.id in kept and study.id not in touched:
            _nothing_to_triage(session, study, now)
    return due_in_s


def _nothing_to_triage(session: Session, study: Study, now: datetime) -> None:
    """A study that holds only objects kept for the record (an SR, a dose report) has no
    image to triage: it goes to a person with the reason, never waits unseen. Its images,
    when they come, are triaged as usual (the study's status then follows their jobs)."""
    if session.scalar(sa.select(Job.id).where(Job.study_id == study.id).limit(1)) is not None:
        return
    roles = sorted(set(session.scalars(sa.select(Series.role).where(Series.study_id == study.id))))
    study.status = StudyStatus.FAILED
    study.priority = Priority.NEEDS_MANUAL_REVIEW
    study.suspicion_score = None
    study.failure_reason = (
        "nothing to triage: the study holds only "
        f"{', '.join(role.replace('_', ' ') for role in roles)} objects, no CT, radiograph or "
        "mammogram"
    )
    if study.triaged_at is None:
        study.triaged_at = now
        study.time_to_triage_s = max(0.0, (now - study.received_at).total_seconds())


def ingest(
    db: Database,
    store: ContentStore,
    settings: Settings,
    principal: Principal,
    payloads: Sequence[bytes],
    *,
    expected_study_uid: str | None = None,
    declared_types: Sequence[str] | None = None,
    now: datetime,
) -> IntakeResult:
    """Take in the objects of one request for the hospital ``principal`` acts for.

    Args:
        payloads: DICOM Part 10 files, in request order.
        expected_study_uid: the Study Instance UID from the URL, when the request named one.
        declared_types: each object's declared media type ("" when none); an object declared
            as anything but ``application/dicom`` is refused unread.
        now: the request time (recorded as arrival time).
    """
    if principal.hospital_id is None or not principal.is_hospital:
        raise PermissionError("only a hospital's token can submit studies")
    result = IntakeResult()
    candidates: list[_Candidate] = []
    first_copy: dict[str, _Candidate] = {}
    for index in range(len(payloads)):
        declared = declared_types[index] if declared_types is not None else ""
        if declared not in ("", "application/dicom"):
            result.outcomes.append(
                _fail(
                    InstanceOutcome(index=index),
                    FailureReason.CANNOT_UNDERSTAND,
                    f"part {index + 1} is declared {declared[:60]}, not application/dicom: "
                    "send DICOM Part 10 files",
                )
            )
            continue
        data = payloads[index]
        checked = _check_and_store(
            index, data, settings=settings, store=store, expected_study_uid=expected_study_uid
        )
        if isinstance(checked, InstanceOutcome):
            result.outcomes.append(checked)
            continue
        uid = checked.outcome.sop_instance_uid
        earlier = first_copy.get(uid)
        if earlier is not None:  # the same SOP Instance UID twice in one request
            if earlier.outcome.study_instance_uid == checked.outcome.study_instance_uid:
                checked.outcome.duplicate = True
                result.outcomes.append(checked.outcome)
                continue
            result.outcomes.append(
                _fail(
                    checked.outcome,
                    FailureReason.DUPLICATE_SOP_INSTANCE,
                    "the same SOP Instance UID in two studies of one request",
                )
            )
            continue
        first_copy[uid] = checked
        candidates.append(checked)
        result.outcomes.append(checked.outcome)
    if candidates:
        with db.session() as session:
            due_in_s = _record(session, settings, principal, candidates, now)
        for delay in sorted(due_in_s):  # wake this process's idle workers (committed now)
            jobs.work_signal.notify(delay)
    # Copies inside the request share their first copy's fate.
    for outcome in result.outcomes:
        if outcome.duplicate and outcome.failure_reason is None and outcome.study_id is None:
            first = first_copy[outcome.sop_instance_uid].outcome
            outcome.stored, outcome.study_id = first.stored, first.study_id
            outcome.failure_reason, outcome.message = first.failure_reason, first.message
    stored = sum(1 for outcome in result.outcomes if outcome.stored)
    logger.info(
        "intake: %d of %d objects kept",
        stored,
        len(result.outcomes),
        extra={
            "fields": {
                "hospital_id": principal.hospital_id,
                "stored": stored,
                "failed": len(result.outcomes) - stored,
            }
        },
    )
    return result


def settle_series(
    db: Database,
    settings: Settings,
    series_keys: Sequence[tuple[str, str]],
    *,
    now: datetime,
) -> int:
    """A sender says its CT series are complete (a DICOM association ended): their waiting
    jobs fall due ``series_settle_s`` from ``now`` instead of later.

    The listener ingests each slice with a longer settle (its association's idle timeout),
    so a modality sending slices seconds apart never has a series read before its last
    slice; this brings the read forward once the association is released.

    Args:
        series_keys: ``(study id, Series Instance UID)`` of the series sent.

    Returns:
        how many jobs were brought forward.
    """
    if not series_keys:
        return 0
    due = now + timedelta(seconds=settings.series_settle_s)
    moved = 0
    with db.session() as session:
        for study_id, series_uid in sorted(set(series_keys)):
            for job in session.scalars(
                sa.select(Job)
                .join(Series, Series.id == Job.series_id)
                .where(
                    Job.study_id == study_id,
                    Series.series_instance_uid == series_uid,
                    Job.instance_id.is_(None),
                    Job.state == JobState.QUEUED,
                    Job.attempts == 0,
                    Job.next_attempt_at > due,
                )
            ):
                job.next_attempt_at = due
                moved += 1
    if moved:
        jobs.work_signal.notify(settings.series_settle_s)
    return moved
