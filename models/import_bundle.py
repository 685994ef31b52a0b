"""``oncotriage import-bundle``: a MONAI Model Zoo detection bundle to an ONNX model bundle.

Reads a bundle in the Model Zoo layout (``configs/inference.json``, ``configs/metadata.json``,
``models/model.pt``, optionally ``models/model.ts``, ``LICENSE``) as published for
``lung_nodule_ct_detection``. The network, the ``RetinaNetDetector`` and its post-processing
are built by MONAI's own bundle parser (:class:`monai.bundle.ConfigParser`) from
``inference.json`` (``network_def``, ``detector``, ``detector_ops``, ``anchor_generator``),
the weights of ``models/model.pt`` are loaded into the network, and the result is exported
with :func:`oncotriage.models.export.export_onnx`. The spec carries the bundle's
preprocessing (``Orientationd`` axcodes, ``Spacingd`` pixdim, ``ScaleIntensityRanged``
window), anchors, box coder, box selector and sliding window, read back from the objects
MONAI built. Serving always resamples to the bundle's spacing, as the bundle's raw-LUNA16
path does (its default path expects volumes resampled beforehand).

Needs torch and MONAI (the ``train`` extra); serving the result does not.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncotriage.models.intended import IntendedInputs

logger = logging.getLogger(__name__)

INFERENCE_CONFIG = Path("configs") / "inference.json"
METADATA = Path("configs") / "metadata.json"
WEIGHTS = Path("models") / "model.pt"
TORCHSCRIPT = Path("models") / "model.ts"


class BundleError(ValueError):
    """The folder is not a MONAI detection bundle this importer can read."""


@dataclass
class ImportedBundle:
    """What :func:`import_bundle` read and wrote.

    Attributes:
        name: registry name (from the bundle's metadata ``name`` unless given).
        bundle_name, bundle_version, license: the bundle's own name, version and licence.
        onnx_path: the exported ``model.onnx``.
        registered_version: registry version, when registered.
        notes: things the importer chose that a user should know.
        reads: the series the service routes to it (``3D CT chest, at least 16 slices``).
    """

    name: str
    bundle_name: str
    bundle_version: str
    license: str
    onnx_path: Path
    registered_version: int | None = None
    notes: list[str] = field(default_factory=list)
    reads: str = ""


def slug(text: str) -> str:
    """``Lung nodule CT detection`` -> ``lung-nodule-ct-detection``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "monai-bundle"


def read_license(bundle: Path, metadata: dict[str, Any]) -> str:
    """The bundle's licence: metadata ``license`` if given, else the ``LICENSE`` file's title."""
    if metadata.get("license"):
        return str(metadata["license"])
    path = bundle / "LICENSE"
    if path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        title = " ".join(lines[:2]) if lines and lines[0].lower().endswith("license") else ""
        if title:
            return title
        if lines:
            return lines[0][:200]
    return "unknown (no LICENSE file and no license in configs/metadata.json)"


def parse_bundle(bundle: Path, device: str = "cpu") -> Any:
    """MONAI's ConfigParser over ``inference.json`` and ``metadata.json``, rooted at ``bundle``.

    ``bundle_root`` is the bundle folder and ``device`` is forced (CPU by default) so that
    building the network needs no GPU.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle)
    for rel in (INFERENCE_CONFIG, METADATA):
        if not (bundle / rel).is_file():
            raise BundleError(
                f"{bundle / rel} not found: a MONAI Model Zoo bundle has configs/inference.json, "
                "configs/metadata.json and models/model.pt"
            )
    parser = ConfigParser()
    parser.read_config(str(bundle / INFERENCE_CONFIG))
    parser.read_meta(str(bundle / METADATA))
    parser["bundle_root"] = str(bundle)
    parser["device"] = f"$torch.device('{device}')"
    for key in ("network_def", "detector", "anchor_generator"):
        if key not in parser:
            raise BundleError(
                f"{bundle / INFERENCE_CONFIG} has no '{key}': only RetinaNet detection bundles "
                "(like lung_nodule_ct_detection) can be imported"
            )
    return parser


def load_bundle_weights(network: Any, path: Path) -> None:
    """Load ``models/model.pt`` (a state dict, or ``{"model": state_dict}`` as CheckpointSaver
    writes) into ``network``; every key must match."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise BundleError(f"{path} is not a state dict")
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{path} does not fit the bundle's network_def: {exc}") from exc


def _preprocessing(parser: Any, spatial_dims: int, size_divisible: list[int]) -> dict[str, Any]:
    transforms = parser.get("preprocessing#transforms", [])
    out: dict[str, Any] = {"antialias": False, "size_divisible": size_divisible}
    for i, t in enumerate(transforms):
        target = str(t.get("_target_", "")).rsplit(".", 1)[-1]
        prefix = f"preprocessing#transforms#{i}"
        if target == "Orientationd" and spatial_dims == 3:
            out["orientation"] = str(parser.get_parsed_content(f"{prefix}#axcodes"))
        elif target == "Spacingd":
            pixdim = parser.get_parsed_content(f"{prefix}#pixdim")
            out["target_spacing"] = [float(v) for v in pixdim]
        elif target == "ScaleIntensityRanged":
            out["intensity"] = {
                "mode": "range",
                **{
                    k: float(parser.get_parsed_content(f"{prefix}#{k}"))
                    for k in ("a_min", "a_max", "b_min", "b_max")
                },
                "clip": bool(parser.get_parsed_content(f"{prefix}#clip")) if "clip" in t else False,
            }
    if "intensity" not in out:
        raise BundleError("the bundle's preprocessing has no ScaleIntensityRanged (HU window)")
    return out


def _backbone(network: Any) -> dict[str, Any]:
    """ResNet facts from the built network (the FPN keeps the stages up to the last used)."""
    from monai.networks.nets.resnet import ResNetBottleneck

    body = network.feature_extractor.body
    conv1 = body.conv1
    stage1 = list(body.layer1.children())
    if isinstance(stage1[0], ResNetBottleneck):
        depth = 50
    else:
        depth = {1: 10, 2: 18, 3: 34}[len(stage1)]
    return {
        "kind": "resnet",
        "depth": depth,
        "conv1_t_size": [int(k) for k in conv1.kernel_size],
        "conv1_t_stride": [int(s) for s in conv1.stride],
        "widen_factor": conv1.out_channels / 64.0,
        "bias_downsample": True,
    }


#: Model Zoo ``network_data_format`` modality names that are not DICOM Modality values
_MODALITY_NAMES = {
    "MRI": ["MR"],
    "X-RAY": ["DX", "CR"],
    "XRAY": ["DX", "CR"],
    "MAMMOGRAPHY": ["MG"],
}
#: words of a bundle's name, task and description that say which body part it reads, with the
#: DICOM Body Part Examined value; the first that occurs wins
_BODY_PART_WORDS = (
    (("lung", "chest", "thora", "pulmonar"), "CHEST"),
    (("breast", "mammo"), "BREAST"),
    (("brain", "head"), "HEAD"),
    (("liver", "pancrea", "spleen", "kidney", "abdom"), "ABDOMEN"),
    (("prostate",), "PROSTATE"),
)


def intended_inputs_from_metadata(
    metadata: dict[str, Any],
    spatial_dims: int,
    *,
    modalities: list[str] | None = None,
    body_parts: list[str] | None = None,
) -> IntendedInputs:
    """The series the service may route to an imported bundle, from its ``metadata.json``.

    The modality comes from ``network_data_format.inputs.image.modality`` (``CT``; ``MRI`` is
    DICOM's ``MR``). The zoo's metadata has no body-part field, so the body part is read from
    the words of its ``name``, ``task`` and ``description`` ("CT lung nodule detection":
    CHEST). ``modalities`` / ``body_parts`` (the CLI's ``--modality`` / ``--body-part``)
    override both. A bundle that says neither is refused rather than given a guess: the wrong
    intended inputs would send series to a model that was not made for them.

    Raises:
        BundleError: the metadata says no modality or no body part and none was given.
    """
    default = IntendedInputs.default_for(spatial_dims)
    if not modalities:
        inputs: dict[str, Any] = (metadata.get("network_data_format") or {}).get("inputs") or {}
        image: Any = inputs.get("image") or next(iter(inputs.values()), {}) or {}
        named = str(image.get("modality") or "").strip().upper() if isinstance(image, dict) else ""
        if not named:
            raise BundleError(
                "configs/metadata.json does not say which modality the bundle reads "
                "(network_data_format.inputs.image.modality); give it with --modality, e.g. CT"
            )
        modalities = _MODALITY_NAMES.get(named, [named])
    if not body_parts:
        words = " ".join(
            str(metadata.get(key) or "") for key in ("name", "task", "description")
        ).lower()
        body_parts = next(
            ([part] for stems, part in _BODY_PART_WORDS if any(s in words for s in stems)), None
        )
        if body_parts is None:
            raise BundleError(
                "configs/metadata.json does not say which body part the bundle reads (its name, "
                "task and description name none); give it with --body-part, e.g. CHEST"
            )
    return default.model_copy(
        update={
            "modalities": [m.strip().upper() for m in modalities],
            "body_parts": [b.strip().upper() for b in body_parts],
        }
    )


def _first(value: Any) -> float:
    """A float from a MONAI parameter that may be a per-axis sequence."""
    if isinstance(value, (list, tuple)):
        return float(value[0])
    return float(value)


def detector_config(
    parser: Any,
    name: str,
    description: str,
    metadata: dict[str, Any],
    *,
    modalities: list[str] | None = None,
    body_parts: list[str] | None = None,
) -> tuple[Any, Any]:
    """The parsed MONAI network and an equivalent :class:`DetectorConfig` for the spec.

    Everything is read back from what MONAI's parser built: the RetinaNet (levels, anchors,
    size_divisible, input channels), the detector after ``detector_ops`` (box selector,
    sliding window, box coder) and the ``anchor_generator`` section; the intended inputs
    from ``metadata`` (:func:`intended_inputs_from_metadata`, ``modalities`` / ``body_parts``
    overriding).
    """
    from oncotriage.models.config import DetectorConfig

    detector = parser.get_parsed_content("detector")
    if "detector_ops" in parser:
        parser.get_parsed_content("detector_ops")  # set_box_selector_parameters etc.
    network = detector.network
    spatial_dims = int(network.spatial_dims)
    body = network.feature_extractor.body
    returned = sorted(int(k.replace("layer", "")) for k in body.return_layers)
    fpn_channels = int(network.feature_extractor.out_channels)
    selector = detector.box_selector
    window = None
    inferer = getattr(detector, "inferer", None)
    if inferer is not None and hasattr(inferer, "roi_size"):
        window = {
            "roi_size": [int(v) for v in inferer.roi_size],
            "overlap": _first(inferer.overlap),
            "sw_batch_size": int(inferer.sw_batch_size),
            "mode": str(getattr(inferer.mode, "value", inferer.mode)),
            "sigma_scale": _first(inferer.sigma_scale),
            "padding_mode": str(getattr(inferer.padding_mode, "value", inferer.padding_mode)),
            "cval": float(inferer.cval),
        }
    size_divisible = [int(v) for v in network.size_divisible]
    cfg = DetectorConfig.model_validate(
        {
            "name": name,
            "description": description,
            "spatial_dims": spatial_dims,
            "in_channels": int(network.feature_extractor.body.conv1.in_channels),
            "num_classes": int(network.num_classes),
            "class_names": ["nodule"]
            if int(network.num_classes) == 1
            else [f"class_{i}" for i in range(int(network.num_classes))],
            "backbone": _backbone(network),
            "returned_layers": returned,
            "fpn_channels": fpn_channels,
            "base_anchor_shapes": [
                [float(v) for v in s]
                for s in parser.get_parsed_content("anchor_generator#base_anchor_shapes")
            ],
            "feature_map_scales": [
                float(v) for v in parser.get_parsed_content("anchor_generator#feature_map_scales")
            ],
            "box_coder_weights": [float(w) for w in detector.box_coder.weights],
            "preprocessing": _preprocessing(parser, spatial_dims, size_divisible),
            "postprocess": {
                "score_thresh": float(selector.score_thresh),
                "topk_candidates_per_level": int(selector.topk_candidates_per_level),
                "nms_thresh": float(selector.nms_thresh),
                "detections_per_img": int(selector.detections_per_img),
                "apply_sigmoid": bool(selector.apply_sigmoid),
            },
            "inference": {"sliding_window": window},
            "export": {"dynamic_spatial": spatial_dims == 3},
            "intended_inputs": intended_inputs_from_metadata(
                metadata, spatial_dims, modalities=modalities, body_parts=body_parts
            ).model_dump(),
        }
    )
    if cfg.num_anchors != int(network.num_anchors):
        raise BundleError(
            f"the bundle's network has {network.num_anchors} anchors per location but its "
            f"anchor_generator makes {cfg.num_anchors}"
        )
    return network, cfg


def import_bundle(
    bundle: Path,
    out: Path,
    *,
    name: str | None = None,
    register: bool = False,
    tracking_uri: str | None = None,
    modalities: list[str] | None = None,
    body_parts: list[str] | None = None,
) -> ImportedBundle:
    """Build a Model Zoo bundle's detector with MONAI, export it to ``out`` and optionally
    register it. ``modalities`` / ``body_parts`` override what the bundle's metadata says it
    reads (:func:`intended_inputs_from_metadata`).

    Raises:
        BundleError: if the folder is not a readable RetinaNet detection bundle.
    """
    from oncotriage.models.export import TRAINED_INTENDED_USE, export_onnx

    bundle = Path(bundle)
    weights = bundle / WEIGHTS
    if not weights.is_file():
        raise BundleError(
            f"{weights} not found: download the bundle's weights (models/model.pt) first"
        )
    parser = parse_bundle(bundle)
    metadata = json.loads((bundle / METADATA).read_text(encoding="utf-8"))
    bundle_name = str(metadata.get("name") or bundle.name)
    bundle_version = str(metadata.get("version", "unknown"))
    license_ = read_license(bundle, metadata)
    registry_name = name or slug(bundle_name)
    description = (
        f"MONAI bundle '{bundle_name}' v{bundle_version} ({license_}; "
        f"{metadata.get('copyright', 'no copyright line')}): {metadata.get('description', '')}"
    ).strip()
    network, cfg = detector_config(
        parser,
        registry_name,
        description,
        metadata,
        modalities=modalities,
        body_parts=body_parts,
    )
    load_bundle_weights(network, weights)
    notes = []
    if (bundle / TORCHSCRIPT).is_file():
        notes.append("models/model.ts present; the ONNX graph is traced from model.pt's weights")
    bundle_use = str(metadata.get("intended_use", "")).strip()
    intended_use = f"{TRAINED_INTENDED_USE} The bundle says: {bundle_use or 'nothing'}"
    onnx_path = export_onnx(
        network,
        cfg,
        Path(out),
        model_name=registry_name,
        version=bundle_version,
        intended_use=intended_use,
    )
    result = ImportedBundle(
        name=registry_name,
        bundle_name=bundle_name,
        bundle_version=bundle_version,
        license=license_,
        onnx_path=onnx_path,
        notes=notes,
        reads=cfg.intended_inputs.describe(),
    )
    if register:
        from oncotriage.models import registry

        result.registered_version = registry.register_bundle(
            Path(out),
            registry_name,
            tracking_uri=tracking_uri,
            tags={
                "monai_bundle.name": bundle_name,
                "monai_bundle.version": bundle_version,
                "monai_bundle.license": license_,
            },
            description=description,
        )
    return result
