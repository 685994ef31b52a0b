"""End to end: the service scores through Triton; studies sent while it is down all get triaged.

Uses the service test helpers of ``tests/serving/service_utils`` (a real uvicorn service on
127.0.0.1 with SQLite) and the session ``tritonserver``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from oncotriage.models.spec import ModelSpec
from oncotriage.serving.triton.backend import make_runner_factory
from oncotriage.serving.triton.server import TritonServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))  # service_utils

from service_utils.dicom import dx_instance, to_bytes  # noqa: E402
from service_utils.server import running_service, service_settings, stow, study_id_for  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.slow]

STUDIES = 4


def flagging_bundle(base: Path, out: Path) -> Path:
    """``base`` renamed, with score threshold 0 and thresholds making every study suspicious."""
    shutil.copytree(base, out)
    spec = ModelSpec.load(out)
    spec = spec.model_copy(
        update={
            "name": "tiny-2d-service",
            "version": "1",
            "postprocess": spec.postprocess.model_copy(
                update={"score_thresh": 0.0, "detections_per_img": 3}
            ),
            "thresholds": spec.thresholds.model_copy(
                update={"operating": 0.0, "urgent": 1.0, "calibrated": True}  # chosen here
            ),
        }
    )
    spec.save(out)
    return out


def test_studies_sent_while_triton_is_down_are_all_triaged_after_it_returns(
    running_triton: TritonServer,
    triton_repository: Path,
    tiny_bundles: dict[int, Path],
    tmp_path: Path,
) -> None:
    server = running_triton
    bundle = flagging_bundle(tiny_bundles[1], tmp_path / "bundle")
    settings = service_settings(
        f"sqlite:///{tmp_path / 'oncotriage.db'}",
        tmp_path / "var",
        model_uri=str(bundle),
        inference_backend="triton",
        triton_url=server.grpc_url,
        triton_model_repository=triton_repository,
        embedded_workers=2,
    )
    # ~2 minutes of patience per inference call while Triton is away.
    factory = make_runner_factory(settings, flavor="portable", retries=40, backoff=0.2)
    with running_service(settings, runner_factory=factory) as service:
        first = dx_instance(900)
        assert stow(service, "A", [to_bytes(first)]).status_code == 200
        study = service.wait_for_study(study_id_for(service, "A", first.StudyInstanceUID), "A")
        assert (study["status"], study["model_version"]) == ("triaged", "1")

        server.stop()
        instances = [dx_instance(901 + i) for i in range(STUDIES)]
        for instance in instances:  # intake keeps accepting while the detector is away
            assert stow(service, "A", [to_bytes(instance)]).status_code == 200
        time.sleep(1.0)
        with service.client("A") as client:
            pending = [
                s["status"]
                for s in client.get("/v1/studies", params={"limit": 50}).json()["data"]
                if s["study_instance_uid"] != first.StudyInstanceUID
            ]
        assert len(pending) == STUDIES
        assert not {"triaged", "failed", "needs_manual_review"} & set(pending), pending
        server.start()

        results = [
            service.wait_for_study(
                study_id_for(service, "A", instance.StudyInstanceUID), "A", timeout_s=180
            )
            for instance in instances
        ]
    assert [r["status"] for r in results] == ["triaged"] * STUDIES
    assert {(r["model_name"], r["model_version"]) for r in results} == {("tiny-2d-service", "1")}
    assert [r["priority"] for r in results] == ["suspicious"] * STUDIES
