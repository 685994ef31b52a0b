from __future__ import annotations

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume, RefusalCode, UnsupportedImageError


def _oblique_volume() -> ImageVolume:
    angle = np.deg2rad(30)
    direction = np.array(
        [[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]]
    )
    return ImageVolume(
        array=np.zeros((4, 5, 6), np.float32),
        spacing=(0.7, 0.8, 1.25),
        origin=(-100.0, 20.0, 300.0),
        direction=direction,
        modality="CT",
    )


def test_index_world_round_trip_on_oblique_volume() -> None:
    volume = _oblique_volume()
    index = np.array([[0, 0, 0], [3, 4, 5], [1.5, 2.25, 0.5]])
    world = volume.index_to_world(index)
    np.testing.assert_allclose(world[0], [-100.0, 20.0, 300.0])
    # axis 2 moves along the third direction column by spacing 1.25 per index
    np.testing.assert_allclose(
        volume.index_to_world([[0, 0, 1]])[0] - world[0],
        1.25 * volume.direction[:, 2],
        atol=1e-12,
    )
    np.testing.assert_allclose(volume.world_to_index(world), index, atol=1e-9)


def test_box_to_world_on_radiograph_is_millimetres_on_detector() -> None:
    image = ImageVolume(array=np.zeros((100, 80), np.float32), spacing=(0.2, 0.25), modality="DX")
    np.testing.assert_allclose(image.box_index_to_world([10, 20, 30, 40]), [2.0, 5.0, 6.0, 10.0])


@pytest.mark.parametrize(
    ("shape", "spacing"), [((4, 4, 4, 1), (1.0, 1.0, 1.0, 1.0)), ((4, 4), (1.0,))]
)
def test_invalid_geometry_is_refused(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        ImageVolume(array=np.zeros(shape, np.float32), spacing=spacing)


def test_refusal_codes_are_their_wire_strings_and_each_has_a_stow_reason() -> None:
    from oncotriage.serving.dicomweb import (
        FAILURE_REASON_BY_CODE,
        FailureReason,
        failure_reason_for,
    )

    error = UnsupportedImageError("not a chest radiograph", code=RefusalCode.BODY_PART)
    assert error.code == "body_part" and f"{error.code}" == "body_part"
    assert UnsupportedImageError("?").code is RefusalCode.UNSUPPORTED
    assert set(FAILURE_REASON_BY_CODE) == set(RefusalCode)
    assert failure_reason_for(RefusalCode.TRANSFER_SYNTAX) is (
        FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED
    )
    assert failure_reason_for(RefusalCode.MISSING_SLICES) is FailureReason.DATASET_DOES_NOT_MATCH
