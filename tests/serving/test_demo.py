"""``oncotriage serve --demo``: accounts, tokens that work, an example study; idempotent."""

from __future__ import annotations

import stat
from pathlib import Path

from service_utils.server import service_settings

from oncotriage.serving.db.session import Database
from oncotriage.serving.demo import DEMO_HOSPITAL, DEMO_SPECIALIST, ensure_demo
from oncotriage.serving.security import authenticate


def test_demo_accounts_tokens_and_example(tmp_path: Path) -> None:
    settings = service_settings(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path / "var")
    first = ensure_demo(settings)
    assert first.created
    hospital_token = first.hospital_token_file.read_text().strip()
    specialist_token = first.specialist_token_file.read_text().strip()
    assert stat.S_IMODE(first.hospital_token_file.stat().st_mode) == 0o600
    db = Database(settings.database_url)
    with db.session() as session:
        hospital = authenticate(session, hospital_token)
        specialist = authenticate(session, specialist_token)
        assert (hospital.kind, hospital.name) == ("hospital", DEMO_HOSPITAL)
        assert specialist.is_specialist
        assert specialist.name in {DEMO_SPECIALIST, "Demo Specialist"}
    db.dispose()
    example_files = sorted(first.example_study.rglob("*.dcm"))
    assert len(example_files) == 1

    again = ensure_demo(settings)
    assert not again.created
    assert again.hospital_token_file.read_text().strip() == hospital_token
    assert sorted(again.example_study.rglob("*.dcm")) == example_files
    assert again.example_ct_study is None  # no CT route: no CT example


def test_demo_routes_every_bundled_model_present(tmp_path: Path) -> None:
    from oncotriage.serving.demo import demo_model_routes

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "model.onnx").write_bytes(b"onnx")
    assert demo_model_routes(tmp_path) == {"cxr": "models:/oncotriage-cxr2d@champion"}
    (tmp_path / "demo_ct").mkdir()
    (tmp_path / "demo_ct" / "model.onnx").write_bytes(b"onnx")
    assert demo_model_routes(tmp_path) == {
        "cxr": "models:/oncotriage-cxr2d@champion",
        "ldct": "models:/oncotriage-ct3d@champion",
    }


def test_demo_with_a_ct_route_writes_a_ct_example_beside_the_radiograph(tmp_path: Path) -> None:
    import pydicom

    settings = service_settings(
        f"sqlite:///{tmp_path / 'demo.db'}",
        tmp_path / "var",
        models={
            "cxr": "models:/oncotriage-cxr2d@champion",
            "ldct": "models:/oncotriage-ct3d@champion",
        },
    )
    setup = ensure_demo(settings)
    assert setup.example_ct_study is not None
    slices = sorted(setup.example_ct_study.rglob("*.dcm"))
    assert len(slices) >= 16
    assert {pydicom.dcmread(path, stop_before_pixels=True).Modality for path in slices} == {"CT"}
    assert setup.example_ct_study.parent.parent == setup.example_study.parent.parent
