"""A first look without setup: demo accounts, their tokens and an example study.

``oncotriage serve --demo`` calls :func:`ensure_demo` before it starts. It is idempotent:
the accounts are made once, and their tokens are written once to files readable only by
the user who runs the service, under ``<data_dir>/demo/``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from oncotriage.serving.accounts import create_hospital, create_user, grant_licence, issue_token
from oncotriage.serving.db.base import utcnow
from oncotriage.serving.db.migrate import upgrade
from oncotriage.serving.db.models import Hospital
from oncotriage.serving.db.session import Database
from oncotriage.serving.enums import HospitalKind, Role
from oncotriage.serving.settings import Settings

logger = logging.getLogger(__name__)

DEMO_CENTRE = "Demo Cancer Centre"
DEMO_HOSPITAL = "Demo Community Hospital"
DEMO_SPECIALIST = "demo.specialist"
#: Seed of the example radiograph, drawn by generator version 2 as the bundled demo model's
#: training data; the model flags it with its top box on a nodule
#: (tests/web/test_first_look.py).
EXAMPLE_SEED = 2024
EXAMPLE_GENERATOR_VERSION = 2
#: Seed of the example low-dose CT, drawn by generator version 2 as the bundled 3D demo
#: model's training data (the radiograph's seed). The model flags it "suspicious" (the
#: radiograph is "urgent", so the worklist shows both bands) with its top box on the nodule,
#: as on the CTs of seeds 2025-2028 (models/demo_ct/MODEL_CARD.md;
#: tests/web/test_first_look.py checks the box).
EXAMPLE_CT_SEED = 2024


#: The demo's routes: the bundled radiograph model, and the bundled LDCT model when
#: ``models/demo_ct`` is there (registered from those folders on first run, see
#: :data:`oncotriage.serving.modelset.DEMO_BUNDLES`).
DEMO_ROUTES = {
    "cxr": ("models:/oncotriage-cxr2d@champion", "demo"),
    "ldct": ("models:/oncotriage-ct3d@champion", "demo_ct"),
}


def demo_model_routes(models_dir: Path | None = None) -> dict[str, str]:
    """Route -> model URI for every bundled demo model present in ``models_dir``
    (default: the package's ``models/``)."""
    from oncotriage.serving.inference import demo_bundle_dir

    routes: dict[str, str] = {}
    for route, (uri, dirname) in DEMO_ROUTES.items():
        folder = (models_dir / dirname) if models_dir is not None else demo_bundle_dir(dirname)
        if (folder / "model.onnx").is_file():
            routes[route] = uri
    return routes


@dataclass(frozen=True)
class DemoSetup:
    """Where a newcomer finds what the demo made.

    Attributes:
        folder: ``<data_dir>/demo``.
        hospital_token_file, specialist_token_file: bearer tokens, one per file (mode 0600).
        example_study: the example radiograph study's folder, ready to push.
        example_ct_study: the example low-dose CT study's folder (when the demo serves a CT
            model), ready to push.
        created: whether this call made the accounts (False when they already existed).
    """

    folder: Path
    hospital_token_file: Path
    specialist_token_file: Path
    example_study: Path
    created: bool
    example_ct_study: Path | None = None


def _write_secret(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")


def ensure_demo(settings: Settings) -> DemoSetup:
    """Make the demo centre, community hospital and specialist, their tokens and the examples
    (a radiograph, and a low-dose CT beside it when ``settings`` routes ``ldct``).

    Returns:
        where the tokens and the example study are.
    """
    from oncotriage.datasets.synth import write_example_study

    folder = settings.data_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    hospital_token_file = folder / "hospital.token"
    specialist_token_file = folder / "specialist.token"
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    created = False
    with db.session() as session:
        exists = session.scalar(sa.select(Hospital).where(Hospital.name == DEMO_CENTRE))
        if exists is None or not (hospital_token_file.exists() and specialist_token_file.exists()):
            if exists is None:
                create_hospital(session, DEMO_CENTRE, HospitalKind.CENTRE)
                create_hospital(session, DEMO_HOSPITAL, HospitalKind.COMMUNITY, centre=DEMO_CENTRE)
                create_user(
                    session,
                    DEMO_SPECIALIST,
                    Role.SPECIALIST,
                    hospital=DEMO_CENTRE,
                    display_name="Demo Specialist",
                )
                now = utcnow()  # the demo specialist may refer (a year's referral licence)
                grant_licence(session, DEMO_SPECIALIST, now + timedelta(days=365), now=now)
            hospital_token = issue_token(session, hospital=DEMO_HOSPITAL, label="demo").token
            specialist_token = issue_token(session, user=DEMO_SPECIALIST, label="demo").token
            _write_secret(hospital_token_file, hospital_token)
            _write_secret(specialist_token_file, specialist_token)
            created = True
    db.dispose()
    example = write_example_study(
        folder / "example",
        kind="cxr",
        seed=EXAMPLE_SEED,
        generator_version=EXAMPLE_GENERATOR_VERSION,
    )
    example_study = example.parent if example.is_file() else example
    example_ct: Path | None = None
    if "ldct" in settings.model_routes:
        example_ct = write_example_study(
            folder / "example-ct",
            kind="ldct",
            seed=EXAMPLE_CT_SEED,
            generator_version=EXAMPLE_GENERATOR_VERSION,
        )
    logger.info("demo accounts %s", "created" if created else "already there")
    return DemoSetup(
        folder, hospital_token_file, specialist_token_file, example_study, created, example_ct
    )
