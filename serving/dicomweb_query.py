"""QIDO-RS (PS3.18 10.6): search a caller's studies, series and instances.

Matching follows PS3.4 C.2.2.2: single value (case-insensitive for person names), wildcards
``*`` and ``?``, UID lists (``StudyInstanceUID=1.2,1.3``), date/time ranges
(``StudyDate=20260101-20261231``, ``-20261231``, ``20260101-``), and an empty value asks for
the attribute back without matching on it. The study keys held as columns (PatientID,
PatientName, StudyDate, AccessionNumber, ModalitiesInStudy, the UIDs) are matched in SQL;
any other attribute is matched on the stored header of the study's, series' or instance's
first instance (:mod:`oncotriage.serving.dicomweb_index`), never on the images.

Answers are DICOM JSON (PS3.18 F); attributes per level are PS3.18 Table 10.6.3-3/4/5.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Instance, Series, Study
from oncotriage.serving.dicomweb_index import instance_header
from oncotriage.serving.storage import ContentStore


class QueryError(ValueError):
    """A query the service cannot answer; the message says why (a 400)."""


class QueryLevel(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


_RANK = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}

#: Attributes answered by default (PS3.18 Tables 10.6.3-3, -4 and -5), with those viewers read.
DEFAULT_FIELDS: dict[QueryLevel, tuple[str, ...]] = {
    QueryLevel.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    QueryLevel.SERIES: (
        "Modality",
        "TimezoneOffsetFromUTC",
        "SeriesDescription",
        "RetrieveURL",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "BodyPartExamined",
    ),
    QueryLevel.INSTANCE: (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}

#: Keys that belong to a lower level than a search of studies (or series) answers: matching
#: on them there is a 400 that names the right key.
_LEVEL_OF_KEY: dict[str, QueryLevel] = {
    "Modality": QueryLevel.SERIES,
    "SeriesInstanceUID": QueryLevel.SERIES,
    "SeriesNumber": QueryLevel.SERIES,
    "SeriesDescription": QueryLevel.SERIES,
    "SOPInstanceUID": QueryLevel.INSTANCE,
    "SOPClassUID": QueryLevel.INSTANCE,
    "InstanceNumber": QueryLevel.INSTANCE,
}

#: Attributes the service computes (not in any one header).
_COMPUTED = {
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
    "RetrieveURL",
    "InstanceAvailability",
}
#: Query parameters that are not attributes (PS3.18 8.3.4).
CONTROL_PARAMETERS = {"limit", "offset", "fuzzymatching", "includefield"}
_RANGE_VRS = {"DA", "TM", "DT"}
#: Longest matching value taken (a UID list of about 60 UIDs).
MAX_VALUE_CHARS = 4096


@dataclass(frozen=True)
class Attribute:
    """A DICOM attribute named in a query: its tag (8 hex digits), keyword and VR."""

    tag: str
    keyword: str
    vr: str

    @classmethod
    def parse(cls, name: str) -> Attribute:
        """``PatientName`` or ``00100010`` -> the attribute; :class:`QueryError` otherwise."""
        if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
            number = int(name, 16)
            keyword = keyword_for_tag(number)
        else:
            tag = tag_for_keyword(name)
            if tag is None:
                raise QueryError(
                    f"unknown query key {name[:64]!r}: use a DICOM keyword (e.g. PatientID, "
                    "StudyDate) or a tag of 8 hex digits (e.g. 00100020)"
                )
            number, keyword = tag, name
        try:
            vr = dictionary_VR(number)
        except KeyError:
            raise QueryError(f"unknown DICOM tag {name}") from None
        return cls(tag=f"{number:08X}", keyword=keyword or f"{number:08X}", vr=vr)


@dataclass(frozen=True)
class Match:
    """One matching key and its value (PS3.4 C.2.2.2)."""

    attribute: Attribute
    value: str

    @property
    def is_universal(self) -> bool:
        return self.value in ("", "*")

    def matches(self, element: Mapping[str, Any] | None) -> bool:
        if self.is_universal:
            return True
        values = _values_as_text(element)
        if not values:
            return False
        vr = self.attribute.vr
        if vr == "UI":
            wanted = set(split_list(self.value))
            return any(value in wanted for value in values)
        if vr in _RANGE_VRS and "-" in self.value:
            low, high = range_bounds(self.value, vr)
            return any(_in_range(value, low, high) for value in values)
        if "*" in self.value or "?" in self.value:
            pattern = wildcard_regex(self.value, ignore_case=vr == "PN")
            return any(pattern.fullmatch(value) for value in values)
        if vr == "PN":
            return any(value.casefold() == self.value.casefold() for value in values)
        return any(value == self.value for value in values)


@dataclass
class Query:
    """A parsed QIDO-RS request at one level."""

    level: QueryLevel
    matches: list[Match] = field(default_factory=list)
    include_all: bool = False
    include: list[Attribute] = field(default_factory=list)

    def match_for(self, keyword: str) -> Match | None:
        return next((m for m in self.matches if m.attribute.keyword == keyword), None)


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def wildcard_regex(value: str, *, ignore_case: bool) -> re.Pattern[str]:
    """``*`` any run of characters, ``?`` one character; everything else literal."""
    body = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in value
    )
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def range_bounds(value: str, vr: str) -> tuple[str | None, str | None]:
    """``"a-b"`` -> ``("a", "b")``; an open side is ``None``. Dates are ``YYYYMMDD``."""
    low, _, high = value.partition("-")
    low, high = low.strip(), high.strip()
    for bound in (low, high):
        if bound and vr == "DA" and not re.fullmatch(r"\d{8}", bound):
            raise QueryError(f"date {bound[:20]!r} is not YYYYMMDD (a range is YYYYMMDD-YYYYMMDD)")
        if bound and vr == "TM" and not re.fullmatch(r"\d{2,6}(\.\d{1,6})?", bound):
            raise QueryError(f"time {bound[:20]!r} is not HHMMSS (a range is HHMMSS-HHMMSS)")
    if not low and not high:
        raise QueryError(f"the range {value[:40]!r} has neither a start nor an end")
    return low or None, high or None


def _in_range(value: str, low: str | None, high: str | None) -> bool:
    # TM values compare by their leading digits: 10 (hour 10) covers 100000 to 105959.
    if low is not None and value < low:
        return False
    return high is None or value[: len(high)] <= high


def _values_as_text(element: Mapping[str, Any] | None) -> list[str]:
    if not element:
        return []
    out = []
    for value in element.get("Value") or []:
        if isinstance(value, dict):
            if "Alphabetic" in value:
                out.append(str(value["Alphabetic"]))
        elif value is not None:
            out.append(str(value))
    return out


def parse_query(
    level: QueryLevel, parameters: list[tuple[str, str]], includefield: list[str]
) -> Query:
    """The matching keys of a request's query string (control parameters left out).

    Raises:
        QueryError: an unknown key, a key of a lower level, a malformed range, or a
            sequence key (not supported).
    """
    query = Query(level=level)
    by_tag: dict[str, Match] = {}
    for name, value in parameters:
        if name in CONTROL_PARAMETERS:
            continue
        attribute = Attribute.parse(name)
        if len(value) > MAX_VALUE_CHARS or any(ord(char) < 32 for char in value):
            raise QueryError(
                f"the value of {attribute.keyword} is over {MAX_VALUE_CHARS} characters or "
                "holds control characters"
            )
        key_level = _LEVEL_OF_KEY.get(attribute.keyword)
        if key_level is not None and _RANK[key_level] > _RANK[level]:
            hint = " (use ModalitiesInStudy)" if attribute.keyword == "Modality" else ""
            raise QueryError(
                f"{attribute.keyword} is a {key_level.value} attribute; a search of "
                f"{level.value} records cannot match on it{hint}"
            )
        if attribute.vr == "SQ":
            raise QueryError(f"matching on the sequence {attribute.keyword} is not supported")
        if attribute.vr in _RANGE_VRS and "-" in value:
            range_bounds(value, attribute.vr)  # refuse a malformed range now
        previous = by_tag.get(attribute.tag)
        if previous is not None and attribute.vr == "UI":
            value = f"{previous.value},{value}"  # repeated UID keys are one list
        by_tag[attribute.tag] = Match(attribute, value)
    query.matches = list(by_tag.values())
    for item in includefield:
        for name in split_list(item):
            if name == "all":
                query.include_all = True
            else:
                query.include.append(Attribute.parse(name))
    return query


# --- SQL side -----------------------------------------------------------------------------

_STUDY_COLUMN = {
    "PatientID": Study.patient_id,
    "PatientName": Study.patient_name,
    "StudyDate": Study.study_date,
    "AccessionNumber": Study.accession_number,
    "StudyInstanceUID": Study.study_instance_uid,
}


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _column_clause(column: Any, match: Match) -> sa.ColumnElement[bool]:
    value, vr = match.value, match.attribute.vr
    if vr == "UI":
        return column.in_(split_list(value))
    if vr in _RANGE_VRS and "-" in value:
        low, high = range_bounds(value, vr)
        clauses = []
        if low is not None:
            clauses.append(column >= low)
        if high is not None:
            clauses.append(column <= high)
        return sa.and_(*clauses)
    if "*" in value or "?" in value:
        pattern = _like_pattern(value)
        if vr == "PN":
            return column.ilike(pattern, escape="\\")
        return column.like(pattern, escape="\\")
    if vr == "PN":
        return sa.func.lower(column) == value.lower()
    return column == value


def sql_conditions(query: Query) -> tuple[list[sa.ColumnElement[bool]], list[Match]]:
    """The query's keys as SQL conditions, and the keys left to match on the headers."""
    conditions: list[sa.ColumnElement[bool]] = []
    remaining: list[Match] = []
    for match in query.matches:
        keyword = match.attribute.keyword
        if match.is_universal:
            continue
        if keyword in _STUDY_COLUMN:
            conditions.append(_column_clause(_STUDY_COLUMN[keyword], match))
        elif keyword == "ModalitiesInStudy":
            modalities = split_list(match.value)
            conditions.append(
                sa.exists().where(Series.study_id == Study.id, Series.modality.in_(modalities))
            )
        elif keyword == "SeriesInstanceUID":
            conditions.append(_column_clause(Series.series_instance_uid, match))
        elif keyword == "Modality" and "*" not in match.value and "?" not in match.value:
            conditions.append(Series.modality.in_(split_list(match.value)))
        elif keyword == "SOPInstanceUID":
            conditions.append(_column_clause(Instance.sop_instance_uid, match))
        elif keyword == "SOPClassUID":
            conditions.append(_column_clause(Instance.sop_class_uid, match))
        else:
            remaining.append(match)
    return conditions, remaining


# --- the search ---------------------------------------------------------------------------


@dataclass
class Record:
    """One answer row before it is written as DICOM JSON."""

    study: Study
    series: Series | None
    instance: Instance | None
    header: dict[str, Any]
    computed: dict[str, dict[str, Any]]

    def element(self, attribute: Attribute) -> dict[str, Any] | None:
        return self.computed.get(attribute.tag) or self.header.get(attribute.tag)


@dataclass
class SearchResult:
    records: list[dict[str, Any]]
    truncated: bool


def search(
    session: Session,
    store: ContentStore,
    query: Query,
    *,
    scope: list[sa.ColumnElement[bool]],
    limit: int,
    offset: int,
    retrieve_root: str,
) -> SearchResult:
    """Run ``query`` within ``scope`` (visibility and path conditions); one page of answers.

    ``truncated`` is True when more matches exist past the page.
    """
    conditions, remaining = sql_conditions(query)
    statement = _statement(query.level).where(*scope, *conditions)
    matched: list[Record] = []
    if not remaining:  # the page straight from SQL
        rows = list(session.execute(statement.offset(offset).limit(limit + 1)))
        matched = _records(session, store, query.level, rows, retrieve_root)
    else:  # matched on the headers, a batch at a time, until the page is full
        skipped = 0
        for rows in _batches(session, statement, 200):
            for record in _records(session, store, query.level, rows, retrieve_root):
                if not all(m.matches(record.element(m.attribute)) for m in remaining):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                matched.append(record)
            if len(matched) > limit:
                break
    truncated = len(matched) > limit
    return SearchResult(
        records=[_to_json(record, query) for record in matched[:limit]], truncated=truncated
    )


def _statement(level: QueryLevel) -> Any:
    if level is QueryLevel.STUDY:
        return sa.select(Study).order_by(Study.received_at, Study.id)
    if level is QueryLevel.SERIES:
        return (
            sa.select(Series, Study)
            .join(Study, Study.id == Series.study_id)
            .order_by(Study.received_at, Study.id, Series.id)
        )
    return (
        sa.select(Instance, Series, Study)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Instance.study_id)
        .order_by(Study.received_at, Study.id, Series.id, Instance.id)
    )


def _batches(session: Session, statement: sa.Select[Any], size: int) -> Iterator[list[Any]]:
    start = 0
    while True:
        rows = list(session.execute(statement.offset(start).limit(size)))
        if rows:
            yield rows
        if len(rows) < size:
            return
        start += size


def _records(
    session: Session,
    store: ContentStore,
    level: QueryLevel,
    rows: list[Any],
    root: str,
) -> list[Record]:
    if level is QueryLevel.STUDY:
        studies = [row[0] for row in rows]
        firsts = _first_instances(session, Instance.study_id, [s.id for s in studies])
        counts = _study_counts(session, [s.id for s in studies])
        out = []
        for study in studies:
            series_n, instance_n, modalities = counts.get(study.id, (0, 0, []))
            computed = {
                "00080061": _cs(modalities),
                "00201206": _is(series_n),
                "00201208": _is(instance_n),
                "00081190": _ur(f"{root}/studies/{study.study_instance_uid}"),
                "00080056": _cs(["ONLINE"]),
            }
            out.append(Record(study, None, None, _header(store, firsts.get(study.id)), computed))
        return out
    if level is QueryLevel.SERIES:
        series_ids = [row[0].id for row in rows]
        firsts = _first_instances(session, Instance.series_id, series_ids)
        instance_counts: dict[int, int] = dict(
            session.execute(
                sa.select(Instance.series_id, sa.func.count())
                .where(Instance.series_id.in_(series_ids))
                .group_by(Instance.series_id)
            ).all()  # rows: a Result itself has keys() and is not read as pairs
        )
        out = []
        for series, study in rows:
            computed = {
                "00201209": _is(instance_counts.get(series.id, 0)),
                "00081190": _ur(
                    f"{root}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
                ),
                "00080056": _cs(["ONLINE"]),
            }
            out.append(Record(study, series, None, _header(store, firsts.get(series.id)), computed))
        return out
    out = []
    for instance, series, study in rows:
        computed = {
            "00081190": _ur(
                f"{root}/studies/{study.study_instance_uid}/series/"
                f"{series.series_instance_uid}/instances/{instance.sop_instance_uid}"
            ),
            "00080056": _cs(["ONLINE"]),
        }
        out.append(Record(study, series, instance, _header(store, instance), computed))
    return out


def _first_instances(session: Session, key: Any, ids: list[Any]) -> dict[Any, Instance]:
    if not ids:
        return {}
    first_ids = sa.select(sa.func.min(Instance.id)).where(key.in_(ids)).group_by(key)
    instances = session.scalars(sa.select(Instance).where(Instance.id.in_(first_ids)))
    attribute = key.key
    return {getattr(instance, attribute): instance for instance in instances}


def _study_counts(session: Session, ids: list[str]) -> dict[str, tuple[int, int, list[str]]]:
    if not ids:
        return {}
    out: dict[str, tuple[int, int, list[str]]] = {}
    rows = session.execute(
        sa.select(Series.study_id, Series.modality, sa.func.count(Instance.id))
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.study_id.in_(ids))
        .group_by(Series.study_id, Series.id, Series.modality)
    )
    for study_id, modality, instances in rows:
        series_n, instance_n, modalities = out.get(study_id, (0, 0, []))
        if modality and modality not in modalities:
            modalities = sorted([*modalities, modality])
        out[study_id] = (series_n + 1, instance_n + instances, modalities)
    return out


def _header(store: ContentStore, instance: Instance | None) -> dict[str, Any]:
    if instance is None:
        return {}
    try:
        return instance_header(store, instance)
    except Exception:  # unreadable stored file: answer from the database columns only
        return {}


def _cs(values: list[str]) -> dict[str, Any]:
    return {"vr": "CS", "Value": values} if values else {"vr": "CS"}


def _is(value: int) -> dict[str, Any]:
    return {"vr": "IS", "Value": [value]}


def _ur(value: str) -> dict[str, Any]:
    return {"vr": "UR", "Value": [value]}


def _level_tags(level: QueryLevel, query: Query) -> list[str]:
    keywords: list[str] = []
    for each in QueryLevel:
        if _RANK[each] <= _RANK[level]:
            keywords += DEFAULT_FIELDS[each]
    tags = [f"{tag_for_keyword(keyword):08X}" for keyword in keywords]
    tags += [match.attribute.tag for match in query.matches]
    tags += [attribute.tag for attribute in query.include]
    return list(dict.fromkeys(tags))


def _to_json(record: Record, query: Query) -> dict[str, Any]:
    """The record's answer: the level's default attributes, the matching keys and the
    ``includefield`` ones (``all``: every attribute of the header)."""
    tags = _level_tags(query.level, query)
    if query.include_all:
        tags = list(dict.fromkeys([*tags, *record.header]))
    out: dict[str, Any] = {}
    for tag in sorted(tags):
        element = record.computed.get(tag) or record.header.get(tag)
        if element is None:
            if tag in _DB_FALLBACK:
                element = _DB_FALLBACK[tag](record)
            if element is None:
                continue
        out[tag] = element
    return out


def _uid(value: str | None) -> dict[str, Any] | None:
    return {"vr": "UI", "Value": [value]} if value else None


_DB_FALLBACK: dict[str, Callable[[Record], dict[str, Any] | None]] = {
    "0020000D": lambda record: _uid(record.study.study_instance_uid),
    "0020000E": lambda record: _uid(record.series.series_instance_uid if record.series else None),
    "00080018": lambda record: _uid(record.instance.sop_instance_uid if record.instance else None),
    "00080016": lambda record: _uid(record.instance.sop_class_uid if record.instance else None),
}

#: keyword -> attribute, for the names the answer uses (documentation and tests).
KNOWN_COMPUTED = frozenset(_COMPUTED)
