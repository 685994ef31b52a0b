"""The DICOM listener: DIMSE C-ECHO and C-STORE SCP for modalities that only speak DIMSE.

A modality (or a PACS forwarding a study) opens an association to the listener's AE title,
naming itself by its calling AE title. That AE title must be mapped to a hospital
(:mod:`oncotriage.serving.ae_titles`, ``oncotriage admin set-ae-title``), or the association
is rejected (A-ASSOCIATE-RJ, permanent, "calling AE title not recognised").

Each C-STORE request is one intake request of that hospital:
:func:`oncotriage.serving.intake.ingest` validates the object exactly as for STOW-RS,
writes its bytes (fsynced) to the image store and commits its rows and jobs in one
transaction, and only then is the C-STORE answered with success (0x0000), so an
acknowledged instance survives the process being killed right after.

Studies in parts: a radiograph is read on its own, at once. A CT series is read once it is
complete, by the intake's rule (its job falls due a settle time after its latest slice),
with the association as the sender's "that was all": while the association is open each
slice pushes the job ``ASSOCIATION_IDLE_TIMEOUT_S`` + ``series_settle_s`` ahead (a
modality may send slices seconds apart), and when it is released or aborted the job falls
due ``series_settle_s`` later (:func:`oncotriage.serving.intake.settle_series`). A series
split over several associations is read after each; a listener killed mid-series leaves its
jobs due at most that hold after the latest slice.

A refused object gets the C-STORE failure status of its STOW-RS failure reason (PS3.4
Annex B and GG: 0xA700 out of resources, 0xA900 data set does not match, 0xC000 cannot
understand, 0x0122 SOP class not supported, ...) with the reason in the Error Comment (cut
to the 64 characters an LO holds; the whole reason is logged).

Presentation contexts: the image storage SOP classes of the screening modalities (CT,
Enhanced CT, CR, DX and MG, for presentation and for processing) and what arrives alongside
them (structured reports, radiation dose SRs, secondary captures, grayscale softcopy
presentation states, key object selections), each with the uncompressed transfer syntaxes,
Deflate, and every compressed syntax an installed pydicom decoder reads (JPEG baseline,
extended and lossless, JPEG-LS, JPEG 2000, High-Throughput JPEG 2000, RLE). A context
whose transfer syntaxes are all undecodable here is refused at association (transfer
syntaxes not supported), so the sender can convert before it sends.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from oncotriage.serving.dicomweb import FailureReason

if TYPE_CHECKING:
    from pynetdicom.events import Event
    from pynetdicom.transport import ThreadedAssociationServer

    from oncotriage.serving.db.session import Database
    from oncotriage.serving.security import Principal
    from oncotriage.serving.settings import Settings
    from oncotriage.serving.storage import ContentStore

logger = logging.getLogger(__name__)

#: C-STORE success, and the warning for an object kept with something the sender should
#: know (PS3.4 Table B.2-1: "Coercion of Data Elements").
STATUS_SUCCESS = 0x0000
STATUS_WARNING_COERCION = 0xB000
#: The Error Comment (0000,0902) is an LO: at most 64 characters.
ERROR_COMMENT_LENGTH = 64
#: An association silent this long is aborted (pynetdicom's network timeout); it bounds how
#: long a CT series' read waits for the association to end.
ASSOCIATION_IDLE_TIMEOUT_S = 60.0
#: The Verification SOP Class (C-ECHO).
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

#: Always accepted: pydicom reads these itself.
NATIVE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)
#: Accepted where an installed pydicom pixel decoder reads them.
COMPRESSED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)


def storage_sop_classes() -> list[str]:
    """SOP classes the listener takes: the screening images the intake triages, and the
    objects it keeps with them for the record (the same lists the intake sorts by)."""
    from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage as GSPS
    from pydicom.uid import KeyObjectSelectionDocumentStorage

    from oncotriage.datasets.instance import SCREENING_SOP_CLASSES
    from oncotriage.datasets.roles import (
        DOSE_SR_CLASSES,
        SECONDARY_CAPTURE_CLASSES,
        SR_CLASSES,
    )

    classes = [*SCREENING_SOP_CLASSES, *sorted(SR_CLASSES), *sorted(DOSE_SR_CLASSES)]
    classes += [*sorted(SECONDARY_CAPTURE_CLASSES), GSPS, KeyObjectSelectionDocumentStorage]
    return list(dict.fromkeys(str(uid) for uid in classes))


def decodable_transfer_syntaxes() -> list[UID]:
    """The transfer syntaxes offered: native ones, and the compressed ones whose pydicom
    decoder has a plugin installed here."""
    from pydicom.pixels import get_decoder

    available = list(NATIVE_TRANSFER_SYNTAXES)
    for uid in COMPRESSED_TRANSFER_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                available.append(uid)
        except NotImplementedError:
            continue
    return available


def store_status(reason: FailureReason | None, message: str, warning: str = "") -> Dataset:
    """The C-STORE response status for one intake outcome: success, the coercion warning
    when the object was kept with a ``warning``, or the failure status of ``reason`` (the
    STOW-RS failure reasons are the C-STORE statuses of PS3.4 Annex B) with ``message`` as
    the Error Comment."""
    status = Dataset()
    if reason is None:
        status.Status = STATUS_WARNING_COERCION if warning else STATUS_SUCCESS
        if warning:
            status.ErrorComment = _comment(warning)
        return status
    status.Status = int(reason)
    status.ErrorComment = _comment(message or reason.name.replace("_", " ").lower())
    return status


def _comment(text: str) -> str:
    """``text`` as an LO value: one line, no backslash, at most 64 characters."""
    flat = " ".join(text.replace("\\", "/").split())
    if len(flat) <= ERROR_COMMENT_LENGTH:
        return flat
    return flat[: ERROR_COMMENT_LENGTH - 3].rstrip() + "..."


@dataclass
class ListenerAddress:
    host: str
    port: int
    ae_title: str


@dataclass
class _Association:
    """What the listener keeps about one open association."""

    principal: Principal
    #: ``(study id, Series Instance UID)`` of every series it stored into
    series: set[tuple[str, str]] = field(default_factory=set)


class DicomListener:
    """A pynetdicom association server that hands every C-STORE to the intake.

    Args:
        settings: the service settings (intake limits, settle time).
        db: the service database (AE titles, studies).
        store: the image store.
        ae_title: the listener's own (called) AE title; associations addressed to another
            are rejected ("called AE title not recognised").
    """

    def __init__(
        self, settings: Settings, db: Database, store: ContentStore, *, ae_title: str
    ) -> None:
        from oncotriage.serving.ae_titles import normalise_ae_title

        self.settings = settings
        self.db = db
        self.store = store
        self.ae_title = normalise_ae_title(ae_title)
        # a CT series' read waits for the association's end (see the module docstring)
        self._intake_settings = settings.model_copy(
            update={"series_settle_s": ASSOCIATION_IDLE_TIMEOUT_S + settings.series_settle_s}
        )
        self._associations: dict[Any, _Association] = {}  # by pynetdicom Association
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def start(self, host: str, port: int) -> ListenerAddress:
        """Listen on ``host:port`` (port 0: a free one) in background threads; returns the
        address bound."""
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.network_timeout = ASSOCIATION_IDLE_TIMEOUT_S
        transfer_syntaxes = decodable_transfer_syntaxes()
        ae.add_supported_context(VERIFICATION_SOP_CLASS)
        for sop_class in storage_sop_classes():
            ae.add_supported_context(sop_class, transfer_syntaxes)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._forget),
            (evt.EVT_ABORTED, self._forget),
            (evt.EVT_CONN_CLOSE, self._forget),
        ]
        server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        if server is None:  # pragma: no cover - block=False always returns the server
            raise RuntimeError("pynetdicom did not start the association server")
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        address = ListenerAddress(
            host=str(bound_host), port=int(bound_port), ae_title=self.ae_title
        )
        logger.info(
            "DICOM listener %s on %s:%d (%d transfer syntaxes)",
            self.ae_title,
            address.host,
            address.port,
            len(transfer_syntaxes),
        )
        return address

    def stop(self) -> None:
        """Stop listening and abort open associations (what they had acknowledged is kept;
        the sender re-sends the rest)."""
        if self._server is not None:
            server, self._server = self._server, None
            for assoc in server.active_associations:
                assoc.abort()
            server.shutdown()

    # -- events -----------------------------------------------------------------------------

    def _on_requested(self, event: Event) -> None:
        """Reject an association whose calling AE title no hospital owns."""
        from oncotriage.serving.ae_titles import principal_for_ae_title

        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title if request is not None else "").strip()
        try:
            with self.db.session() as session:
                principal = principal_for_ae_title(session, calling)
        except Exception:  # the database is down: a transient rejection, the sender retries
            logger.exception("DICOM association from %r: AE title lookup failed", calling)
            assoc.acse.send_reject(0x02, 0x01, 0x01)  # rejected-transient, no reason given
            assoc.kill()
            return
        if principal is None:
            logger.warning(
                "DICOM association rejected: calling AE title %r is not recognised "
                "(map it with oncotriage admin set-ae-title)",
                calling,
                extra={"fields": {"calling_ae_title": calling}},
            )
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, calling AE not recognised
            assoc.kill()
            return
        with self._lock:
            self._associations[assoc] = _Association(principal)

    def _forget(self, event: Event) -> None:
        """The association ended (released, aborted or dropped): its CT series are complete
        as far as this sender is concerned."""
        from oncotriage.serving.db.base import utcnow
        from oncotriage.serving.intake import settle_series

        with self._lock:
            association = self._associations.pop(event.assoc, None)
        if association is None or not association.series:
            return
        try:
            settle_series(self.db, self.settings, sorted(association.series), now=utcnow())
        except Exception:  # its jobs still fall due, ASSOCIATION_IDLE_TIMEOUT_S later
            logger.exception("DICOM listener: could not bring the series' reads forward")

    def _on_store(self, event: Event) -> Dataset:
        """Ingest one object; success only once it is stored and committed."""
        from sqlalchemy import exc as sa_exc

        from oncotriage.serving.db.base import utcnow
        from oncotriage.serving.intake import ingest

        with self._lock:
            association = self._associations.get(event.assoc)
        if association is None:  # cannot happen: the association was accepted for an AE title
            return store_status(FailureReason.NOT_AUTHORIZED, "calling AE title not recognised")
        principal = association.principal
        data = event.encoded_dataset(include_meta=True)
        if len(data) > self.settings.max_request_bytes:  # as a STOW-RS body over the limit
            return store_status(
                FailureReason.OUT_OF_RESOURCES,
                f"{len(data)} bytes: over the {self.settings.max_request_bytes}-byte limit "
                "per instance",
            )
        try:
            result = ingest(
                self.db, self.store, self._intake_settings, principal, [data], now=utcnow()
            )
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
            logger.warning("DICOM C-STORE: database unavailable: %s", str(error).splitlines()[0])
            return store_status(
                FailureReason.OUT_OF_RESOURCES,
                "database unavailable for a moment; nothing kept, send again",
            )
        except Exception:
            logger.exception("DICOM C-STORE failed")
            return store_status(
                FailureReason.PROCESSING_FAILURE, "the service failed to store it; send again"
            )
        outcome = result.outcomes[0]
        fields: dict[str, Any] = {
            "hospital_id": principal.hospital_id,
            "calling_ae_title": str(event.assoc.requestor.ae_title).strip(),
            "sop_instance_uid": outcome.sop_instance_uid,
        }
        if outcome.stored and outcome.study_id is not None:
            with self._lock:
                association.series.add((outcome.study_id, outcome.series_instance_uid))
            fields["study_id"] = outcome.study_id
            logger.debug("DICOM C-STORE kept", extra={"fields": fields})
            return store_status(None, "", outcome.warning)
        logger.warning("DICOM C-STORE refused: %s", outcome.message, extra={"fields": fields})
        return store_status(outcome.failure_reason, outcome.message)
