"""The routing rule, table-tested: each series to the model whose intended use fits."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from oncotriage.models.intended import IntendedInputs
from oncotriage.serving.routing import (
    DEFAULT_ROUTE,
    Route,
    SeriesFacts,
    choose_ct_series,
    is_lung_kernel,
    parse_models,
    route_series,
)

CXR = Route(
    "cxr",
    "models:/oncotriage-cxr2d@champion",
    IntendedInputs(
        spatial_dims=2,
        modalities=["DX", "CR"],
        body_parts=["CHEST"],
        views=["PA", "AP"],
        min_pixel_spacing_mm=0.05,
        max_pixel_spacing_mm=1.0,
    ),
)
LDCT = Route(
    "ldct",
    "models:/oncotriage-ct3d@champion",
    IntendedInputs(
        spatial_dims=3,
        modalities=["CT"],
        body_parts=["CHEST"],
        min_pixel_spacing_mm=0.3,
        max_pixel_spacing_mm=1.5,
        min_slices=32,
        max_slice_thickness_mm=3.0,
    ),
)
ROUTES = [CXR, LDCT]


def dx(**kw: object) -> SeriesFacts:
    base: dict[str, object] = {
        "modality": "DX",
        "spatial_dims": 2,
        "body_part": "CHEST",
        "view": "PA",
        "pixel_spacing_mm": 0.14,
    }
    return SeriesFacts(**{**base, **kw})  # type: ignore[arg-type]


def ct(**kw: object) -> SeriesFacts:
    base: dict[str, object] = {
        "modality": "CT",
        "spatial_dims": 3,
        "body_part": "CHEST",
        "pixel_spacing_mm": 0.7,
        "slices": 120,
        "slice_thickness_mm": 1.25,
    }
    return SeriesFacts(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("series", "route", "reason"),
    [
        (dx(), "cxr", ""),
        (dx(modality="CR", view="AP"), "cxr", ""),
        (dx(body_part=None, view=None, pixel_spacing_mm=None), "cxr", ""),  # unknown: no veto
        (ct(), "ldct", ""),
        (ct(body_part=None, slice_thickness_mm=None), "ldct", ""),
        (
            SeriesFacts("MG", 2, "BREAST", "CC", 0.07),
            None,
            "no model for MG (the service reads DX/CR/CT)",
        ),
        (SeriesFacts("US", 2), None, "no model for US (the service reads DX/CR/CT)"),
        (
            SeriesFacts("", 2),
            None,
            "no model for a series without a modality (the service reads DX/CR/CT)",
        ),
        (dx(view="LL"), None, "the cxr model takes PA/AP views, not LL"),
        (dx(body_part="KNEE"), None, "the cxr model is for CHEST, not KNEE"),
        (dx(pixel_spacing_mm=2.0), None, "the cxr model takes 0.05-1 mm pixels, not 2 mm"),
        (
            dx(spatial_dims=3, slices=4),
            None,
            "the cxr model takes single images; the DX series is a volume",
        ),
        (
            ct(slices=1, spatial_dims=2),
            None,
            "the ldct model needs a volume; the CT series has 1 slice",
        ),
        (ct(slices=20), None, "the ldct model needs at least 32 slices, not 20"),
        (
            ct(slice_thickness_mm=5.0),
            None,
            "the ldct model takes slices up to 3 mm thick, not 5 mm",
        ),
        (ct(body_part="HEAD"), None, "the ldct model is for CHEST, not HEAD"),
    ],
)
def test_route_table(series: SeriesFacts, route: str | None, reason: str) -> None:
    decision = route_series(series, ROUTES)
    assert (decision.route.name if decision.route else None) == route
    if route is None:
        assert decision.reason.endswith(reason)
        assert decision.reason.startswith("no model for")
    else:
        assert decision.reason == ""


def test_first_fitting_route_in_configured_order_wins() -> None:
    other = Route("cxr-b", "models:/b@champion", CXR.reads)
    assert route_series(dx(), [other, CXR]).route == other
    assert route_series(dx(), [CXR, other]).route == CXR


def test_a_ct_route_alone_refuses_a_radiograph_by_modality() -> None:
    assert route_series(dx(), [LDCT]).reason == "no model for DX (the service reads CT)"


@pytest.mark.parametrize(
    ("kernel", "lung"),
    [
        ("LUNG", True),
        ("BONEPLUS", True),
        ("B70f", True),
        ("Br64", True),
        ("Bl57", True),
        ("FC52", True),
        ("YC", True),
        ("STANDARD", False),
        ("B30f", False),
        ("Br40", False),
        ("FC18", False),
        ("SOFT", False),
        (None, False),
        ("", False),
        ("STANDARD\\LUNG", True),
    ],
)
def test_lung_kernels(kernel: str | None, lung: bool) -> None:
    assert is_lung_kernel(kernel) is lung


def test_ct_series_choice() -> None:
    soft_thin = ct(series_uid="1.2.3", slice_thickness_mm=1.0, convolution_kernel="B30f")
    lung_thin = ct(series_uid="1.2.4", slice_thickness_mm=1.0, convolution_kernel="B70f")
    lung_thick = ct(series_uid="1.2.5", slice_thickness_mm=5.0, convolution_kernel="LUNG")
    unknown = ct(series_uid="1.2.6", slice_thickness_mm=None, slices=300)
    # thinnest first, then the lung kernel, whatever the arrival order
    for order in ([soft_thin, lung_thin, lung_thick, unknown], [unknown, lung_thick, lung_thin]):
        assert choose_ct_series(order).series_uid == "1.2.4"
    # thickness rounds to 0.1 mm before the kernel decides
    assert choose_ct_series([ct(series_uid="a", slice_thickness_mm=1.02), lung_thin]) == lung_thin
    # then more slices, then the smaller UID
    many = ct(series_uid="9", slices=200)
    few = ct(series_uid="1", slices=100)
    assert choose_ct_series([few, many]) == many
    assert choose_ct_series([ct(series_uid="2"), ct(series_uid="1")]).series_uid == "1"
    # unknown thickness only when nothing is known
    assert choose_ct_series([unknown, lung_thick]) == lung_thick
    # the route's fit comes first: a 5 mm lung series loses to a fitting 2 mm soft one, even
    # though without the route thinner would win anyway; a too-short thin series loses
    short_thin = ct(series_uid="7", slices=10, slice_thickness_mm=0.6)
    fitting = ct(series_uid="8", slice_thickness_mm=2.0)
    assert choose_ct_series([short_thin, fitting], LDCT) == fitting
    assert choose_ct_series([short_thin, fitting]) == short_thin
    # nothing fits: still a real series, so the refusal names one
    assert choose_ct_series([short_thin], LDCT) == short_thin
    with pytest.raises(ValueError):
        choose_ct_series([])


def test_series_facts_from_dicom_headers() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.PixelSpacing = [0.7, 0.68]
    ds.SliceThickness = "1.25"
    ds.ConvolutionKernel = "B70f"
    ds.SeriesInstanceUID = "1.2.840.1"
    facts = SeriesFacts.from_dataset(ds, slices=64)
    assert facts == SeriesFacts("CT", 3, "CHEST", None, 0.7, 64, 1.25, "B70F", "1.2.840.1")
    radiograph = Dataset()
    radiograph.Modality = "DX"
    radiograph.ViewPosition = "PA"
    radiograph.ImagerPixelSpacing = [0.143, 0.143]
    facts = SeriesFacts.from_dataset(radiograph)
    assert (facts.spatial_dims, facts.view, facts.pixel_spacing_mm) == (2, "PA", 0.143)
    assert facts.body_part is None and facts.slice_thickness_mm is None


def test_parse_models() -> None:
    assert parse_models(None, "models:/x@champion") == {DEFAULT_ROUTE: "models:/x@champion"}
    assert parse_models("  ", "/bundles/a") == {DEFAULT_ROUTE: "/bundles/a"}
    both = parse_models(
        '{"cxr": "models:/oncotriage-cxr2d@champion", "ldct": "models:/oncotriage-ct3d@champion"}',
        "ignored",
    )
    assert list(both) == ["cxr", "ldct"]  # order kept: it is the routing order
    assert both["ldct"] == "models:/oncotriage-ct3d@champion"
    for bad, message in [
        ("[1]", "non-empty JSON object"),
        ("{}", "non-empty JSON object"),
        ("{not json", "must be a JSON object"),
        ('{"CXR": "x"}', "lower-case"),
        ('{"cxr": ""}', "needs a model URI"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_models(bad, "x")


def test_a_spec_without_intended_inputs_routes_by_its_dimensionality() -> None:
    from pathlib import Path

    from oncotriage.models.spec import ModelSpec

    spec = ModelSpec.load(Path(__file__).resolve().parents[2] / "models" / "demo")
    route = Route.for_spec("cxr", "models:/oncotriage-cxr2d@champion", spec)
    assert route.spatial_dims == 2
    assert route_series(dx(), [route]).route == route
    reads = "(the service reads DX/CR)"
    assert route_series(SeriesFacts("MG", 2), [route]).reason == f"no model for MG {reads}"
    assert route_series(ct(), [route]).reason == f"no model for CT {reads}"
