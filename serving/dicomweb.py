"""DICOMweb wire formats: ``multipart/related`` bodies and the STOW-RS response (PS3.18 10.5).

The response is a dataset with ``RetrieveURL``, ``ReferencedSOPSequence`` (stored instances)
and ``FailedSOPSequence`` (each with a ``FailureReason``), written as DICOM JSON
(PS3.18 F) or as the Native DICOM Model XML (PS3.19 A.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol
from xml.etree import ElementTree

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from oncotriage.datasets.image import RefusalCode

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
NATIVE_DICOM_MODEL_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"

#: STOW-RS Warning Reason B000 "Coercion of data elements": what the service keeps differs
#: from what was sent (PS3.18 Table 10.5.3-1).
WARNING_COERCION = 0xB000


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values used in STOW-RS responses (PS3.18 Table 10.5.3-3,
    PS3.4 Annex B)."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


#: Reader refusal codes (:class:`~oncotriage.datasets.image.UnsupportedImageError`) -> reason;
#: every :class:`~oncotriage.datasets.image.RefusalCode` is listed.
FAILURE_REASON_BY_CODE: dict[RefusalCode, FailureReason] = {
    RefusalCode.NOT_DICOM: FailureReason.CANNOT_UNDERSTAND,
    RefusalCode.CORRUPT: FailureReason.CANNOT_UNDERSTAND,
    RefusalCode.INVALID_UID: FailureReason.CANNOT_UNDERSTAND,
    RefusalCode.MODALITY: FailureReason.SOP_CLASS_NOT_SUPPORTED,
    RefusalCode.TRANSFER_SYNTAX: FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
    RefusalCode.TOO_LARGE: FailureReason.OUT_OF_RESOURCES,
    # readable DICOM that is not what this service screens, or not a whole series
    RefusalCode.NOT_FOUND: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.BODY_PART: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.NO_PIXEL_DATA: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.PHOTOMETRIC: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.VOI: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.MISSING_ATTRIBUTE: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.TOO_FEW_SLICES: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.MIXED_SERIES: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.DUPLICATE_SLICES: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.MISSING_SLICES: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.UNEVEN_SPACING: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.SERIES_GEOMETRY: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.MULTIPLE_IMAGES: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.NOT_VOLUME: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.INTERNAL: FailureReason.DATASET_DOES_NOT_MATCH,
    RefusalCode.UNSUPPORTED: FailureReason.DATASET_DOES_NOT_MATCH,
}


def failure_reason_for(code: RefusalCode) -> FailureReason:
    """The STOW-RS failure reason for a reader refusal code (default: data set mismatch)."""
    return FAILURE_REASON_BY_CODE.get(code, FailureReason.DATASET_DOES_NOT_MATCH)


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


class Buffer(Protocol):
    """What :func:`split_multipart` reads: ``bytes`` or an ``mmap``."""

    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


@dataclass(frozen=True)
class BodyPart:
    """One part of a multipart body: its headers (lower-case names) and content."""

    headers: dict[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``"multipart/related; type=\\"application/dicom\\"; boundary=x"`` ->
    ``("multipart/related", {"type": "application/dicom", "boundary": "x"})``."""
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in re.finditer(
        r';?\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', rest
    ):
        name, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
    return media_type.strip().lower(), params


@dataclass
class PartSpan:
    """Where one part of a multipart body lies: its headers and ``body[start:end]``."""

    headers: dict[str, str]
    start: int
    end: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def split_multipart(body: Buffer, boundary: str, *, max_parts: int) -> list[PartSpan]:
    """Find the parts of a ``multipart/*`` body (RFC 2046) without copying them.

    ``body`` is anything with ``find`` and slicing: ``bytes``, or an ``mmap`` of a spooled
    upload, so a request's parts are read one at a time, never all at once.

    Raises:
        MultipartError: malformed body, or more than ``max_parts`` parts.
    """
    if not boundary or len(boundary) > 200:
        raise MultipartError("missing or invalid multipart boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    if body[: len(delimiter)] == delimiter:
        position = 0
    else:
        position = body.find(b"\r\n" + delimiter)
        if position < 0:
            raise MultipartError("the body has no part with the declared boundary")
        position += 2
    parts: list[PartSpan] = []
    while True:
        position += len(delimiter)
        if body[position : position + 2] == b"--":
            return parts
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise MultipartError("multipart body ends inside a boundary line")
        header_start = line_end + 2
        if body[header_start : header_start + 2] == b"\r\n":
            header_block, content_start = b"", header_start + 2
        else:
            header_end = body.find(b"\r\n\r\n", header_start, header_start + 16384)
            if header_end < 0:
                raise MultipartError("multipart part has no end of headers")
            header_block, content_start = body[header_start:header_end], header_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter < 0:
            raise MultipartError("multipart body is not closed by its final boundary")
        headers: dict[str, str] = {}
        for line in bytes(header_block).split(b"\r\n"):
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append(PartSpan(headers=headers, start=content_start, end=next_delimiter))
        if len(parts) > max_parts:
            raise MultipartError(f"more than {max_parts} parts in one request")
        position = next_delimiter + 2


def parse_multipart(body: bytes, boundary: str, *, max_parts: int) -> list[BodyPart]:
    """Split a ``multipart/*`` body held in memory into its parts (see
    :func:`split_multipart`).

    Raises:
        MultipartError: malformed body, or more than ``max_parts`` parts.
    """
    return [
        BodyPart(headers=span.headers, content=body[span.start : span.end])
        for span in split_multipart(body, boundary, max_parts=max_parts)
    ]


def encode_multipart(parts: list[bytes], content_type: str, boundary: str) -> bytes:
    """A ``multipart/related`` body of ``parts``, each with ``content_type``."""
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("latin-1"))
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks)


@dataclass
class StoreOutcome:
    """What happened to one instance of a STOW-RS request."""

    sop_class_uid: str
    sop_instance_uid: str
    stored: bool
    failure_reason: FailureReason | None = None
    message: str = ""
    retrieve_url: str | None = None
    warning: str = ""


@dataclass
class StoreResponse:
    """The whole STOW-RS response (see :func:`stow_status` for the HTTP status)."""

    retrieve_url: str | None
    outcomes: list[StoreOutcome] = field(default_factory=list)

    @property
    def stored(self) -> list[StoreOutcome]:
        return [outcome for outcome in self.outcomes if outcome.stored]

    @property
    def failed(self) -> list[StoreOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.stored]

    def to_dataset(self) -> Dataset:
        ds = Dataset()
        if self.retrieve_url and self.stored:
            ds.RetrieveURL = self.retrieve_url
        referenced = []
        for outcome in self.stored:
            item = Dataset()
            item.ReferencedSOPClassUID = outcome.sop_class_uid
            item.ReferencedSOPInstanceUID = outcome.sop_instance_uid
            if outcome.retrieve_url:
                item.RetrieveURL = outcome.retrieve_url
            if outcome.warning:
                # PS3.18 Table 10.5.3-1: B000, the service did not keep the data as sent
                item.WarningReason = WARNING_COERCION
            referenced.append(item)
        failed = []
        for outcome in self.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = outcome.sop_class_uid
            item.ReferencedSOPInstanceUID = outcome.sop_instance_uid
            item.FailureReason = int(outcome.failure_reason or FailureReason.PROCESSING_FAILURE)
            failed.append(item)
        if referenced:
            ds.ReferencedSOPSequence = DicomSequence(referenced)
        if failed:
            ds.FailedSOPSequence = DicomSequence(failed)
        return ds

    def http_status(self) -> int:
        """200 all stored, 202 some stored and some failed or stored with a warning, 409 none
        stored (PS3.18 10.5.3)."""
        if not self.failed:
            return 202 if any(outcome.warning for outcome in self.stored) else 200
        if self.stored:
            return 202
        return 409

    def warning_headers(self) -> list[str]:
        """``Warning: 299`` values explaining each failure in words (PS3.18 8.4.3)."""
        return [
            f'299 oncotriage "{outcome.sop_instance_uid or "unknown instance"}: '
            f'{_header_safe(outcome.message or outcome.warning)}"'
            for outcome in [*self.failed, *(o for o in self.stored if o.warning)][:20]
        ]


def _header_safe(text: str) -> str:
    cleaned = re.sub(r"[^\x20-\x7e]", " ", text).replace('"', "'")
    return cleaned[:300]


def to_dicom_json(ds: Dataset) -> dict[str, object]:
    return ds.to_json_dict()


def to_dicom_xml(ds: Dataset) -> bytes:
    """The Native DICOM Model (PS3.19 A.1) of a dataset of UI/UR/US/SQ attributes."""
    root = ElementTree.Element("NativeDicomModel", {"xmlns": NATIVE_DICOM_MODEL_NS})
    _xml_attributes(root, ds)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        root, encoding="utf-8"
    )


def _xml_attributes(parent: ElementTree.Element, ds: Dataset) -> None:
    for element in ds:
        attribute = ElementTree.SubElement(
            parent,
            "DicomAttribute",
            {"tag": f"{element.tag:08X}", "vr": str(element.VR), "keyword": element.keyword},
        )
        if element.VR == "SQ":
            for number, item in enumerate(element.value, start=1):
                item_element = ElementTree.SubElement(attribute, "Item", {"number": str(number)})
                _xml_attributes(item_element, item)
            continue
        values = (
            element.value
            if isinstance(element.value, list | pydicom.multival.MultiValue)
            else [element.value]
        )
        for number, value in enumerate((v for v in values if v not in (None, "")), start=1):
            value_element = ElementTree.SubElement(attribute, "Value", {"number": str(number)})
            value_element.text = str(value)
