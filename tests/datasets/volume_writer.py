"""Writing NIfTI and MetaImage test files with known geometry (the service only reads them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oncotriage.datasets.image import ImageVolume
from oncotriage.datasets.volume_io import volume_format

#: RAS (NIfTI) from LPS (DICOM) and back: the same flip of the first two axes.
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_volume_file(volume: ImageVolume, path: Path | str) -> Path:
    """Write ``volume`` as NIfTI or MetaImage (by suffix), keeping its LPS geometry.

    NIfTI gets the RAS affine ``diag(-1, -1, 1, 1) @ volume.affine`` (sform and qform,
    code 1 "scanner"); MetaImage gets origin, spacing and direction as they are. A 2D
    image keeps only the in-plane part of its geometry in MetaImage.

    Args:
        volume: the image to write (its float32 array is written as float32).
        path: target ``.nii``, ``.nii.gz``, ``.mhd`` or ``.mha``.

    Returns:
        ``path``.
    """
    path = Path(path)
    kind = volume_format(path)
    if kind is None:
        raise ValueError(f"{path.name}: use a .nii, .nii.gz, .mhd or .mha suffix")
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(volume.array, dtype=np.float32)
    if kind == "nifti":
        import nibabel as nib

        affine = _RAS_FROM_LPS @ volume.affine
        image = nib.Nifti1Image(array, affine)
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
        nib.save(image, str(path))
        return path
    import SimpleITK as sitk

    dims = volume.spatial_dims
    itk_image = sitk.GetImageFromArray(array.transpose())
    itk_image.SetSpacing([float(s) for s in volume.spacing])
    itk_image.SetOrigin([float(o) for o in volume.origin[:dims]])
    direction = np.asarray(volume.direction, dtype=float)[:dims, :dims]
    itk_image.SetDirection([float(v) for v in direction.ravel()])
    sitk.WriteImage(itk_image, str(path))
    return path
