"""A generated corpus of malformed DICOM and malformed multipart bodies, sent to the live
service. Every one gets a 4xx with a reason in words (the FailedSOPSequence's Warning header,
or the error's ``detail``), never a 5xx, and the service stays healthy: it still triages a
good radiograph afterwards."""

from __future__ import annotations

import copy
import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from service_utils.dicom import dx_instance, to_bytes
from service_utils.factories import derive_bundle, service_factory_for
from service_utils.server import stow, study_id_for

GOOD = dx_instance(400)
GOOD_BYTES = to_bytes(GOOD)


def _variant(case: int, **attributes: object) -> bytes:
    ds = copy.deepcopy(dx_instance(401 + case))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


ROWS = b"\x28\x00\x10\x00US\x02\x00"  # (0028,0010) Rows, explicit VR little endian


SPACING = b"\x28\x00\x30\x00DS"  # (0028,0030) Pixel Spacing


def _patched_rows(replacement: bytes) -> bytes:
    """The good radiograph with its Rows element's bytes replaced as written (a wrong VR,
    a bad length): what a broken sender produces, which pydicom itself would not write."""
    start = GOOD_BYTES.index(ROWS)
    return GOOD_BYTES[:start] + replacement + GOOD_BYTES[start + len(ROWS) + 2 :]


def _patched_spacing(value: bytes) -> bytes:
    start = GOOD_BYTES.index(SPACING)
    length = struct.unpack("<H", GOOD_BYTES[start + 6 : start + 8])[0]
    end = start + 8 + length
    return GOOD_BYTES[:start] + SPACING + struct.pack("<H", len(value)) + value + GOOD_BYTES[end:]


def _nested(depth: int) -> bytes:
    ds = copy.deepcopy(dx_instance(460))
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = DicomSequence([inner])
        inner = outer
    ds.ContentSequence = DicomSequence([inner])
    return to_bytes(ds)


def _huge_dimensions() -> bytes:
    ds = copy.deepcopy(dx_instance(470))
    ds.Rows, ds.Columns = 65535, 65535
    return to_bytes(ds)


def _truncated(fraction: float) -> bytes:
    return GOOD_BYTES[: int(len(GOOD_BYTES) * fraction)]


DICOM_CORPUS: dict[str, bytes] = {
    "empty": b"",
    "not dicom": b"%PDF-1.4 this is a report, not an image" * 20,
    "preamble only": b"\0" * 128 + b"DICM",
    "truncated in the header": _truncated(0.05),
    "truncated in the pixel data": _truncated(0.6),
    "random bytes after DICM": b"\0" * 128 + b"DICM" + bytes(range(256)) * 8,
    "Rows as text (wrong VR)": _patched_rows(b"\x28\x00\x10\x00LO\x02\x00ab"),
    "Rows with a bad length": _patched_rows(b"\x28\x00\x10\x00US\x03\x00\x01\x02\x03"),
    "Study UID not a UID": _variant(4, StudyInstanceUID="not-a-uid"),
    "SOP UID too long": _variant(5, SOPInstanceUID="1." + "2" * 70),
    "huge dimensions": _huge_dimensions(),
    "bits allocated 12": _variant(6, BitsAllocated=12),
    "colour photometric": _variant(7, PhotometricInterpretation="RGB"),
    "length past the end": GOOD_BYTES[:200] + struct.pack("<I", 0xFFFFFFF0) + GOOD_BYTES[204:400],
}


@pytest.fixture(scope="module")
def service(tmp_path_factory, base_bundle_2d):
    """One service for the whole corpus: the point is that it stays up through all of it."""
    root = tmp_path_factory.mktemp("corpus")
    bundle = derive_bundle(base_bundle_2d, root / "bundle", operating=0.0, urgent=1.0)
    database = f"sqlite:///{root / 'corpus.db'}"
    with service_factory_for(database, root)(model_uri=str(bundle)) as running:
        yield running


def _assert_healthy(service) -> None:
    with service.client() as client:
        assert client.get("/healthz").status_code == 200


#: Odd but readable: kept (the reader falls back to Imager Pixel Spacing; sequences are
#: not the pipeline's business), and the service stays up.
TOLERATED: dict[str, bytes] = {
    "Pixel Spacing not numbers": _patched_spacing(b"abc\\def "),
    "deeply nested sequences": _nested(64),
}


@pytest.mark.parametrize("name", list(TOLERATED))
def test_odd_but_readable_dicom_is_kept(service, name: str) -> None:
    answer = stow(service, "A", [TOLERATED[name]])
    assert answer.status_code in (200, 202), (name, answer.text[:300])
    _assert_healthy(service)


@pytest.mark.parametrize("name", list(DICOM_CORPUS))
def test_malformed_dicom_is_refused_with_a_reason(service, name: str) -> None:
    answer = stow(service, "A", [DICOM_CORPUS[name]])
    assert 400 <= answer.status_code < 500, (name, answer.status_code, answer.text[:300])
    if answer.status_code == 409:  # the standard STOW answer: the reason per instance
        warning = answer.headers.get("warning", "")
        assert warning.startswith("299 oncotriage"), (name, warning)
        assert len(warning) > 40, (name, warning)
    else:
        assert answer.json()["detail"], name
    _assert_healthy(service)


MULTIPART_CORPUS: dict[str, tuple[bytes, str]] = {
    "no boundary parameter": (
        b"--x\r\n\r\nabc\r\n--x--\r\n",
        'multipart/related; type="application/dicom"',
    ),
    "boundary not in the body": (
        b"just some bytes",
        'multipart/related; type="application/dicom"; boundary=nope',
    ),
    "never closed": (
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + GOOD_BYTES,
        'multipart/related; type="application/dicom"; boundary=b',
    ),
    "headers never end": (
        b"--b\r\nContent-Type: application/dicom" + b"x" * 20000,
        'multipart/related; type="application/dicom"; boundary=b',
    ),
    "no parts": (b"--b--\r\n", 'multipart/related; type="application/dicom"; boundary=b'),
    "boundary line cut": (b"--b", 'multipart/related; type="application/dicom"; boundary=b'),
    "wrong part type in the header": (
        b"--b\r\n\r\nabc\r\n--b--\r\n",
        'multipart/related; type="text/plain"; boundary=b',
    ),
    "not multipart at all": (GOOD_BYTES, "application/dicom"),
    "form-data instead of related": (
        b"--b\r\n\r\nabc\r\n--b--\r\n",
        "multipart/form-data; boundary=b",
    ),
    "boundary of 300 characters": (
        b"--" + b"b" * 300 + b"--\r\n",
        'multipart/related; type="application/dicom"; boundary=' + "b" * 300,
    ),
}


@pytest.mark.parametrize("name", list(MULTIPART_CORPUS))
def test_malformed_multipart_is_refused_with_a_reason(service, name: str) -> None:
    body, content_type = MULTIPART_CORPUS[name]
    with service.client("A") as client:
        answer = client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
        )
    assert answer.status_code in (400, 409, 415), (name, answer.status_code, answer.text[:300])
    if answer.status_code == 409:
        assert answer.headers.get("warning", "").startswith("299 oncotriage"), name
    else:
        assert len(answer.json()["detail"]) > 10, name
    _assert_healthy(service)


def test_after_the_whole_corpus_a_good_study_is_still_triaged(service) -> None:
    stow(service, "A", list(DICOM_CORPUS.values())[:4] + [GOOD_BYTES])
    study_id = study_id_for(service, "A", GOOD.StudyInstanceUID)
    study = service.wait_for_study(study_id, "A")
    assert study["status"] == "triaged" and study["suspicion_score"] is not None
