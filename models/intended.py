"""What a model version reads: the images it was made for, as a typed part of its spec.

A series is scored only by a model whose intended inputs fit it; anything else goes to a
person (``needs_manual_review``) at once with the reason ("no model for MG"), never to a
model made for something else. Specs written before this field existed get the default of
their dimensionality: 2D models read chest radiographs (DX/CR), 3D models chest CT.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Modalities each dimensionality reads by default (specs without ``intended_inputs``).
DEFAULT_MODALITIES = {2: ["DX", "CR"], 3: ["CT"]}


class IntendedInputs(BaseModel):
    """The images a model version is made for.

    Attributes:
        modalities: DICOM Modality values (``DX``, ``CR``, ``CT``, later ``MG``).
        body_parts: Body Part Examined values it reads (upper case); an image that does not
            state its body part is taken as the model's.
        views: View Position values (``PA``, ``AP``); empty: any view.
        spatial_dims: 2 (radiographs) or 3 (CT volumes).
        min_pixel_spacing_mm, max_pixel_spacing_mm: in-plane spacing range it was trained on.
        min_slices: fewest slices of a volume it reads.
        max_slice_thickness_mm: thickest CT slices it reads.

    Whether a series fits is decided in one place, :func:`oncotriage.serving.routing.misfit`.
    """

    model_config = ConfigDict(extra="forbid")

    modalities: list[str]
    body_parts: list[str] = Field(default_factory=lambda: ["CHEST"])
    views: list[str] = Field(default_factory=list)
    spatial_dims: int = Field(ge=2, le=3)
    min_pixel_spacing_mm: float | None = Field(default=None, gt=0)
    max_pixel_spacing_mm: float | None = Field(default=None, gt=0)
    min_slices: int | None = Field(default=None, ge=1)
    max_slice_thickness_mm: float | None = Field(default=None, gt=0)

    @classmethod
    def default_for(cls, spatial_dims: int) -> IntendedInputs:
        if spatial_dims not in DEFAULT_MODALITIES:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        return cls(
            modalities=list(DEFAULT_MODALITIES[spatial_dims]),
            spatial_dims=spatial_dims,
            min_slices=16 if spatial_dims == 3 else None,
        )

    def describe(self) -> str:
        """One line for ``models show`` and for reasons: ``2D DX/CR chest (PA/AP)``."""
        views = f" ({'/'.join(self.views)})" if self.views else ""
        spacing = ""
        if self.min_pixel_spacing_mm or self.max_pixel_spacing_mm:
            spacing = (
                f", spacing {self.min_pixel_spacing_mm or 0:g}-"
                f"{self.max_pixel_spacing_mm or float('inf'):g} mm"
            )
        slices = f", at least {self.min_slices} slices" if self.min_slices else ""
        if self.max_slice_thickness_mm:
            slices += f", slices up to {self.max_slice_thickness_mm:g} mm thick"
        return (
            f"{self.spatial_dims}D {'/'.join(self.modalities)} "
            f"{'/'.join(part.lower() for part in self.body_parts)}{views}{spacing}{slices}"
        )
