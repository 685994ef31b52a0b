from __future__ import annotations

import numpy as np
import pytest

from oncotriage.datasets.image import ImageVolume


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
