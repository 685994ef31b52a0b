from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from oncotriage.datasets.dicom_writer import build_ct_slice_dataset, make_identity
from oncotriage.datasets.image import ImageVolume
from oncotriage.models.findings import Finding
from oncotriage.serving.render import BOX_COLOUR, SeriesCache, render_image, render_png
from oncotriage.serving.results import RenderPlan, RenderRequest, render
from oncotriage.serving.storage import ContentStore


def _decode(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG"
    return picture.convert("RGB")


def _box_pixels(picture: Image.Image) -> np.ndarray:
    """Boolean (rows, columns) mask of pixels painted in the box colour."""
    return np.all(np.asarray(picture) == np.array(BOX_COLOUR, np.uint8), axis=-1)


def _radiograph(
    x: int = 100, y: int = 80, spacing: tuple[float, float] = (0.2, 0.2)
) -> ImageVolume:
    return ImageVolume(array=np.full((x, y), 0.5, np.float32), spacing=spacing, modality="DX")


def _finding(box: tuple[float, ...], score: float = 0.9) -> Finding:
    return Finding(label=0, score=score, box_index=box, box_world=box)


@pytest.mark.parametrize(
    ("window", "hu", "grey"),
    [
        ("lung", -2000.0, 0),
        ("lung", 1000.0, 255),
        ("lung", -600.0, 128),
        ("lung", -1000.0, 60),
        ("mediastinum", 100.0, 166),
        ("mediastinum", -160.0, 0),
        ("mediastinum", 240.0, 255),
        ("bone", 400.0, 128),
        ("bone", 0.0, 71),
        ("bone", 1000.0, 213),
        ((-600.0, 1500.0), -1000.0, 60),
        (None, -1000.0, 60),  # CT defaults to the lung window
    ],
)
def test_ct_windowing_maps_hounsfield_units_to_grey(
    window: str | tuple[float, float] | None, hu: float, grey: int
) -> None:
    volume = ImageVolume(array=np.full((8, 6, 3), hu, np.float32), spacing=(1, 1, 2), modality="CT")
    picture = _decode(render_png(volume, window=window))
    assert picture.size == (8, 6)
    assert np.all(np.asarray(picture) == grey)


@pytest.mark.parametrize(("value", "grey"), [(0.0, 0), (0.25, 64), (1.0, 255), (1.7, 255)])
def test_radiograph_defaults_to_full_range(value: float, grey: int) -> None:
    image = ImageVolume(array=np.full((5, 4), value, np.float32), spacing=(0.2, 0.2), modality="DX")
    assert np.all(np.asarray(_decode(render_png(image))) == grey)


def test_array_axes_are_columns_then_rows() -> None:
    array = np.zeros((30, 20), np.float32)
    array[5, 12] = 1.0  # x (column) 5, y (row) 12
    picture = _decode(render_png(ImageVolume(array=array, spacing=(1.0, 1.0), modality="DX")))
    assert picture.size == (30, 20)
    grey = np.asarray(picture)[..., 0]
    assert grey[12, 5] == 255
    assert int(grey.sum()) == 255


def test_box_outline_lies_on_the_box_edges() -> None:
    picture = _decode(render_png(_radiograph(), [_finding((10, 20, 40, 50), 0.87)]))
    mask = _box_pixels(picture)
    for column, row in [(10, 35), (40, 35), (25, 20), (25, 50), (10, 20), (40, 50)]:
        assert mask[row, column], (column, row)
    for column, row in [(25, 35), (9, 35), (41, 35), (25, 51)]:
        assert not mask[row, column], (column, row)
    # the score label sits just above the box in the box colour
    assert mask[:20, 10:40].any()
    assert not mask[51:, :].any()


def test_boxes_can_be_hidden() -> None:
    picture = _decode(render_png(_radiograph(), [_finding((10, 20, 40, 50))], show_boxes=False))
    assert not _box_pixels(picture).any()
    assert np.all(np.asarray(picture) == 128)


def test_downscaled_boxes_follow_the_image() -> None:
    picture = _decode(
        render_png(_radiograph(400, 200), [_finding((100, 40, 300, 160))], max_size=100)
    )
    assert picture.size == (100, 50)
    mask = _box_pixels(picture)
    # index x -> (x + 0.5) * 0.25 - 0.5: 100 -> 25, 300 -> 75; y: 40 -> 10, 160 -> 40
    assert mask[25, 25] and mask[25, 75] and mask[10, 50] and mask[40, 50]
    assert not mask[25, 50]


def test_pixel_spacing_is_respected() -> None:
    image = _radiograph(20, 10, spacing=(0.5, 1.0))  # rows twice as far apart as columns
    assert _decode(render_png(image)).size == (20, 20)


def _stack() -> ImageVolume:
    array = np.zeros((40, 30, 10), np.float32)
    for k in range(10):
        array[:, :, k] = -1000.0 + 100.0 * k
    return ImageVolume(array=array, spacing=(0.7, 0.7, 1.25), modality="CT")


def _grey_of_slice(k: int) -> int:
    # lung window, DICOM linear function
    return round(((-1000.0 + 100.0 * k + 600.5) / 1499.0 + 0.5) * 255.0)


def test_ct_default_slice_is_the_top_finding_centre() -> None:
    findings = [_finding((5, 5, 2, 15, 15, 4), 0.9), _finding((20, 5, 7, 30, 15, 9), 0.4)]
    picture = _decode(render_png(_stack(), findings))
    grey = np.asarray(picture)[..., 0]
    assert grey[2, 38] == _grey_of_slice(3)
    mask = _box_pixels(picture)
    assert mask[10, 5]  # the top finding crosses slice 3
    assert not mask[10, 20]  # the other finding (slices 7..9) is not drawn


@pytest.mark.parametrize(("slice_index", "drawn"), [(1, False), (2, True), (4, True), (5, False)])
def test_ct_draws_only_findings_on_the_slice(slice_index: int, drawn: bool) -> None:
    picture = _decode(
        render_png(_stack(), [_finding((5, 5, 2, 15, 15, 4))], slice_index=slice_index)
    )
    assert np.asarray(picture)[2, 38, 0] == _grey_of_slice(slice_index)
    assert _box_pixels(picture).any() == drawn


def test_ct_without_findings_shows_the_middle_slice() -> None:
    picture = _decode(render_png(_stack()))
    assert np.asarray(picture)[0, 0, 0] == _grey_of_slice(5)


def test_small_unlabelled_render() -> None:
    picture = render_image(
        _radiograph(200, 100),
        [_finding((40, 40, 120, 80))],
        max_size=64,
        show_boxes=True,
        show_labels=False,
    )
    assert picture.size == (64, 32)
    mask = _box_pixels(picture)
    rows = np.nonzero(mask.any(axis=1))[0]
    # scale 0.32: index 40 -> 40.5 * 0.32 - 0.5 = 12.46 -> 12; 80 -> 25.26 -> 25; 120 -> 38
    assert rows.min() == 12 and rows.max() == 25  # no label row above the box
    assert mask[12, 12] and mask[25, 38]


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (_radiograph(), {"window": "soft"}, "unknown window preset"),
        (_radiograph(), {"window": "lung"}, "applies to CT only"),
        (_radiograph(), {"slice_index": 3}, "volumes only"),
        (_stack(), {"slice_index": 10}, "outside 0..9"),
        (_radiograph(), {"findings": [_finding((0, 0, 0, 1, 1, 1))]}, "image is 2D"),
        (_radiograph(), {"max_size": 8}, "at least 16"),
        (_radiograph(), {"window": (0.5, 0.0)}, "positive"),
    ],
)
def test_rejects_bad_arguments(image: ImageVolume, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_png(image, **kwargs)


def _stored_ct_series(store: ContentStore, seed: int, n_slices: int = 16) -> RenderPlan:
    """A real CT series (``n_slices`` DICOM files) in ``store``; slice ``k`` is ``k * 100`` HU."""
    identity = make_identity("ct", seed, 0)
    paths = []
    for k in range(n_slices):
        ds = build_ct_slice_dataset(
            identity,
            np.full((24, 32), 1024 - 1000 + 100 * k, np.uint16),
            instance_number=k + 1,
            pixel_spacing_mm=(0.7, 0.7),
            image_position=(0.0, 0.0, 2.5 * k),
            slice_thickness_mm=2.5,
            spacing_between_slices_mm=2.5,
            rescale_intercept=-1024.0,
            bits_stored=12,
            ctdi_vol_mgy=1.5,
        )
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        paths.append(store.put(buffer.getvalue()).relative_path)
    return RenderPlan(tuple(paths), [], RenderRequest())


def _render_slice(store: ContentStore, plan: RenderPlan, k: int, cache: SeriesCache) -> int:
    request = RenderRequest(slice_index=k, window=(0.0, 4000.0), show_boxes=False)
    png = render(store, RenderPlan(plan.stored_paths, [], request), cache)
    return int(np.asarray(_decode(png))[0, 0, 0])


def test_scrolling_a_ct_series_decodes_it_once(tmp_path) -> None:
    store = ContentStore(tmp_path)
    plan = _stored_ct_series(store, seed=1)
    cache = SeriesCache(max_bytes=10 * 1024 * 1024)
    greys = [_render_slice(store, plan, k, cache) for k in range(16)]
    # each slice shows its own HU (k * 100 - 1000 .. 500 in a 0 +- 2000 window)
    assert greys == sorted(greys) and greys[0] < greys[-1]
    assert cache.decodes == 1
    assert cache.hits == 15
    assert len(cache) == 1
    assert cache.nbytes == 32 * 24 * 16 * 4  # float32 voxels
    # the shared array cannot be changed by a reader
    image = cache.get(tuple(sorted(p.rsplit("/", 1)[-1][:-4] for p in plan.stored_paths)), _fail)
    assert not image.array.flags.writeable


def _fail() -> ImageVolume:
    raise AssertionError("the series should have come from the cache")


def test_series_cache_stays_under_its_bound(tmp_path) -> None:
    store = ContentStore(tmp_path)
    series_bytes = 32 * 24 * 16 * 4
    plans = [_stored_ct_series(store, seed=seed) for seed in (1, 2, 3)]
    cache = SeriesCache(max_bytes=2 * series_bytes + 100)
    for plan in plans:
        _render_slice(store, plan, 0, cache)
        assert cache.nbytes <= cache.max_bytes
    assert cache.decodes == 3
    assert len(cache) == 2 and cache.nbytes == 2 * series_bytes
    _render_slice(store, plans[0], 1, cache)  # the least recently used one was evicted
    assert cache.decodes == 4
    _render_slice(store, plans[2], 1, cache)  # the most recent one was kept
    assert cache.decodes == 4 and cache.hits == 1
    # a series larger than the bound is rendered but not kept
    small = SeriesCache(max_bytes=series_bytes - 1)
    _render_slice(store, plans[0], 0, small)
    _render_slice(store, plans[0], 0, small)
    assert small.decodes == 2 and len(small) == 0 and small.nbytes == 0
