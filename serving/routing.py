"""Which model scores a series: the explicit rule, and the CT series choice within a study.

Routes are named models (:func:`parse_models` reads ``ONCOTRIAGE_MODELS='{"cxr":
"models:/oncotriage-cxr2d@champion", "ldct": "models:/oncotriage-ct3d@champion"}'``, with
``ONCOTRIAGE_MODEL_URI`` as the one-model shorthand, route ``default``). The service holds
every route's model at once (:class:`oncotriage.serving.modelset.ModelSet`, one manager per
route, each following its own alias); the worker gives each series to the first route whose
model's intended use fits it (:func:`misfit`; this is the one rule, used by
:meth:`oncotriage.serving.modelset.ModelSet.for_image`). Each
model's spec states the images it reads (:class:`oncotriage.models.intended.IntendedInputs`,
``spec.reads``). A series goes to the FIRST route, in the configured order, whose intended use
fits it; the checks, in order:

1. modality is one of the model's ``modalities`` (DX, CR, CT, MG...);
2. dimensionality: a radiograph (one frame) for a 2D model, a volume for a 3D model;
3. body part, when the image states one (``BodyPartExamined``), is one of ``body_parts``;
4. view, when the image states one (``ViewPosition``) and the model lists views, is listed;
5. in-plane pixel spacing, when known, is inside the model's range;
6. a volume has at least ``min_slices`` slices;
7. slice thickness, when known, is at most ``max_slice_thickness_mm``.

A series no route fits is ``needs_manual_review`` at once, with the reason: "no model for
MG (the service reads ...)" when no model takes the modality, else why each model of that
modality refused it.
That is a permanent failure: retrying cannot make a model appear. Nothing is ever routine
because no model fitted.

CT series choice (several CT series in one study, e.g. a soft-tissue and a lung
reconstruction): among the series the route fits (all of them when none fits, so the
refusal names a real series), take

1. the thinnest slices (thickness rounded to 0.1 mm; unknown thickness after every known one),
2. then a lung (sharp) kernel when the kernel is known (:func:`is_lung_kernel`),
3. then the most slices,
4. then the smallest Series Instance UID (so the choice never depends on arrival order).

Pure functions, no database, no I/O: table-tested in tests/serving/test_routing.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oncotriage.models.intended import IntendedInputs

if TYPE_CHECKING:
    from oncotriage.datasets.image import ImageVolume
    from oncotriage.models.spec import ModelSpec

__all__ = [
    "DEFAULT_ROUTE",
    "ROUTING_TAGS",
    "Route",
    "RouteDecision",
    "SeriesChoice",
    "SeriesFacts",
    "choose_ct_series",
    "is_lung_kernel",
    "misfit",
    "parse_models",
    "route_series",
]

#: The header attributes :meth:`SeriesFacts.from_dataset` reads (enough to route a series
#: and to choose among a study's CT series, without its pixel data).
ROUTING_TAGS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NumberOfFrames",
    "SliceThickness",
    "ConvolutionKernel",
    "SeriesInstanceUID",
)

DEFAULT_ROUTE = "default"
"""Route name of the one model given by ``ONCOTRIAGE_MODEL_URI`` alone."""

_ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,39}$")
_LUNG_KERNEL = re.compile(
    r"LUNG|BONEPLUS|^B[RL]?[5-7]\d[A-Z]?$|^I[5-7]\d[A-Z]?$|^FC(5[0-9]|8[0-6])$|^Y[ABC]$|^L$",
)


@dataclass(frozen=True)
class SeriesFacts:
    """What routing needs to know about one series (from its DICOM header).

    Attributes:
        modality: DICOM Modality (``DX``, ``CT``, ``MG``...).
        spatial_dims: 2 for one image, 3 for a volume (several slices or a multi-frame CT).
        body_part: BodyPartExamined, ``None`` when the image does not say.
        view: ViewPosition (``PA``, ``AP``, ``LL``...), ``None`` when absent.
        pixel_spacing_mm: the larger in-plane pixel spacing, ``None`` when unknown.
        slices: slices in a volume (1 for a radiograph).
        slice_thickness_mm: SliceThickness, ``None`` when unknown.
        convolution_kernel: ConvolutionKernel (CT), ``None`` when unknown.
        series_uid: Series Instance UID.
    """

    modality: str
    spatial_dims: int
    body_part: str | None = None
    view: str | None = None
    pixel_spacing_mm: float | None = None
    slices: int = 1
    slice_thickness_mm: float | None = None
    convolution_kernel: str | None = None
    series_uid: str = ""

    @classmethod
    def from_dataset(cls, ds: Any, *, slices: int = 1, series_uid: str = "") -> SeriesFacts:
        """Facts from a pydicom dataset (one instance of the series) and its slice count."""
        modality = _text(ds.get("Modality")) or ""
        frames = _number(ds.get("NumberOfFrames"))
        count = max(int(slices), int(frames) if frames else 1)
        spacing: float | None = None
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = ds.get(keyword)
            if value is not None:
                try:
                    spacing = max(float(v) for v in value)
                except (TypeError, ValueError):
                    spacing = None
                if spacing is not None and spacing > 0:
                    break
                spacing = None
        kernel = ds.get("ConvolutionKernel")
        if kernel is not None and not isinstance(kernel, str):
            kernel = "\\".join(str(k) for k in kernel)
        return cls(
            modality=modality,
            spatial_dims=3 if count > 1 else 2,
            body_part=_text(ds.get("BodyPartExamined")),
            view=_text(ds.get("ViewPosition")),
            pixel_spacing_mm=spacing,
            slices=count,
            slice_thickness_mm=_number(ds.get("SliceThickness")),
            convolution_kernel=_text(kernel),
            series_uid=series_uid or str(ds.get("SeriesInstanceUID") or ""),
        )

    @classmethod
    def from_image(cls, image: ImageVolume, header: Any | None = None) -> SeriesFacts:
        """Facts of a decoded series: modality, dimensionality, slices and in-plane spacing
        from the image (what the model would get), the rest from ``header`` (one instance's
        dataset, pixel data not needed) when given."""
        stated = cls.from_dataset(header) if header is not None else None
        slices = int(image.array.shape[2]) if image.spatial_dims == 3 else 1
        spacing = max(float(v) for v in image.spacing[:2])
        return cls(
            modality=(image.modality or (stated.modality if stated else "")).upper(),
            spatial_dims=image.spatial_dims,
            body_part=stated.body_part if stated else None,
            view=stated.view if stated else None,
            pixel_spacing_mm=spacing if spacing > 0 else None,
            slices=slices,
            slice_thickness_mm=stated.slice_thickness_mm if stated else None,
            convolution_kernel=stated.convolution_kernel if stated else None,
            series_uid=image.series_uid or (stated.series_uid if stated else ""),
        )


def _text(value: Any) -> str | None:
    text = str(value).strip().upper() if value is not None else ""
    return text or None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


@dataclass(frozen=True)
class Route:
    """One configured model: its route name, URI, dimensionality and intended use."""

    name: str
    uri: str
    reads: IntendedInputs

    @property
    def spatial_dims(self) -> int:
        return self.reads.spatial_dims

    @classmethod
    def for_spec(cls, name: str, uri: str, spec: ModelSpec) -> Route:
        """The route of a loaded model (the images its spec says it reads)."""
        return cls(name=name, uri=uri, reads=spec.reads)


@dataclass(frozen=True)
class RouteDecision:
    """Where a series goes: ``route`` when a model fits, else ``reason`` (for the
    radiographer, stored as the study's failure message) and ``route`` is ``None``."""

    route: Route | None
    reason: str = ""


@dataclass(frozen=True)
class SeriesChoice:
    """Which series of a study a volume job's series competes with is scored: ``chosen``
    (a series id), the ids ``passed_over``, and the ``reason`` a passed-over job records."""

    chosen: int
    passed_over: tuple[int, ...] = ()
    reason: str = ""


def _fmt(value: float) -> str:
    return f"{value:g}"


def misfit(route: Route, series: SeriesFacts) -> str | None:
    """Why ``series`` is outside ``route``'s intended use, or ``None`` when it fits."""
    scope = route.reads
    who = f"the {route.name} model"
    modality = series.modality.upper()
    if modality not in scope.modalities:
        return f"{who} takes {'/'.join(scope.modalities)}, not {modality or 'no modality'}"
    if series.spatial_dims != route.spatial_dims:
        if route.spatial_dims == 3:
            return f"{who} needs a volume; the {modality} series has {series.slices} slice"
        return f"{who} takes single images; the {modality} series is a volume"
    if series.body_part is not None and series.body_part not in scope.body_parts:
        return f"{who} is for {'/'.join(scope.body_parts)}, not {series.body_part}"
    if series.view is not None and scope.views and series.view not in scope.views:
        return f"{who} takes {'/'.join(scope.views)} views, not {series.view}"
    spacing = series.pixel_spacing_mm
    if spacing is not None:
        low, high = scope.min_pixel_spacing_mm, scope.max_pixel_spacing_mm
        if (low is not None and spacing < low) or (high is not None and spacing > high):
            return (
                f"{who} takes {_fmt(low or 0)}-{_fmt(high) if high else 'any'} mm pixels, "
                f"not {_fmt(spacing)} mm"
            )
    if route.spatial_dims == 3 and scope.min_slices is not None:
        if series.slices < scope.min_slices:
            return f"{who} needs at least {scope.min_slices} slices, not {series.slices}"
    thickness = series.slice_thickness_mm
    if thickness is not None and scope.max_slice_thickness_mm is not None:
        if thickness > scope.max_slice_thickness_mm:
            return (
                f"{who} takes slices up to {_fmt(scope.max_slice_thickness_mm)} mm thick, "
                f"not {_fmt(thickness)} mm"
            )
    return None


def route_series(series: SeriesFacts, routes: Sequence[Route]) -> RouteDecision:
    """The first route (configured order) whose intended use fits ``series``, or the reason
    none does (see the module docstring)."""
    refusals: list[str] = []
    for route in routes:
        reason = misfit(route, series)
        if reason is None:
            return RouteDecision(route)
        if series.modality.upper() in route.reads.modalities:
            refusals.append(reason)
    modality = series.modality.upper() or "a series without a modality"
    if not refusals:
        served = "/".join(dict.fromkeys(m for route in routes for m in route.reads.modalities))
        return RouteDecision(None, f"no model for {modality} (the service reads {served})")
    return RouteDecision(None, f"no model for this {modality} series: " + "; ".join(refusals))


def is_lung_kernel(kernel: str | None) -> bool:
    """Whether a ConvolutionKernel names a lung/sharp reconstruction (GE LUNG/BONEPLUS,
    Siemens B/Br/Bl/I 50-79, Canon FC50-59/FC80-86, Philips YA/YB/YC/L)."""
    if not kernel:
        return False
    return any(_LUNG_KERNEL.search(part.strip().upper()) for part in kernel.split("\\"))


def choose_ct_series(candidates: Sequence[SeriesFacts], route: Route | None = None) -> SeriesFacts:
    """The CT series of a study to score (the rule in the module docstring).

    Raises:
        ValueError: when ``candidates`` is empty.
    """
    if not candidates:
        raise ValueError("a study without a series has nothing to choose from")
    pool = list(candidates)
    if route is not None:
        fitting = [s for s in pool if misfit(route, s) is None]
        pool = fitting or pool

    def key(series: SeriesFacts) -> tuple[int, float, int, int, str]:
        thickness = series.slice_thickness_mm
        known = 0 if thickness is not None else 1
        return (
            known,
            round(thickness, 1) if thickness is not None else 0.0,
            0 if is_lung_kernel(series.convolution_kernel) else 1,
            -series.slices,
            series.series_uid,
        )

    return min(pool, key=key)


def parse_models(models: str | Mapping[str, str] | None, model_uri: str) -> dict[str, str]:
    """Route name -> model URI from ``ONCOTRIAGE_MODELS`` (a JSON object, or a mapping), or
    ``{"default": model_uri}`` when it is unset or empty.

    Raises:
        ValueError: not a JSON object of ``name: URI`` with lower-case names.
    """
    if models is None or (isinstance(models, str) and not models.strip()):
        if not model_uri.strip():
            raise ValueError("set ONCOTRIAGE_MODELS or ONCOTRIAGE_MODEL_URI")
        return {DEFAULT_ROUTE: model_uri.strip()}
    if isinstance(models, str):
        try:
            parsed = json.loads(models)
        except json.JSONDecodeError as exc:
            raise ValueError(
                "ONCOTRIAGE_MODELS must be a JSON object such as "
                '{"cxr": "models:/oncotriage-cxr2d@champion"}: ' + str(exc)
            ) from exc
    else:
        parsed = dict(models)
    if not isinstance(parsed, dict) or not parsed:
        raise ValueError("ONCOTRIAGE_MODELS must be a non-empty JSON object of name: model URI")
    routes: dict[str, str] = {}
    for name, uri in parsed.items():
        if not isinstance(name, str) or not _ROUTE_NAME.match(name):
            raise ValueError(
                f"route name {name!r}: use lower-case letters, digits, '-' or '_' (e.g. 'cxr')"
            )
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError(f"route {name!r} needs a model URI (models:/NAME@ALIAS or a folder)")
        routes[name] = uri.strip()
    return routes
