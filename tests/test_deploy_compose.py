"""docker-compose.scale.yml: its structure, and its env vars against the Settings class.

There is no Docker engine here; this checks what can be checked without one.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from oncotriage.serving.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.scale.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_service_the_doc_names_exists() -> None:
    services = _compose()["services"]
    assert {"postgres", "seaweedfs", "mlflow", "triton", "api", "worker"} <= set(services)
    doc = (REPO / "docs" / "deploy.md").read_text()
    section = doc.split("## Many hosts", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`compose: (\w[\w-]*)`", section))
    assert named >= {"postgres", "seaweedfs", "mlflow", "triton", "api", "worker"}
    assert named <= set(services)


def test_oncotriage_env_vars_are_settings() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    compose = _compose()
    used: set[str] = set()
    for service in compose["services"].values():
        for key in service.get("environment") or {}:
            if key.startswith("ONCOTRIAGE_"):
                used.add(key)
    assert used, "no ONCOTRIAGE_ variables: the merge key (<<) was not resolved"
    unknown = {key for key in used if key.removeprefix("ONCOTRIAGE_") not in fields}
    assert unknown == set()
    # Workers on other hosts need every network service from the environment.
    worker = compose["services"]["worker"]["environment"]
    for key in (
        "ONCOTRIAGE_DATABASE_URL",
        "ONCOTRIAGE_STORE_URL",
        "ONCOTRIAGE_S3_ENDPOINT_URL",
        "ONCOTRIAGE_MLFLOW_TRACKING_URI",
        "ONCOTRIAGE_TRITON_URL",
    ):
        assert worker[key], key
    assert worker["ONCOTRIAGE_STORE_URL"].startswith("s3://")


def test_workers_share_no_data_volume_and_volumes_are_declared() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)
    worker_mounts = [m.split(":")[1] for m in compose["services"]["worker"]["volumes"]]
    assert "/var/lib/oncotriage" not in worker_mounts
    depends = compose["services"]["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert (REPO / "configs/scale/postgres-init.sql").is_file()
