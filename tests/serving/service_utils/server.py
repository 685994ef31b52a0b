"""Run the real service on 127.0.0.1 (uvicorn in a thread) and talk to it over HTTP."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from oncotriage.serving.accounts import create_hospital, create_user, grant_licence, issue_token
from oncotriage.serving.app import create_app
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.session import Database
from oncotriage.serving.settings import Settings


@dataclass
class Service:
    """A running service with its accounts: ``tokens`` by account name."""

    url: str
    settings: Settings
    db: Database
    app: Any = None
    tokens: dict[str, str] = field(default_factory=dict)
    hospital_ids: dict[str, int] = field(default_factory=dict)

    def flush_audit(self) -> None:
        """Write the read events the service still holds in memory (they go in batches)."""
        self.app.state.audit.flush()

    def client(self, who: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def wait_for_study(
        self,
        study_id: str,
        who: str,
        *,
        statuses: tuple[str, ...] = ("triaged", "failed"),
        timeout_s: float = 60,
    ) -> dict[str, Any]:
        """Poll ``GET /v1/studies/{id}`` until its status is one of ``statuses``."""
        deadline = time.monotonic() + timeout_s
        with self.client(who) as client:
            while True:
                body: dict[str, Any] = (
                    client.get(f"/v1/studies/{study_id}").raise_for_status().json()
                )
                if body["status"] in statuses:
                    return body
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"study {study_id} still {body['status']} after {timeout_s} s"
                    )
                time.sleep(0.1)


def service_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test service: fast polling, short settle and backoff."""
    values: dict[str, Any] = {
        "environment": "test",
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "data_dir": data_dir,
        "database_url": db_url,
        "embedded_workers": 1,
        "worker_poll_interval_s": 0.05,
        "series_settle_s": 0.2,
        "job_backoff_base_s": 0.05,
        "job_backoff_max_s": 0.2,
        "webhook_backoff_base_s": 0.05,
        "webhook_backoff_max_s": 0.2,
        "register_demo_model": False,
        "ort_intra_op_threads": 1,
    }
    values.update(overrides)
    return Settings(**values)


def setup_accounts(
    db: Database, *, webhook_url: str | None = None
) -> tuple[dict[str, str], dict[str, int]]:
    """A centre with two community hospitals (A, B), another centre with hospital C,
    specialists ``spec1``/``spec2`` at the centre, ``spec_other`` at the other one (all three
    with a referral licence), ``spec_unlicensed`` at the centre (none), and an admin.
    """
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    with db.session() as session:
        ids["centre"] = create_hospital(session, "Centre", "centre").id
        ids["other_centre"] = create_hospital(session, "Other Centre", "centre").id
        ids["A"] = create_hospital(
            session,
            "Hospital A",
            centre="Centre",
            webhook_url=webhook_url,
            webhook_secret="whsec-test-hospital-a-secret" if webhook_url else None,
        ).id
        ids["B"] = create_hospital(session, "Hospital B", centre="Centre").id
        ids["C"] = create_hospital(session, "Hospital C", centre="Other Centre").id
        create_user(session, "spec1", "specialist", hospital="Centre")
        create_user(session, "spec2", "specialist", hospital="Centre")
        create_user(session, "spec_other", "specialist", hospital="Other Centre")
        create_user(session, "spec_unlicensed", "specialist", hospital="Centre")
        create_user(session, "root", "admin")
        now = utcnow()
        for user in ("spec1", "spec2", "spec_other"):
            grant_licence(session, user, now + timedelta(days=365), now=now)
        for name, hospital in (("A", "Hospital A"), ("B", "Hospital B"), ("C", "Hospital C")):
            tokens[name] = issue_token(session, hospital=hospital).token
        for user in ("spec1", "spec2", "spec_other", "spec_unlicensed", "root"):
            tokens[user] = issue_token(session, user=user).token
    return tokens, ids


@contextlib.contextmanager
def running_service(
    settings: Settings,
    *,
    accounts: bool = True,
    webhook_url: str | None = None,
    **create_kwargs: Any,
) -> Iterator[Service]:
    """The service on a free port of 127.0.0.1 for the duration of the ``with`` block."""
    app = create_app(settings, **create_kwargs)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    db = Database(settings.database_url)
    service = Service(url=f"http://127.0.0.1:{port}", settings=settings, db=db, app=app)
    try:
        if accounts:
            service.tokens, service.hospital_ids = setup_accounts(db, webhook_url=webhook_url)
        yield service
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        db.dispose()
        sock.close()


def stow(
    service: Service,
    who: str,
    payloads: list[bytes],
    *,
    study_uid: str | None = None,
    accept: str | None = None,
    boundary: str = "test-boundary-7d1f",
) -> httpx.Response:
    """POST a STOW-RS request built by hand (for bodies dicomweb-client would not send)."""
    from oncotriage.serving.dicomweb import encode_multipart

    body = encode_multipart(payloads, "application/dicom", boundary)
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    if accept:
        headers["Accept"] = accept
    path = f"/dicomweb/studies/{study_uid}" if study_uid else "/dicomweb/studies"
    with service.client(who) as client:
        return client.post(path, content=body, headers=headers)


def study_id_for(service: Service, who: str, study_uid: str) -> str:
    """The service's id of a hospital's study, by Study Instance UID."""
    with service.client(who) as client:
        params = {"study_instance_uid": study_uid}
        studies = client.get("/v1/studies", params=params).raise_for_status().json()
    if studies["count"] != 1:
        raise LookupError(study_uid)
    return str(studies["data"][0]["id"])


def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 30, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval_s)


def dicom_json_value(dataset: dict[str, Any], tag: str) -> Any:
    """First value of ``tag`` in a DICOM JSON object (None when absent)."""
    element = dataset.get(tag)
    if not element or "Value" not in element:
        return None
    return element["Value"]


def pretty(response: httpx.Response) -> str:
    try:
        return json.dumps(response.json(), indent=1)[:2000]
    except ValueError:
        return response.text[:2000]
