"""PostgreSQL restarted while studies flow: nothing accepted is lost, and the service
recovers by itself (no restart of its own). The database is a private server the test starts
(initdb on a free port of 127.0.0.1), never the shared one."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from service_utils.dicom import dx_instance, to_bytes
from service_utils.factories import service_factory_for
from service_utils.private_postgres import private_postgres
from service_utils.server import stow, study_id_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STUDIES = 24
SPREAD_S = 0.25  # a new study every 250 ms, before, during and after the restart


def _send_until_accepted(service, data: bytes, deadline: float) -> int:
    """Send as a PACS would: a 503 (database unavailable) or a dropped connection is retried
    after a pause; anything else is the answer."""
    while True:
        try:
            answer = stow(service, "A", [data])
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code != 503:
            return answer.status_code
        if time.monotonic() > deadline:
            raise AssertionError("the service did not take the study again within the deadline")
        time.sleep(0.3)


def test_postgres_restart_while_studies_flow(postgres_url, flagging_bundle, tmp_path) -> None:
    # postgres_url: this test needs PostgreSQL installed (and under CI=true must run)
    root = Path(tempfile.mkdtemp(prefix="oncotriage-pg-"))
    root.chmod(0o755)
    try:
        with private_postgres(root) as database:
            factory = service_factory_for(database.url, tmp_path)
            with factory(model_uri=str(flagging_bundle), job_lease_s=3.0) as service:
                instances = [dx_instance(500 + case) for case in range(STUDIES)]
                answers: dict[int, int] = {}
                deadline = time.monotonic() + 120

                def sender() -> None:
                    for case, instance in enumerate(instances):
                        answers[case] = _send_until_accepted(service, to_bytes(instance), deadline)
                        time.sleep(SPREAD_S)

                thread = threading.Thread(target=sender)
                thread.start()
                time.sleep(SPREAD_S * STUDIES / 3)
                database.stop("fast")  # connections cut mid-flow
                with service.client() as client:
                    during = client.get("/readyz").status_code
                time.sleep(2.0)
                database.start()
                thread.join(timeout=150)
                assert not thread.is_alive()
                assert during == 503  # readiness said so while the database was down
                assert sorted(answers.values()) == [200] * STUDIES, answers
                for instance in instances:  # every accepted study is triaged, once
                    study_id = study_id_for(service, "A", instance.StudyInstanceUID)
                    study = service.wait_for_study(study_id, "A", timeout_s=90)
                    assert study["status"] == "triaged", study
                with service.client("A") as client:
                    listed = client.get("/v1/studies", params={"limit": 100}).json()
                assert listed["count"] == STUDIES
                with service.client() as client:
                    assert client.get("/readyz").status_code == 200
    finally:
        shutil.rmtree(root, ignore_errors=True)
