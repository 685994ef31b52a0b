"""How a version-2 synthetic CT is acquired: vendor headers, kernels, slices, dose and noise.

A case draws a vendor profile (its header values, kernel names, kVp settings, in-plane spacing,
stored value encoding), one of that vendor's reconstruction kernels, a slice thickness and
spacing, and a dose. The kernel's class (soft, standard, sharp) sets the in-plane blur and the
noise texture; the noise SD follows the usual CT scaling: ``1/sqrt(CTDIvol)``,
``1/sqrt(thickness)``, ``1/sqrt(kVp)`` (at the same CTDIvol), times the kernel's own level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage

from oncotriage.datasets.dicom_writer import MANUFACTURER, ds_round, ds_value
from oncotriage.datasets.synth_ldct import CtGrid
from oncotriage.datasets.synth_ldct_objects import BLUR_TRUNCATE, ScannerBlur

SLICE_THICKNESSES_MM = (1.0, 1.25, 2.0, 2.5)
#: the CT number range a scanner writes
HU_RANGE = (-1024.0, 3071.0)


@dataclass(frozen=True)
class KernelClass:
    """What a reconstruction kernel does: in-plane blur and noise at the reference protocol.

    Attributes:
        psf_mm: in-plane Gaussian PSF sigma.
        noise_hu: noise SD at CTDIvol 1.5 mGy, 1.25 mm slices, 120 kVp.
        sharpen: edge enhancement (see :class:`ScannerBlur`).
    """

    psf_mm: float
    noise_hu: float
    sharpen: float = 0.0

    def mtf(self, f2: np.ndarray) -> np.ndarray:
        """Modulation transfer at squared spatial frequencies ``f2`` (cycles/mm, squared)."""
        mtf = np.exp(-2 * np.pi**2 * self.psf_mm**2 * f2)
        if self.sharpen:
            wide = np.exp(-2 * np.pi**2 * (2 * self.psf_mm) ** 2 * f2)
            mtf = (1 + self.sharpen) * mtf - self.sharpen * wide
        return mtf


KERNEL_CLASSES = {
    "soft": KernelClass(psf_mm=0.75, noise_hu=16.0),
    "standard": KernelClass(psf_mm=0.55, noise_hu=24.0),
    "sharp": KernelClass(psf_mm=0.40, noise_hu=42.0, sharpen=0.5),
}


@dataclass(frozen=True)
class VendorProfile:
    """A (synthetic) scanner vendor's header and encoding habits.

    Attributes:
        model: Manufacturer Model Name.
        kernels: Convolution Kernel names and their :data:`KERNEL_CLASSES` class.
        kvp: the tube voltages its protocols use.
        spacing_mm: range of in-plane pixel spacing.
        bits_stored: 12 or 16.
        signed: Pixel Representation 1 (int16) or 0 (uint16).
        rescale_slope, rescale_intercept: HU = stored x slope + intercept.
        padding: Pixel Padding Value written outside a circular field of view, or ``None``.
        first_instance: where Instance Number 1 is, ``superior`` or ``inferior``.
    """

    model: str
    kernels: dict[str, str]
    kvp: tuple[int, ...]
    spacing_mm: tuple[float, float]
    bits_stored: int = 12
    signed: bool = False
    rescale_slope: float = 1.0
    rescale_intercept: float = -1024.0
    padding: int | None = None
    first_instance: str = "superior"


VENDOR_PROFILES = {
    "vendor-a": VendorProfile(
        "SYNTH-CT-A64",
        {"SOFT": "soft", "STANDARD": "standard", "LUNG": "sharp"},
        (100, 120),
        (0.6, 0.8),
    ),
    "vendor-b": VendorProfile(
        "SYNTH-CT-B128",
        {"Br36d": "soft", "Br44d": "standard", "Bl57d": "sharp"},
        (100, 110, 120),
        (0.65, 0.9),
        first_instance="inferior",
    ),
    "vendor-c": VendorProfile(
        "SYNTH-CT-C",
        {"B": "soft", "C": "standard", "L": "sharp", "YA": "sharp"},
        (120,),
        (0.7, 0.95),
        bits_stored=16,
        rescale_slope=0.5,
    ),
    "vendor-d": VendorProfile(
        "SYNTH-CT-D80",
        {"FC07": "soft", "FC13": "standard", "FC51": "sharp", "FC86": "sharp"},
        (100, 120, 135),
        (0.55, 0.75),
        bits_stored=16,
        signed=True,
        padding=-2000,
    ),
}


@dataclass(frozen=True)
class Acquisition:
    """One case's acquisition and reconstruction (see :func:`draw_acquisition`).

    Attributes:
        vendor: key of :data:`VENDOR_PROFILES`.
        kernel: Convolution Kernel name; ``kernel_class`` its class.
        kvp: tube voltage.
        size: rows = columns.
        pixel_spacing: in-plane spacing (mm, as Pixel Spacing reads back).
        slices: number of slices.
        thickness: Slice Thickness (mm); ``slice_spacing``: distance between slices
            (smaller than the thickness for an overlapping reconstruction).
        ctdi: CTDIvol (mGy).
        noise_sd: the noise SD this gives (HU).
        origin: LPS position (mm) of voxel ``(0, 0, 0)``.
    """

    vendor: str
    kernel: str
    kernel_class: str
    kvp: int
    size: int
    pixel_spacing: float
    slices: int
    thickness: float
    slice_spacing: float
    ctdi: float
    noise_sd: float
    origin: tuple[float, float, float]

    @property
    def profile(self) -> VendorProfile:
        return VENDOR_PROFILES[self.vendor]

    def blur(self) -> ScannerBlur:
        """The kernel's in-plane PSF and the slice profile (FWHM = thickness), in voxels."""
        kernel = KERNEL_CLASSES[self.kernel_class]
        sigma_z = self.thickness / 2.355 / self.slice_spacing
        sigma_xy = kernel.psf_mm / self.pixel_spacing
        return ScannerBlur((sigma_z, sigma_xy, sigma_xy), kernel.sharpen)

    def grid(self) -> CtGrid:
        """The voxel grid the phantom is drawn on."""
        centre = (self.size - 1) / 2
        axis = ((np.arange(self.size) - centre) * self.pixel_spacing).astype(np.float32)
        return CtGrid(
            x=axis[None, None, :],
            y=axis[None, :, None],
            zn=(np.arange(self.slices) / (self.slices - 1)).astype(np.float32)[:, None, None],
            z=(np.arange(self.slices) * self.slice_spacing).astype(np.float32)[:, None, None],
            shape=(self.slices, self.size, self.size),
            spacing_zyx=(self.slice_spacing, self.pixel_spacing, self.pixel_spacing),
        )

    def header(self) -> dict[str, Any]:
        """CT attributes of the vendor profile (DICOM keyword -> value)."""
        header: dict[str, Any] = {
            "Manufacturer": f"{MANUFACTURER} ({self.vendor})",
            "ManufacturerModelName": self.profile.model,
            "ConvolutionKernel": self.kernel,
            "KVP": ds_value(self.kvp),
            "ReconstructionDiameter": ds_value(ds_round(self.size * self.pixel_spacing, 2)),
            "RescaleSlope": ds_value(self.profile.rescale_slope),
        }
        if self.profile.padding is not None:
            header["PixelPaddingValue"] = self.profile.padding
        return header

    def params(self) -> dict[str, Any]:
        """The case's acquisition as the datalist records it (``generator``)."""
        profile = self.profile
        return {
            "generator_version": 2,
            "vendor": self.vendor,
            "model": profile.model,
            "kernel": self.kernel,
            "kernel_class": self.kernel_class,
            "kvp": self.kvp,
            "ctdi_vol_mgy": self.ctdi,
            "noise_sd_hu": self.noise_sd,
            "pixel_spacing_mm": self.pixel_spacing,
            "slice_thickness_mm": self.thickness,
            "slice_spacing_mm": self.slice_spacing,
            "shape_zyx": [self.slices, self.size, self.size],
            "bits_stored": profile.bits_stored,
            "signed": profile.signed,
            "rescale_slope": profile.rescale_slope,
            "rescale_intercept": profile.rescale_intercept,
            "pixel_padding": profile.padding,
            "first_instance": profile.first_instance,
        }


def noise_sd_hu(kernel_class: str, ctdi_mgy: float, thickness_mm: float, kvp: int) -> float:
    """Noise SD (HU) of a kernel class at a dose, slice thickness and tube voltage.

    The kernel's level at CTDIvol 1.5 mGy, 1.25 mm, 120 kVp, scaled by ``1/sqrt`` of each.
    """
    scale = np.sqrt(1.5 / ctdi_mgy) * np.sqrt(1.25 / thickness_mm) * np.sqrt(120 / kvp)
    return float(KERNEL_CLASSES[kernel_class].noise_hu * scale)


def draw_acquisition(rng: np.random.Generator) -> Acquisition:
    """Vendor, kernel, kVp, grid (128-192 pixels, 40-104 slices over 80-130 mm), dose."""
    vendor = str(rng.choice(sorted(VENDOR_PROFILES)))
    profile = VENDOR_PROFILES[vendor]
    kernel = str(rng.choice(sorted(profile.kernels)))
    kernel_class = profile.kernels[kernel]
    kvp = int(rng.choice(profile.kvp))
    size = int(rng.choice(np.arange(128, 193, 16)))
    spacing = ds_round(rng.uniform(*profile.spacing_mm), 3)
    thickness = float(rng.choice(SLICE_THICKNESSES_MM))
    slice_spacing = ds_round(thickness * (0.8 if rng.random() < 0.3 else 1.0), 3)
    slices = int(np.clip(round(rng.uniform(80, 130) / slice_spacing), 40, 104))
    ctdi = ds_round(np.exp(rng.uniform(np.log(0.6), np.log(3.0))), 2)
    origin = (
        ds_round(-(size - 1) / 2 * spacing + rng.uniform(-5, 5), 3),
        ds_round(-(size - 1) / 2 * spacing + rng.uniform(-5, 5), 3),
        ds_round(rng.uniform(-260, -140), 2),
    )
    return Acquisition(
        vendor=vendor,
        kernel=kernel,
        kernel_class=kernel_class,
        kvp=kvp,
        size=size,
        pixel_spacing=spacing,
        slices=slices,
        thickness=thickness,
        slice_spacing=slice_spacing,
        ctdi=ctdi,
        noise_sd=round(noise_sd_hu(kernel_class, ctdi, thickness, kvp), 2),
        origin=origin,
    )


def scanner_noise(rng: np.random.Generator, acq: Acquisition) -> np.ndarray:
    """``(slices, rows, columns)`` noise of SD ``acq.noise_sd`` and the kernel's texture.

    In-plane, white noise is shaped to the power spectrum of filtered back-projection,
    ``|f| x MTF(f)^2``: a soft kernel's noise is coarse and blotchy, a sharp kernel's fine
    and grainy. Along z, neighbouring slices share the slice profile, so their noise is
    correlated (more so when they overlap).
    """
    shape = (acq.slices, acq.size, acq.size)
    white = rng.standard_normal(shape, dtype=np.float32)
    fy = scipy.fft.fftfreq(acq.size, acq.pixel_spacing)[:, None]
    fx = scipy.fft.rfftfreq(acq.size, acq.pixel_spacing)[None, :]
    f2 = fy**2 + fx**2
    amplitude = (f2**0.25 * KERNEL_CLASSES[acq.kernel_class].mtf(f2)).astype(np.float32)
    noise = scipy.fft.irfft2(scipy.fft.rfft2(white) * amplitude, s=shape[1:])
    noise = ndimage.gaussian_filter1d(
        noise, acq.blur().sigma_zyx[0], axis=0, truncate=BLUR_TRUNCATE
    )
    return (noise * (acq.noise_sd / (noise.std() + 1e-9))).astype(np.float32)


def quantise(hu: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Stored values of ``hu`` in the vendor's encoding, padding outside the field of view."""
    profile = acq.profile
    stored = np.rint((np.clip(hu, *HU_RANGE) - profile.rescale_intercept) / profile.rescale_slope)
    if profile.padding is not None:
        # outside the circular reconstruction field of view
        offset = np.arange(acq.size) - (acq.size - 1) / 2
        outside = offset[:, None] ** 2 + offset[None, :] ** 2 > (acq.size / 2) ** 2
        stored[:, outside] = profile.padding
    return stored.astype(np.int16 if profile.signed else np.uint16)
