"""Box-aware training augmentation and the torch dataset that applies it (MONAI, torch).

As in MONAI's detection tutorial (``generate_detection_train_transform``): random crops
centred on a lesion or on background by a positive/negative ratio
(``RandCropBoxByPosNegLabeld``), zoom (``RandZoomBoxd``), boxes clipped to the crop
(``ClipBoxToImaged``), flips on every axis (``RandFlipBoxd``), rotations by 90 degrees in
the first two axes (``RandRotateBox90d``) and intensity noise, blur, scaling, shifting and
contrast. Images arrive already preprocessed by the model's numpy preprocessing
(:mod:`oncotriage.training.data`).

Coordinate convention: our boxes put voxel ``i``'s centre at ``i`` (its edges at
``i +- 0.5``); MONAI's box transforms put voxel ``i`` on ``[i, i + 1)`` (a flip maps ``x``
to ``size - x``). Boxes are shifted by ``+0.5`` before the MONAI transforms and back
after, so flips and rotations are exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.apps.detection.transforms.dictionary import (
    ClipBoxToImaged,
    RandCropBoxByPosNegLabeld,
    RandFlipBoxd,
    RandRotateBox90d,
    RandZoomBoxd,
)
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch.utils.data import Dataset

from oncotriage.training.config import AugmentationConfig
from oncotriage.training.data import DetectionSample

IMAGE_KEY = "image"
BOX_KEY = "box"
LABEL_KEY = "label"
_HALF_VOXEL = 0.5


def build_train_transform(
    spatial_dims: int,
    patch_size: Sequence[int],
    augmentation: AugmentationConfig,
    *,
    samples_per_image: int = 1,
    pos: float = 1.0,
    neg: float = 1.0,
) -> Compose:
    """The random training transform for dicts ``{"image": (C,*S), "box": (N,2D), "label": (N,)}``.

    Boxes must be in MONAI's edge convention here (see the module docstring); the
    :class:`AugmentedDetectionDataset` does the shift.

    Returns:
        a ``Compose`` whose call returns a list of ``samples_per_image`` dicts.
    """
    aug = augmentation
    keys: dict[str, Any] = {"image_keys": IMAGE_KEY, "box_keys": BOX_KEY}
    ref: dict[str, Any] = {"box_ref_image_keys": IMAGE_KEY}
    transforms: list[Any] = [
        RandCropBoxByPosNegLabeld(
            **keys,
            label_keys=LABEL_KEY,
            spatial_size=list(patch_size),
            whole_box=True,
            num_samples=samples_per_image,
            pos=pos,
            neg=neg,
            allow_smaller=True,
        ),
        RandZoomBoxd(
            **keys,
            **ref,
            prob=aug.zoom_prob,
            min_zoom=aug.min_zoom,
            max_zoom=aug.max_zoom,
            padding_mode="constant",
            keep_size=True,
        ),
        ClipBoxToImaged(box_keys=BOX_KEY, label_keys=LABEL_KEY, **ref, remove_empty=True),
    ]
    transforms += [
        RandFlipBoxd(**keys, **ref, prob=aug.flip_prob, spatial_axis=axis)
        for axis in range(spatial_dims)
    ]
    transforms += [
        RandRotateBox90d(**keys, **ref, prob=aug.rotate90_prob, max_k=3, spatial_axes=(0, 1)),
        RandGaussianNoised(
            keys=IMAGE_KEY, prob=aug.gaussian_noise_prob, mean=0.0, std=aug.gaussian_noise_std
        ),
        RandGaussianSmoothd(
            keys=IMAGE_KEY,
            prob=aug.gaussian_smooth_prob,
            sigma_x=(0.5, 1.0),
            sigma_y=(0.5, 1.0),
            sigma_z=(0.5, 1.0),
        ),
        RandScaleIntensityd(
            keys=IMAGE_KEY, prob=aug.scale_intensity_prob, factors=aug.scale_intensity_factor
        ),
        RandShiftIntensityd(
            keys=IMAGE_KEY, prob=aug.shift_intensity_prob, offsets=aug.shift_intensity_offset
        ),
        RandAdjustContrastd(
            keys=IMAGE_KEY, prob=aug.adjust_contrast_prob, gamma=aug.adjust_contrast_gamma
        ),
    ]
    return Compose(transforms)


class AugmentedDetectionDataset(Dataset):
    """Random crops of preprocessed samples, for ``torch.utils.data.DataLoader``.

    ``dataset[i]`` returns a list of ``samples_per_image`` dicts with ``image`` ``(C, *P)``
    float32, ``box`` ``(N, 2D)`` float32 (our centre convention, network-input voxels of
    the crop) and ``label`` ``(N,)`` int64. Use :func:`collate_crops` to batch them.

    Args:
        samples: preprocessed images with boxes.
        transform: from :func:`build_train_transform`.
        seed: seeds the transform's random state (each worker adds its id).
    """

    def __init__(self, samples: Sequence[DetectionSample], transform: Compose, seed: int) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.seed = int(seed)
        self.transform.set_random_state(seed=self.seed)

    def __len__(self) -> int:
        return len(self.samples)

    def reseed(self, seed: int) -> None:
        """Reset the random state (per epoch and per data-loading worker)."""
        self.transform.set_random_state(seed=int(seed) % (2**32))

    def __getitem__(self, index: int) -> list[dict[str, torch.Tensor]]:
        sample = self.samples[index]
        data = {
            IMAGE_KEY: torch.from_numpy(sample.image),
            BOX_KEY: torch.from_numpy(sample.boxes + np.float32(_HALF_VOXEL)),
            LABEL_KEY: torch.from_numpy(sample.labels),
        }
        with warnings.catch_warnings():
            # negatives have no foreground to centre a crop on; MONAI warns every time
            warnings.filterwarnings("ignore", message="Num foregrounds 0")
            crops = self.transform(data)
        if isinstance(crops, dict):
            crops = [crops]
        return [
            {
                IMAGE_KEY: torch.as_tensor(crop[IMAGE_KEY], dtype=torch.float32).as_subclass(
                    torch.Tensor
                ),
                BOX_KEY: torch.as_tensor(crop[BOX_KEY], dtype=torch.float32).reshape(
                    -1, sample.boxes.shape[1]
                )
                - _HALF_VOXEL,
                LABEL_KEY: torch.as_tensor(crop[LABEL_KEY], dtype=torch.long).reshape(-1),
            }
            for crop in crops
        ]


def collate_crops(
    batch: Sequence[list[dict[str, torch.Tensor]]],
) -> list[dict[str, torch.Tensor]]:
    """Flatten the crop lists of several images into one list (crops differ in box count)."""
    return [crop for crops in batch for crop in crops]


def worker_init(worker_id: int) -> None:
    """Give each data-loading worker its own random stream."""
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, AugmentedDetectionDataset):
        info.dataset.reseed(info.seed)
