"""What DICOMweb queries read instead of the images: each instance's header as DICOM JSON
(PS3.18 F) without its pixel data, and a study's matching keys as columns.

Both are written at intake (:func:`header_json_of`, :func:`study_keys_of`). Rows stored
before they existed hold NULL and are indexed from the stored file's header (never its pixel
data) the first time a query reaches them (:func:`index_unindexed`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from sqlalchemy.orm import Session

from oncotriage.serving.db.models import Instance, Study
from oncotriage.serving.storage import ContentStore

logger = logging.getLogger(__name__)

#: Elements never kept in the header: pixel data of every kind and icon images.
_BULK_TAGS = frozenset(
    Tag(tag)
    for tag in (
        0x7FE00010,  # Pixel Data
        0x7FE00008,  # Float Pixel Data
        0x7FE00009,  # Double Float Pixel Data
        0x00880200,  # Icon Image Sequence
        0x00282000,  # ICC Profile
    )
)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Binary values larger than this are left out of the header (overlays, waveforms).
MAX_INLINE_BINARY_BYTES = 1024

PIXEL_DATA_TAG = "7FE00010"


def header_dataset(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` without pixel data and large binary values."""
    header = Dataset()
    for element in ds:
        if element.tag in _BULK_TAGS:
            continue
        if element.VR in _BINARY_VRS and len(element.value or b"") > MAX_INLINE_BINARY_BYTES:
            continue
        header.add(element)
    return header


def header_json_of(ds: Dataset) -> str:
    """The header of ``ds`` as DICOM JSON text (no pixel data; bad values left out)."""
    header = header_dataset(ds)
    as_json = header.to_json_dict(
        bulk_data_threshold=MAX_INLINE_BINARY_BYTES,
        bulk_data_element_handler=lambda _element: "",
        suppress_invalid_tags=True,
    )
    return json.dumps(as_json, separators=(",", ":"))


def json_text(header: dict[str, Any], tag: str) -> str:
    """The first value of ``tag`` (8 hex digits) as text: a PN's alphabetic group, ``""``
    when absent."""
    values = header.get(tag, {}).get("Value") or []
    if not values:
        return ""
    value = values[0]
    if isinstance(value, dict):
        return str(value.get("Alphabetic", ""))
    return str(value)


def study_keys_of(header: dict[str, Any]) -> dict[str, str]:
    """The study's matching keys (the :class:`Study` columns) from one instance's header."""
    return {
        "patient_id": json_text(header, "00100020")[:64],
        "patient_name": json_text(header, "00100010")[:324],
        "study_date": json_text(header, "00080020")[:8],
        "accession_number": json_text(header, "00080050")[:64],
    }


def instance_header(store: ContentStore, instance: Instance) -> dict[str, Any]:
    """The instance's header as DICOM JSON: the stored one, or read from the stored file's
    header (and kept on the row) for instances stored before headers were indexed."""
    if instance.header_json is not None:
        loaded: dict[str, Any] = json.loads(instance.header_json)
        return loaded
    from oncotriage.datasets.instance import read_dataset

    with store.open(instance.stored_path) as stream:
        ds = read_dataset(stream, stop_before_pixels=True)  # type: ignore[arg-type]
    instance.header_json = header_json_of(ds)
    loaded = json.loads(instance.header_json)
    return loaded


def index_unindexed(
    session: Session, store: ContentStore, visible: sa.ColumnElement[bool], *, batch: int = 200
) -> int:
    """Index the visible studies (and their instances) stored before this index existed.

    Args:
        visible: a WHERE clause on :class:`Study` (the caller's visibility).

    Returns:
        how many studies were indexed (0 once everything is).
    """
    indexed = 0
    while True:
        studies = list(
            session.scalars(
                sa.select(Study).where(visible, Study.patient_name.is_(None)).limit(batch)
            )
        )
        if not studies:
            return indexed
        for study in studies:
            _index_study(session, store, study)
        session.commit()
        indexed += len(studies)


def _index_study(session: Session, store: ContentStore, study: Study) -> None:
    instances: Iterable[Instance] = session.scalars(
        sa.select(Instance).where(Instance.study_id == study.id).order_by(Instance.id)
    )
    keys: dict[str, str] | None = None
    for instance in instances:
        try:
            header = instance_header(store, instance)
        except Exception as error:  # an unreadable stored file must not fail every query
            logger.warning(
                "stored instance header unreadable: %s",
                error,
                extra={"fields": {"instance_id": instance.id}},
            )
            continue
        if keys is None:
            keys = study_keys_of(header)
    for name, value in (keys or study_keys_of({})).items():
        setattr(study, name, value)
