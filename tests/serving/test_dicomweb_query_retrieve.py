"""QIDO-RS and WADO-RS against the live service with dicomweb-client; tenant scoping; HTTP
Basic (the token as the password) on DICOMweb routes and nowhere else."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import requests
import sqlalchemy as sa
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedCTImageStorage, generate_uid
from service_utils.dicom import ct_series, dx_instance, to_bytes
from service_utils.server import study_id_for

from oncotriage.serving.db.models import Instance, Study
from oncotriage.serving.dicomweb import parse_media_type, parse_multipart

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models" / "demo"


def _client(service, who: str) -> DICOMwebClient:
    return DICOMwebClient(
        url=f"{service.url}/dicomweb", headers={"Authorization": f"Bearer {service.tokens[who]}"}
    )


def _basic_client(service, who: str) -> DICOMwebClient:
    session = requests.Session()
    session.auth = ("any-pacs-user", service.tokens[who])
    return DICOMwebClient(url=f"{service.url}/dicomweb", session=session)


def _patient(ds: Dataset, patient_id: str, name: str, date: str, accession: str) -> Dataset:
    ds.PatientID, ds.PatientName, ds.StudyDate, ds.AccessionNumber = (
        patient_id,
        name,
        date,
        accession,
    )
    return ds


def _enhanced_ct(slices: list[Dataset]) -> pydicom.dataset.FileDataset:
    """The slices as frames of one Enhanced CT object (frame k = slice k)."""
    first = slices[0]
    ds = Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = EnhancedCTImageStorage
    for keyword in (
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "BodyPartExamined",
    ):
        if keyword in first:
            setattr(ds, keyword, getattr(first, keyword))
    ds.SeriesInstanceUID = generate_uid()
    ds.NumberOfFrames = len(slices)
    measures, orientation, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    transform.RescaleSlope, transform.RescaleIntercept = first.RescaleSlope, first.RescaleIntercept
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for item in slices:
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = item.ImagePositionPatient
        frame.PlanePositionSequence = DicomSequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = b"".join(item.PixelData for item in slices)
    # a FileDataset: dicomweb-client writes it with its preamble, as a Part 10 file
    return pydicom.dataset.FileDataset("", ds, file_meta=ds.file_meta, preamble=b"\0" * 128)


@pytest.fixture
def stored(service_factory):
    """A service holding, for hospital A, a radiograph study (two images), a CT study (a
    series of 16 slices and the same slices as one Enhanced CT), and for hospital C one
    radiograph study; yields ``(service, objects)``."""
    dx1 = _patient(dx_instance(11), "P-001", "Doe^Jane", "20260115", "ACC-1")
    dx2 = _patient(dx_instance(12), "P-001", "Doe^Jane", "20260115", "ACC-1")
    dx2.StudyInstanceUID = dx1.StudyInstanceUID
    slices = [_patient(s, "P-002", "Roe^Rick", "20260320", "ACC-2") for s in ct_series(13)]
    enhanced = _enhanced_ct(slices)
    other = _patient(dx_instance(14), "P-900", "Doe^Jane", "20260115", "ACC-9")
    with service_factory(model_uri=str(DEMO_MODEL)) as service:
        a, c = _client(service, "A"), _client(service, "C")
        stow_a = a.store_instances([dx1, dx2, *slices, enhanced])
        failed = stow_a.get("FailedSOPSequence", [])
        assert not failed, [(f.ReferencedSOPClassUID, f.FailureReason) for f in failed]
        assert "FailedSOPSequence" not in c.store_instances([other])
        # settle hospital A's studies first: a settled study has a result SR (series 9901)
        # that WADO-RS serves beside the stored images, so reads must not race the worker
        ct = service.wait_for_study(study_id_for(service, "A", slices[0].StudyInstanceUID), "A")
        assert (ct["status"], ct["priority"]) == ("failed", "needs_manual_review"), ct
        assert "no model for CT" in ct["failure_reason"], ct  # this service reads DX/CR only
        service.wait_for_study(study_id_for(service, "A", dx1.StudyInstanceUID), "A")
        yield (
            service,
            {
                "dx1": dx1,
                "dx2": dx2,
                "slices": slices,
                "enhanced": enhanced,
                "other": other,
            },
        )


def _uids(records: list[dict], tag: str) -> list[str]:
    return [record[tag]["Value"][0] for record in records]


def test_search_for_studies_matches_and_is_scoped(stored) -> None:
    service, objects = stored
    dx1, slices, other = objects["dx1"], objects["slices"], objects["other"]
    a = _client(service, "A")
    everything = a.search_for_studies()
    assert sorted(_uids(everything, "0020000D")) == sorted(
        [dx1.StudyInstanceUID, slices[0].StudyInstanceUID]
    )  # hospital C's study is not there
    (radiographs,) = [r for r in everything if r["0020000D"]["Value"][0] == dx1.StudyInstanceUID]
    assert radiographs["00100020"]["Value"] == ["P-001"]
    assert radiographs["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert radiographs["00080020"]["Value"] == ["20260115"]
    assert radiographs["00080050"]["Value"] == ["ACC-1"]
    assert radiographs["00080061"]["Value"] == ["DX"]
    assert radiographs["00201206"]["Value"] == [2]  # dx_instance makes a series per image
    assert radiographs["00201208"]["Value"] == [2]
    # (dicomweb-client sends Host without the port, so the URL is checked from its path)
    (retrieve_url,) = radiographs["00081190"]["Value"]
    assert retrieve_url.endswith(f"/dicomweb/studies/{dx1.StudyInstanceUID}")
    (ct,) = [r for r in everything if r["0020000D"]["Value"][0] == slices[0].StudyInstanceUID]
    assert ct["00201206"]["Value"] == [2] and ct["00201208"]["Value"] == [17]

    def found(**filters: object) -> list[str]:
        return sorted(_uids(a.search_for_studies(search_filters=filters), "0020000D"))

    assert found(PatientID="P-001") == [dx1.StudyInstanceUID]
    assert found(PatientName="doe*") == [dx1.StudyInstanceUID]  # wildcard, any case
    assert found(PatientName="roe^rick") == [slices[0].StudyInstanceUID]
    assert found(PatientName="D?e^Jane") == [dx1.StudyInstanceUID]
    assert found(StudyDate="20260301-20260331") == [slices[0].StudyInstanceUID]
    assert found(StudyDate="-20260201") == [dx1.StudyInstanceUID]
    assert found(AccessionNumber="ACC-2") == [slices[0].StudyInstanceUID]
    assert found(ModalitiesInStudy="CT") == [slices[0].StudyInstanceUID]
    assert found(StudyInstanceUID=f"{dx1.StudyInstanceUID},{slices[0].StudyInstanceUID}") == (
        sorted([dx1.StudyInstanceUID, slices[0].StudyInstanceUID])
    )
    # a key matched on the stored headers rather than a column
    assert found(StudyTime=str(dx1.StudyTime)) == [dx1.StudyInstanceUID]
    # another hospital's patient and study are not found, by any key
    assert found(PatientID="P-900") == []
    assert found(StudyInstanceUID=other.StudyInstanceUID) == []
    assert found(fuzzymatching=True, PatientID="P-001") == [dx1.StudyInstanceUID]
    # hospital C sees its own study only
    assert _uids(_client(service, "C").search_for_studies(), "0020000D") == [other.StudyInstanceUID]
    # the centre's specialist sees hospital A's studies (A is one of its hospitals), not C's
    spec = sorted(_uids(_client(service, "spec1").search_for_studies(), "0020000D"))
    assert spec == sorted([dx1.StudyInstanceUID, slices[0].StudyInstanceUID])


def test_limit_offset_and_includefield(stored) -> None:
    service, objects = stored
    a = _client(service, "A")
    first = a.search_for_studies(limit=1)
    second = a.search_for_studies(limit=1, offset=1)
    assert len(first) == len(second) == 1
    assert first[0]["0020000D"] != second[0]["0020000D"]
    assert a.search_for_studies(offset=2) == []
    (record,) = a.search_for_studies(
        search_filters={"PatientID": "P-001"}, fields=["PatientBirthDate", "00101010"]
    )
    assert record["00100030"]["Value"] == [str(objects["dx1"].PatientBirthDate)]
    (full,) = a.search_for_instances(
        search_filters={"SOPInstanceUID": objects["dx1"].SOPInstanceUID}, fields=["all"]
    )
    # every attribute of the stored header, none of its pixel data
    assert full["00180015"]["Value"] == [objects["dx1"].BodyPartExamined]
    assert full["00281050"]["Value"] == [float(objects["dx1"].WindowCenter)]
    assert "7FE00010" not in full


def test_series_and_instance_searches(stored) -> None:
    service, objects = stored
    a = _client(service, "A")
    slices, enhanced = objects["slices"], objects["enhanced"]
    study = slices[0].StudyInstanceUID
    series = a.search_for_series(study)
    assert sorted(_uids(series, "0020000E")) == sorted(
        [slices[0].SeriesInstanceUID, enhanced.SeriesInstanceUID]
    )
    counts = {r["0020000E"]["Value"][0]: r["00201209"]["Value"][0] for r in series}
    assert counts == {slices[0].SeriesInstanceUID: 16, enhanced.SeriesInstanceUID: 1}
    radiograph_series = a.search_for_series(search_filters={"Modality": "DX"})
    assert sorted(_uids(radiograph_series, "0020000E")) == sorted(
        [objects["dx1"].SeriesInstanceUID, objects["dx2"].SeriesInstanceUID]
    )
    # /series answers with the study's attributes too
    assert {r["00100020"]["Value"][0] for r in radiograph_series} == {"P-001"}
    instances = a.search_for_instances(study, slices[0].SeriesInstanceUID)
    assert sorted(_uids(instances, "00080018")) == sorted(s.SOPInstanceUID for s in slices)
    (fifth,) = a.search_for_instances(
        study, slices[0].SeriesInstanceUID, search_filters={"InstanceNumber": "5"}
    )
    assert fifth["00080018"]["Value"] == [slices[4].SOPInstanceUID]
    assert fifth["00200013"]["Value"] == [5]
    (multiframe,) = a.search_for_instances(search_filters={"SOPClassUID": EnhancedCTImageStorage})
    assert multiframe["00280008"]["Value"] == [16]


def test_bad_queries_are_400_with_a_reason(stored) -> None:
    service, objects = stored
    with service.client("A") as client:
        for params, words in (
            ({"PatientNmae": "x"}, "unknown query key 'PatientNmae'"),
            ({"Modality": "CT"}, "use ModalitiesInStudy"),
            ({"StudyDate": "2026-01-01"}, "is not YYYYMMDD"),
            ({"includefield": "NoSuchKeyword"}, "unknown query key"),
            ({"PatientID": "P-001\x00"}, "holds control characters"),
            ({"StudyDate": "20260101-"}, None),
        ):
            response = client.get("/dicomweb/studies", params=params)
            if words is None:  # an open range is fine
                assert response.status_code == 200, response.text
                continue
            assert response.status_code == 400, (params, response.text)
            assert words in response.json()["detail"]
        assert client.get("/dicomweb/studies", params={"limit": 0}).status_code == 422
        assert client.get("/dicomweb/studies", params={"limit": 10**6}).status_code == 422
        assert client.get("/dicomweb/studies", params={"offset": 2**40}).status_code == 422
        # another hospital's study in a path is a 404, as an unknown one is
        other = objects["other"].StudyInstanceUID
        assert client.get(f"/dicomweb/studies/{other}/series").status_code == 404
        assert client.get("/dicomweb/studies/1.2.3.999/series").status_code == 404


def test_retrieve_series_metadata_frames_and_rendered(stored) -> None:
    service, objects = stored
    a = _client(service, "A")
    slices, enhanced, dx1 = objects["slices"], objects["enhanced"], objects["dx1"]
    study = slices[0].StudyInstanceUID

    series = a.retrieve_series(study, slices[0].SeriesInstanceUID)
    assert sorted(ds.SOPInstanceUID for ds in series) == sorted(s.SOPInstanceUID for s in slices)
    retrieved = {ds.SOPInstanceUID: ds for ds in series}
    np.testing.assert_array_equal(
        retrieved[slices[3].SOPInstanceUID].pixel_array, slices[3].pixel_array
    )

    metadata = a.retrieve_study_metadata(study)
    # the 17 stored objects and the service's result SR (manual review: no model for CT)
    assert len(metadata) == 18
    by_uid = {m["00080018"]["Value"][0]: m for m in metadata}
    stored_uids = {s.SOPInstanceUID for s in slices} | {enhanced.SOPInstanceUID}
    (made,) = [m for uid, m in by_uid.items() if uid not in stored_uids]
    assert made["00080060"]["Value"] == ["SR"] and made["00200011"]["Value"] == [9901]
    enhanced_meta = by_uid[enhanced.SOPInstanceUID]
    numbers = ",".join(str(n) for n in range(1, 17))
    assert enhanced_meta["7FE00010"]["vr"] == "OW"
    assert enhanced_meta["7FE00010"]["BulkDataURI"].endswith(
        f"/dicomweb/studies/{study}/series/{enhanced.SeriesInstanceUID}"
        f"/instances/{enhanced.SOPInstanceUID}/frames/{numbers}"
    )
    assert by_uid[slices[0].SOPInstanceUID]["00100010"]["Value"] == [{"Alphabetic": "Roe^Rick"}]
    # series and instance metadata are the same headers
    one = a.retrieve_instance_metadata(study, slices[2].SeriesInstanceUID, slices[2].SOPInstanceUID)
    assert one == by_uid[slices[2].SOPInstanceUID]
    assert len(a.retrieve_series_metadata(study, slices[0].SeriesInstanceUID)) == 16

    # frames are 1-based; several in one request come back in the order asked
    frames = a.retrieve_instance_frames(
        study, enhanced.SeriesInstanceUID, enhanced.SOPInstanceUID, frame_numbers=[3, 1]
    )
    assert frames == [slices[2].PixelData, slices[0].PixelData]
    (single,) = a.retrieve_instance_frames(
        study, slices[5].SeriesInstanceUID, slices[5].SOPInstanceUID, frame_numbers=[1]
    )
    assert single == slices[5].PixelData

    # rendered: PNG on request, the header's window by default, or the window parameter
    png = a.retrieve_instance_rendered(
        dx1.StudyInstanceUID,
        dx1.SeriesInstanceUID,
        dx1.SOPInstanceUID,
        media_types=("image/png",),
    )
    picture = np.asarray(Image.open(io.BytesIO(png)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.shape == (dx1.Rows, dx1.Columns)
    # the radiograph's own window (centre 2048, width 4096) maps stored values linearly
    expected = np.round(np.clip((dx1.pixel_array - 2047.5) / 4095.0 + 0.5, 0, 1) * 255).astype(
        np.uint8
    )
    np.testing.assert_array_equal(picture, expected)
    narrow = a.retrieve_instance_rendered(
        dx1.StudyInstanceUID,
        dx1.SeriesInstanceUID,
        dx1.SOPInstanceUID,
        media_types=("image/png",),
        params={"window": "2000,2,linear"},
    )
    thresholded = np.asarray(Image.open(io.BytesIO(narrow)))
    assert set(np.unique(thresholded)) <= {0, 255}
    np.testing.assert_array_equal(thresholded == 255, dx1.pixel_array >= 2000)
    jpeg = a.retrieve_instance_rendered(
        dx1.StudyInstanceUID, dx1.SeriesInstanceUID, dx1.SOPInstanceUID
    )
    assert jpeg[:3] == b"\xff\xd8\xff"
    # a frame of the Enhanced CT, in Hounsfield units (its functional groups' rescale)
    # with a lung window
    frame = a.retrieve_instance_frames_rendered(
        study,
        enhanced.SeriesInstanceUID,
        enhanced.SOPInstanceUID,
        frame_numbers=[2],
        media_types=("image/png",),
        params={"window": "-600,1500"},
    )
    hu = slices[1].pixel_array * float(slices[1].RescaleSlope) + float(slices[1].RescaleIntercept)
    expected_lung = np.round(np.clip((hu - (-600 - 0.5)) / 1499.0 + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(frame))), expected_lung.astype(np.uint8)
    )
    # a CT slice without a window parameter: the header's Window Center/Width
    plain = a.retrieve_instance_rendered(
        study,
        slices[1].SeriesInstanceUID,
        slices[1].SOPInstanceUID,
        media_types=("image/png",),
    )
    centre, width = float(slices[1].WindowCenter), float(slices[1].WindowWidth)
    expected_header = np.round(np.clip((hu - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * 255)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(plain))), expected_header.astype(np.uint8)
    )

    with service.client("A") as client:
        base = (
            f"/dicomweb/studies/{study}/series/{enhanced.SeriesInstanceUID}"
            f"/instances/{enhanced.SOPInstanceUID}"
        )
        too_far = client.get(f"{base}/frames/17")
        assert too_far.status_code == 400
        assert "this instance has 16" in too_far.json()["detail"]
        assert client.get(f"{base}/frames/0").status_code == 400
        huge = client.get(f"{base}/frames/{'9' * 5000}")  # was a 500 (int() of 5000 digits)
        assert huge.status_code == 400 and "not a frame number" in huge.json()["detail"]
        series_rendered = client.get(
            f"/dicomweb/studies/{study}/series/{slices[0].SeriesInstanceUID}/rendered",
            headers={"Accept": 'multipart/related; type="image/png"'},
        )
        assert series_rendered.status_code == 200
        media, params = parse_media_type(series_rendered.headers["content-type"])
        parts = parse_multipart(series_rendered.content, params["boundary"], max_parts=100)
        assert (media, params["type"], len(parts)) == ("multipart/related", "image/png", 16)
        assert all(part.content[:4] == b"\x89PNG" for part in parts)


def test_other_hospitals_uids_are_404(stored) -> None:
    service, objects = stored
    other = objects["other"]
    study, series, sop = other.StudyInstanceUID, other.SeriesInstanceUID, other.SOPInstanceUID
    paths = [
        f"/dicomweb/studies/{study}",
        f"/dicomweb/studies/{study}/metadata",
        f"/dicomweb/studies/{study}/rendered",
        f"/dicomweb/studies/{study}/series/{series}",
        f"/dicomweb/studies/{study}/series/{series}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1",
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered",
        f"/dicomweb/studies/{study}/series/{series}/instances",
    ]
    for who in ("A", "spec1"):  # hospital A, and the specialists of A's centre (C is elsewhere)
        with service.client(who) as client:
            for path in paths:
                assert client.get(path).status_code == 404, (who, path)
    with service.client("C") as client:  # the owner gets each of them
        for path in paths:
            assert client.get(path).status_code == 200, path


def test_basic_auth_works_on_dicomweb_and_is_refused_elsewhere(stored) -> None:
    service, objects = stored
    dx1 = objects["dx1"]
    basic = _basic_client(service, "A")
    assert sorted(
        _uids(basic.search_for_studies(search_filters={"PatientID": "P-001"}), "0020000D")
    ) == [dx1.StudyInstanceUID]
    series = basic.retrieve_series(dx1.StudyInstanceUID, dx1.SeriesInstanceUID)
    assert [ds.SOPInstanceUID for ds in series] == [dx1.SOPInstanceUID]
    # STOW-RS with Basic too (a PACS forwarding a study)
    extra = _patient(dx_instance(15), "P-003", "Poe^Ed", "20260401", "ACC-3")
    assert "FailedSOPSequence" not in basic.store_instances([extra])

    token = service.tokens["A"]
    with httpx.Client(base_url=service.url, timeout=30) as client:
        ok = client.get("/dicomweb/studies", auth=("pacs", token))
        assert ok.status_code == 200 and len(ok.json()) == 3
        wrong = client.get("/dicomweb/studies", auth=("pacs", token[:-2] + "xx"))
        assert wrong.status_code == 401
        assert "Basic" in wrong.headers["www-authenticate"]
        for path in ("/v1/studies", "/v1/worklist"):
            refused = client.get(path, auth=("pacs", token))
            assert refused.status_code == 401, path
            assert "HTTP Basic is accepted on /dicomweb routes only" in refused.json()["detail"]
        refused = client.post(
            "/v1/studies", auth=("pacs", token), files={"files": ("x.dcm", to_bytes(extra))}
        )
        assert refused.status_code == 401
        assert client.get("/dicomweb/studies").status_code == 401


def test_studies_stored_before_the_index_are_indexed_when_queried(stored) -> None:
    """Rows from before migration 0007 (NULL header and keys) are found by their keys: the
    first query reads the stored files' headers and keeps them."""
    service, objects = stored
    dx1 = objects["dx1"]
    with service.db.session() as session:
        session.execute(sa.update(Instance).values(header_json=None))
        session.execute(
            sa.update(Study).values(
                patient_id=None, patient_name=None, study_date=None, accession_number=None
            )
        )
    a = _client(service, "A")
    (found,) = a.search_for_studies(search_filters={"PatientName": "DOE^JANE"})
    assert found["0020000D"]["Value"] == [dx1.StudyInstanceUID]
    assert found["00080050"]["Value"] == ["ACC-1"]
    with service.db.session() as session:
        study = session.scalar(
            sa.select(Study).where(Study.study_instance_uid == dx1.StudyInstanceUID)
        )
        assert (study.patient_id, study.study_date) == ("P-001", "20260115")
        unindexed = session.scalar(
            sa.select(sa.func.count())
            .select_from(Instance)
            .where(Instance.hospital_id == study.hospital_id, Instance.header_json.is_(None))
        )
        assert unindexed == 0  # every visible instance of hospital A now has its header
    # hospital C's rows are indexed by C's own first query, not by A's
    with service.db.session() as session:
        other = session.scalar(
            sa.select(Study).where(Study.study_instance_uid == objects["other"].StudyInstanceUID)
        )
        assert other.patient_id is None
