"""The HTTP contract the OpenAPI description promises: 406, OPTIONS, documented errors, one
422 shape (what a hostile or clumsy client found apart, each asserted on the live service)."""

from __future__ import annotations

import pytest
from service_utils.dicom import dx_instance, to_bytes
from service_utils.server import stow, study_id_for


@pytest.fixture
def service(sqlite_service_factory, flagging_bundle):
    with sqlite_service_factory(model_uri=str(flagging_bundle)) as running:
        yield running


def test_accept_that_names_nothing_the_route_produces_is_406(service) -> None:
    instance = dx_instance(90)
    stow(service, "A", [to_bytes(instance)]).raise_for_status()
    study_id = study_id_for(service, "A", instance.StudyInstanceUID)
    service.wait_for_study(study_id, "A")
    with service.client("A") as client:
        for path, accept, expected in [
            ("/v1/studies", "application/xml", 406),
            ("/v1/studies", "text/html", 406),
            ("/v1/studies", "application/json", 200),
            ("/v1/studies", "application/*", 200),
            ("/v1/studies", "*/*", 200),
            ("/v1/studies", "application/xml, application/json;q=0.5", 200),
            ("/v1/studies", "application/json;q=0", 406),
            (f"/v1/studies/{study_id}/render.png", "application/json", 406),
            (f"/v1/studies/{study_id}/render.png", "image/*", 200),
            (f"/v1/studies/{study_id}/report.dcm", "application/dicom", 200),
            (f"/v1/studies/{study_id}/report.dcm", "application/json", 406),
            ("/healthz", "application/xml", 406),
        ]:
            answer = client.get(path, headers={"Accept": accept})
            assert answer.status_code == expected, (path, accept, answer.text)
            if expected == 406:
                assert "the Accept header asked for" in answer.json()["detail"]
    # STOW-RS answers DICOM JSON or XML; plain application/json and application/xml name them
    for accept, expected in [
        ("application/dicom+xml", 200),
        ("application/xml", 200),
        ("application/json", 200),
        ("text/plain", 406),
    ]:
        again = stow(service, "A", [to_bytes(dx_instance(91))], accept=accept)
        assert again.status_code in ((200, 409) if expected == 200 else (406,)), accept


def test_options_lists_the_methods_of_the_path(service) -> None:
    with service.client() as client:
        for path, allow in [
            ("/dicomweb/studies", "GET, OPTIONS, POST"),  # QIDO-RS and STOW-RS
            ("/v1/studies", "GET, OPTIONS, POST"),
            ("/v1/studies/abc", "GET, OPTIONS"),
            ("/healthz", "GET, OPTIONS"),
        ]:
            answer = client.options(path)
            assert (answer.status_code, answer.headers["allow"]) == (204, allow), path
        assert client.options("/no/such/path").status_code == 404


def test_window_must_be_finite_and_every_422_has_one_shape(service) -> None:
    instance = dx_instance(92)
    stow(service, "A", [to_bytes(instance)]).raise_for_status()
    study_id = study_id_for(service, "A", instance.StudyInstanceUID)
    service.wait_for_study(study_id, "A")
    with service.client("A") as client:
        for query in ["window=nan,nan", "window=40,inf", "window=40,0", "window=a,b", "size=3"]:
            answer = client.get(f"/v1/studies/{study_id}/render.png?{query}")
            assert answer.status_code == 422, (query, answer.text)
            [error] = answer.json()["detail"]
            assert {"type", "loc", "msg"} <= set(error), query
        assert client.get(f"/v1/studies/{study_id}/render.png?window=40,400").status_code == 200


def test_openapi_documents_the_errors_each_operation_gives(service) -> None:
    with service.client() as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"401", "403", "404", "406", "413", "409"} <= set(
        paths["/v1/studies/{study_id}/review"]["post"]["responses"]
    )
    assert {"401", "406", "413", "415"} <= set(paths["/dicomweb/studies"]["post"]["responses"])
    assert {"401", "403", "404", "406"} <= set(
        paths["/v1/studies/{study_id}/render.png"]["get"]["responses"]
    )
    assert "401" not in paths["/healthz"]["get"]["responses"]
    invalid = paths["/v1/studies/{study_id}/render.png"]["get"]["responses"]["422"]
    assert invalid["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ValidationErrorsPublic"
    )
