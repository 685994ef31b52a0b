"""Push DICOM to an oncotriage service with DICOMweb STOW-RS, as a hospital script or PACS would.

Built on ``dicomweb-client`` so that what is exercised here is the wire format every standard
client speaks: ``POST {base}/dicomweb/studies/{StudyInstanceUID}`` with
``multipart/related; type="application/dicom"`` and a DICOM JSON response
(ReferencedSOPSequence / FailedSOPSequence, PS3.18 10.5).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian
from retrying import RetryError

logger = logging.getLogger(__name__)

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image

# PS3.18 Table 10.5.3-2 / PS3.4 C-STORE statuses a STOW-RS origin server returns.
FAILURE_REASONS: dict[int, str] = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "refused: out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


class StowError(RuntimeError):
    """The push could not be carried out at all (service unreachable, unusable answer)."""


class StowAuthError(StowError):
    """The service refused the token (HTTP 401/403)."""


@dataclass
class StowResult:
    """What the service answered for a push.

    Attributes:
        study_uids: StudyInstanceUIDs of the instances sent, in the order first seen.
        stored: SOP Instance UIDs the service confirmed (ReferencedSOPSequence).
        failed: ``(identifier, reason)`` per instance not stored: the SOP Instance UID, or the
            file path when the file could not be read as DICOM here.
        warnings: ``(sop_instance_uid, reason)`` for stored instances the service warned about.
        retrieve_urls: StudyInstanceUID -> the study's RetrieveURL from the response.
        status_urls: StudyInstanceUID -> the ``Location`` header of the response (the
            service's study status URL), when it sent one.
    """

    study_uids: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    retrieve_urls: dict[str, str] = field(default_factory=dict)
    status_urls: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every instance sent was stored."""
        return not self.failed


def _reachable_url(request_url: str, location: str) -> str:
    """The ``Location`` answer as a URL this client can reach.

    dicomweb-client sends ``Host`` without the port on chunked uploads, so the service
    may build its absolute ``Location`` on a host without the port: when the host is the
    one we called, keep our own scheme, host and port and take only the path.
    """
    absolute = urlsplit(urljoin(request_url, location))
    called = urlsplit(request_url)
    if absolute.hostname == called.hostname:
        absolute = absolute._replace(scheme=called.scheme, netloc=called.netloc)
    return urlunsplit(absolute)


class StowClient:
    """STOW-RS client for one service and one hospital token.

    Not thread-safe: give each thread its own client.

    Args:
        base_url: service root, e.g. ``http://127.0.0.1:8000``.
        token: the hospital's bearer API token.
        timeout_s: per-request timeout.
        batch_size: instances per request at most.
        max_batch_bytes: encoded bytes per request at most (one larger instance is sent alone).
        retry: let ``dicomweb-client`` retry 408/429/503/504 with exponential backoff.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 60.0,
        batch_size: int = 64,
        max_batch_bytes: int = 64 * 2**20,
        retry: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if not token:
            raise ValueError("a bearer token is required; issue one with `oncotriage admin`")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self._last_response: requests.Response | None = None
        self._dicomweb = DICOMwebClient(
            url=f"{self.base_url}/dicomweb",
            headers={"Authorization": f"Bearer {token}"},
            callback=self._remember_response,
            timeout=timeout_s,
        )
        self._dicomweb.set_http_retry_params(retry=retry, wait_exponential_multiplier=250)

    def push_files(self, paths: Iterable[str | os.PathLike[str]]) -> StowResult:
        """Send DICOM files; folders are searched recursively.

        Files that are not DICOM are reported in ``failed`` with their path; DICOMDIR index
        files and hidden files are skipped. Instances are grouped by study and sent in batches.

        Raises:
            StowAuthError: the token was refused.
            StowError: the service could not be reached.
        """
        result = StowResult()
        headers: list[tuple[Path, Dataset, int]] = []
        for path in _expand(paths):
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
                result.failed.append((str(path), f"not a readable DICOM file: {exc}"))
                continue
            if str(header.get("SOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
                logger.debug("skipping DICOMDIR %s", path)
                continue
            if "StudyInstanceUID" not in header or "SOPInstanceUID" not in header:
                result.failed.append((str(path), "no StudyInstanceUID/SOPInstanceUID"))
                continue
            headers.append((path, header, path.stat().st_size))
        by_study: dict[str, list[tuple[Path, Dataset, int]]] = {}
        for entry in headers:
            by_study.setdefault(str(entry[1].StudyInstanceUID), []).append(entry)
        for study_uid, entries in by_study.items():
            _note_study(result, study_uid)
            for batch in self._batches(entries):
                datasets = []
                for file_path, file_header, _ in batch:
                    try:
                        datasets.append(pydicom.dcmread(file_path))
                    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
                        uid = str(file_header.SOPInstanceUID)
                        result.failed.append((uid, f"unreadable: {exc}"))
                if datasets:
                    self._store(study_uid, datasets, result)
        return result

    def push_datasets(self, datasets: Sequence[Dataset]) -> StowResult:
        """Send in-memory instances (with pixel data), grouped by study, in batches.

        Raises:
            StowAuthError: the token was refused.
            StowError: the service could not be reached.
        """
        result = StowResult()
        by_study: dict[str, list[Dataset]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(_as_part10(ds))
        for study_uid, members in by_study.items():
            _note_study(result, study_uid)
            sized = [(ds, len(ds.get("PixelData", b"") or b"")) for ds in members]
            batch: list[Dataset] = []
            batch_bytes = 0
            for ds, size in sized:
                if batch and (
                    len(batch) >= self.batch_size or batch_bytes + size > self.max_batch_bytes
                ):
                    self._store(study_uid, batch, result)
                    batch, batch_bytes = [], 0
                batch.append(ds)
                batch_bytes += size
            if batch:
                self._store(study_uid, batch, result)
        return result

    def _batches(
        self, entries: Sequence[tuple[Path, Dataset, int]]
    ) -> Iterator[list[tuple[Path, Dataset, int]]]:
        batch: list[tuple[Path, Dataset, int]] = []
        batch_bytes = 0
        for entry in entries:
            size = entry[2]
            if batch and (
                len(batch) >= self.batch_size or batch_bytes + size > self.max_batch_bytes
            ):
                yield batch
                batch, batch_bytes = [], 0
            batch.append(entry)
            batch_bytes += size
        if batch:
            yield batch

    def _remember_response(
        self, response: requests.Response, *args: Any, **kwargs: Any
    ) -> requests.Response:
        self._last_response = response
        return response

    def _store(self, study_uid: str, datasets: Sequence[Dataset], result: StowResult) -> None:
        sent = [str(ds.SOPInstanceUID) for ds in datasets]
        self._last_response = None
        try:
            answer = self._dicomweb.store_instances(datasets, study_instance_uid=study_uid)
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else None
            if status in (401, 403):
                raise StowAuthError(
                    f"the service at {self.base_url} refused the token (HTTP {status}); "
                    "check --token, or issue a new one with `oncotriage admin issue-token`"
                ) from exc
            error_answer = _dicom_json(response)
            if error_answer is None:
                reason = f"HTTP {status}: {_snippet(response)}"
                result.failed.extend((uid, reason) for uid in sent)
                return
            answer = error_answer
        except RetryError as exc:  # still 408/429/503/504 after dicomweb-client's retries
            last = exc.last_attempt.value
            response = last if isinstance(last, requests.Response) else None
            status = response.status_code if response is not None else None
            reason = f"HTTP {status} after retries: {_snippet(response)}"
            result.failed.extend((uid, reason) for uid in sent)
            return
        except requests.RequestException as exc:
            raise StowError(f"cannot reach the service at {self.base_url}: {exc}") from exc
        last = self._last_response
        location = last.headers.get("Location") if last is not None else None
        warning = last.headers.get("Warning") if last is not None else None
        if location and last is not None:
            result.status_urls[study_uid] = _reachable_url(last.url, location)
        _merge_answer(answer, sent, study_uid, result, _warning_texts(warning))


def _as_part10(ds: Dataset) -> Dataset:
    """``ds`` ready to be written as a PS3.10 file (preamble, ``DICM``, file meta), which is
    what each ``application/dicom`` part of STOW-RS must be. Copies rather than mutates."""
    if getattr(ds, "preamble", None) is not None and "TransferSyntaxUID" in getattr(
        ds, "file_meta", {}
    ):
        return ds
    part10 = copy.copy(ds)
    part10.preamble = b"\x00" * 128
    part10.file_meta = copy.copy(ds.file_meta) if hasattr(ds, "file_meta") else FileMetaDataset()
    if "TransferSyntaxUID" not in part10.file_meta:
        part10.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    part10.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    part10.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    validate_file_meta(part10.file_meta, enforce_standard=True)
    return part10


def _expand(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not child.name.startswith("."):
                    yield child
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"{path} does not exist")


def _note_study(result: StowResult, study_uid: str) -> None:
    if study_uid not in result.study_uids:
        result.study_uids.append(study_uid)


def _dicom_json(response: requests.Response | None) -> Dataset | None:
    """The DICOM JSON body of an error response, if it has one."""
    if response is None or not response.content:
        return None
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if media_type not in ("application/dicom+json", "application/json"):
        return None
    try:
        return Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError):
        return None


def _snippet(response: requests.Response | None) -> str:
    if response is None:
        return "no response"
    text = response.text.strip().replace("\n", " ")
    return text[:200] or response.reason or "no body"


def _with_text(reason: str, text: str | None) -> str:
    return f"{reason}: {text}" if text and text not in reason else reason


def failure_reason(item: Dataset) -> str:
    """Readable reason of a FailedSOPSequence (or warning) item."""
    parts = []
    code = item.get("FailureReason", item.get("WarningReason"))
    if code is not None:
        code = int(code)
        parts.append(f"0x{code:04X} {FAILURE_REASONS.get(code, 'failure')}")
    comment = item.get("ErrorComment")
    if comment:
        parts.append(str(comment))
    return ": ".join(parts) if parts else "no reason given"


_WARNING_299 = re.compile(r'299\s+\S+\s+"([^"]*)"')


def _warning_texts(header: str | None) -> dict[str, str]:
    """``{sop_instance_uid: text}`` from ``Warning: 299 <agent> "<uid>: <text>"`` headers, the
    way a STOW-RS server explains failures in words (PS3.18 8.4.3); requests joins repeated
    headers with commas."""
    texts: dict[str, str] = {}
    for match in _WARNING_299.finditer(header or ""):
        uid, sep, text = match.group(1).partition(": ")
        if sep:
            texts[uid.strip()] = text.strip()
    return texts


def _merge_answer(
    answer: Dataset,
    sent: Sequence[str],
    study_uid: str,
    result: StowResult,
    texts: Mapping[str, str] | None = None,
) -> None:
    texts = texts or {}
    confirmed: set[str] = set()
    for item in answer.get("ReferencedSOPSequence", []):
        uid = str(item.ReferencedSOPInstanceUID)
        confirmed.add(uid)
        result.stored.append(uid)
        if "WarningReason" in item:
            result.warnings.append((uid, _with_text(failure_reason(item), texts.get(uid))))
    for item in answer.get("FailedSOPSequence", []):
        uid = str(item.ReferencedSOPInstanceUID)
        confirmed.add(uid)
        result.failed.append((uid, _with_text(failure_reason(item), texts.get(uid))))
    retrieve_url = answer.get("RetrieveURL")
    if retrieve_url:
        result.retrieve_urls[study_uid] = str(retrieve_url)
    for uid in sent:
        if uid not in confirmed:
            result.failed.append((uid, "the service did not confirm this instance"))
