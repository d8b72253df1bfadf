"""Masks change what they cover, thoroughly, and nothing else."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from redactd.core.config import MaskConfig, Profile
from redactd.core.errors import PermanentInputError
from redactd.core.types import Box
from redactd.stages.mask import MaskRegion, apply_masks, cell_size, mask_area, padding_of
from tests.helpers.pictures import changed, textured

METHODS = ("mosaic", "blur", "pixelate", "solid")






def cfg(**kw: object) -> MaskConfig:
    return dataclasses.replace(MaskConfig(), **kw)  # type: ignore[arg-type]


def test_the_default_is_a_coarse_mosaic_over_a_padded_box() -> None:
    d = MaskConfig()
    assert (d.method, d.shape) == ("mosaic", "box")
    assert d.blocks == 1  # one cell per face (finer is found again as a face)
    assert 0.1 <= d.padding <= 0.3 and d.max_padding <= 0.5 and d.max_padding_frame <= 0.1
    assert Profile().face.mask == d


def test_masks_in_place_and_returns_the_same_array() -> None:
    img = textured()
    out = apply_masks(img, [MaskRegion(Box(10, 10, 50, 50), MaskConfig())])
    assert out is img


@pytest.mark.parametrize("method", METHODS)
def test_each_method_changes_the_padded_box_and_nothing_outside(method: str) -> None:
    original = textured()
    img = original.copy()
    box = Box(100, 60, 160, 140)  # 60 x 80
    m = cfg(method=method, shape="box", padding=0.25, padding_px=0.0, max_padding_frame=1.0)
    apply_masks(img, [MaskRegion(box, m)])
    x1, y1, x2, y2 = box.pad(0.25).int_bounds(300, 200)  # 85..175, 40..160
    diff = changed(img, original)
    assert diff[y1:y2, x1:x2].mean() > 0.95
    outside = diff.copy()
    outside[y1:y2, x1:x2] = False
    assert not outside.any()
    inside = np.abs(img[y1:y2, x1:x2].astype(int) - original[y1:y2, x1:x2]).mean()
    assert inside > 40  # substantial, not a touch-up


@pytest.mark.parametrize("method", ["mosaic", "blur"])
def test_detail_is_gone_inside(method: str) -> None:
    original = textured()
    img = original.copy()
    box = Box(100, 60, 180, 160)
    apply_masks(img, [MaskRegion(box, cfg(method=method, shape="box", padding=0.0))])
    crop, before = img[60:160, 100:180], original[60:160, 100:180]

    def detail(a: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())

    assert detail(crop) < detail(before) / 1000


def test_mosaic_has_no_block_edges_but_pixelate_has() -> None:
    y, x = np.mgrid[0:200, 0:300]
    wave = (127 + 100 * np.sin(x / 13.0) * np.cos(y / 17.0)).astype(np.uint8)
    img_m, img_p = (np.dstack([wave, wave, wave]) for _ in range(2))
    box = Box(0, 0, 240, 240)
    apply_masks(img_m, [MaskRegion(box, cfg(method="mosaic", blocks=6, padding=0.0))])
    apply_masks(img_p, [MaskRegion(box, cfg(method="pixelate", blocks=6, padding=0.0))])
    # pixelate: a handful of flat cells; mosaic: a smooth field with many values
    assert len(np.unique(img_p[:200, :240].reshape(-1, 3), axis=0)) <= 36
    steps_p = np.abs(np.diff(img_p[:200, :240].astype(int), axis=1)).max()
    steps_m = np.abs(np.diff(img_m[:200, :240].astype(int), axis=1)).max()
    assert steps_p > 20 and steps_m < steps_p / 3


def test_solid_fills_with_the_colour() -> None:
    img = textured()
    apply_masks(
        img, [MaskRegion(Box(10, 20, 40, 60), cfg(method="solid", padding=0.0, color=(1, 2, 3)))]
    )
    assert (img[20:60, 10:40] == np.array([1, 2, 3], np.uint8)).all()


def test_ellipse_spares_the_corners_of_its_box() -> None:
    original = textured()
    img = original.copy()
    apply_masks(
        img, [MaskRegion(Box(100, 50, 200, 150), cfg(shape="ellipse", padding=0.0, padding_px=0.0))]
    )
    diff = changed(img, original)
    assert diff[95:105, 145:155].all()  # the centre
    for y, x in ((50, 100), (50, 199), (149, 100), (149, 199)):
        assert not diff[y, x]
    # the ellipse covers about pi/4 of its box
    assert abs(diff[50:150, 100:200].mean() - math.pi / 4) < 0.03


def test_blur_is_size_relative() -> None:
    """The same picture at 10x the size is blurred the same, relatively."""
    small = textured(40, 40, seed=3)
    big = cv2.resize(small, (400, 400), interpolation=cv2.INTER_NEAREST)
    m = cfg(method="blur", shape="box", padding=0.0)
    apply_masks(small, [MaskRegion(Box(0, 0, 40, 40), m)])
    apply_masks(big, [MaskRegion(Box(0, 0, 400, 400), m)])
    back = cv2.resize(big, (40, 40), interpolation=cv2.INTER_AREA)
    original = textured(40, 40, seed=3)
    assert (
        np.abs(back.astype(int) - small).mean() < 0.2 * np.abs(original.astype(int) - small).mean()
    )


@pytest.mark.parametrize("side", [1, 2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_tiny_boxes_are_masked(side: int, method: str) -> None:
    original = textured(seed=side)
    img = original.copy()
    box = Box(50, 50, 50 + side, 50 + side)
    apply_masks(img, [MaskRegion(box, cfg(method=method))])
    diff = changed(img, original)
    assert diff[50 : 50 + side, 50 : 50 + side].all()
    assert not diff[:40].any() and not diff[:, :40].any()  # stays local


@pytest.mark.parametrize("method", METHODS)
def test_boxes_partly_outside_the_image(method: str) -> None:
    original = textured()
    img = original.copy()
    regions = [
        MaskRegion(Box(-30, -20, 40, 50), cfg(method=method)),
        MaskRegion(Box(260, 150, 360, 260), cfg(method=method)),
    ]
    apply_masks(img, regions)
    diff = changed(img, original)
    assert diff[0:50, 0:40].mean() > 0.95
    assert diff[150:200, 260:300].mean() > 0.95


@pytest.mark.parametrize(
    "box",
    [
        Box(400, 300, 500, 400),  # wholly outside
        Box(-300, -300, -200, -200),  # outside even when padded
        Box(50, 50, 50, 80),  # zero width
        Box(60, 60, 40, 80),  # inverted
    ],
)
def test_boxes_with_nothing_to_mask_change_nothing(box: Box) -> None:
    original = textured()
    img = original.copy()
    apply_masks(img, [MaskRegion(box, MaskConfig())])
    assert np.array_equal(img, original)


@pytest.mark.parametrize(
    "box",
    [
        Box(float("nan"), 10, 20, 20),
        Box(10, 10, float("inf"), 20),
        Box(10, float("-inf"), 20, 20),
    ],
)
def test_a_non_finite_box_fails_closed(box: Box) -> None:
    """A detector fault is not an empty region: the job fails (detector_failed)
    instead of delivering the image with that face silently unmasked."""
    img = textured()
    with pytest.raises(PermanentInputError) as ei:
        apply_masks(
            img, [MaskRegion(Box(10, 10, 50, 50), MaskConfig()), MaskRegion(box, MaskConfig())]
        )
    assert ei.value.reason == "detector_failed"


def test_overlapping_regions_are_all_masked_from_the_original_pixels() -> None:
    original = textured()
    a = MaskRegion(Box(50, 50, 130, 130), cfg(shape="box", padding=0.0, padding_px=0.0))
    b = MaskRegion(Box(100, 80, 180, 160), cfg(shape="box", padding=0.0, padding_px=0.0))
    both = apply_masks(original.copy(), [a, b])
    only_a = apply_masks(original.copy(), [a])
    only_b = apply_masks(original.copy(), [b])
    diff = changed(both, original)
    assert diff[50:130, 50:130].mean() > 0.95 and diff[80:160, 100:180].mean() > 0.95
    # b (as coarse as a, written last) is b's mask of the ORIGINAL pixels,
    # not of a's mosaic ...
    assert np.array_equal(both[80:160, 100:180], only_b[80:160, 100:180])
    # ... and the rest of a is a's mask alone
    rest = np.ones((200, 300), bool)
    rest[80:160, 100:180] = False
    assert np.array_equal(both[rest], only_a[rest])


def test_grey_single_channel_images() -> None:
    original = textured()[..., :1].copy()
    for method in METHODS:
        img = original.copy()
        m = cfg(method=method, color=(200, 100, 50))
        apply_masks(img, [MaskRegion(Box(20, 20, 80, 80), m)])
        assert img.shape == original.shape
        assert (img[20:80, 20:80] != original[20:80, 20:80]).mean() > 0.9


def test_rejects_what_it_cannot_mask() -> None:
    with pytest.raises(ValueError):
        apply_masks(np.zeros((10, 10), np.uint8), [])
    with pytest.raises(ValueError):
        apply_masks(np.zeros((10, 10, 3), np.float32), [])


def _plain(**kw: object) -> MaskConfig:
    return cfg(**{"shape": "box", **kw})


def test_the_coarser_mask_wins_where_masks_overlap() -> None:
    """A small (false or duplicate) box inside a face must not put its finer
    cells over the face's mosaic: the coarser mask is written last."""
    original = textured()
    face = MaskRegion(Box(60, 40, 180, 160), _plain(padding=0.0, padding_px=0.0))
    small = MaskRegion(Box(100, 80, 124, 104), _plain(padding=0.0, padding_px=0.0))
    both = apply_masks(original.copy(), [face, small])
    face_only = apply_masks(original.copy(), [face])
    assert np.array_equal(both, face_only)
    # ... and a solid fill beats any mosaic
    solid = MaskRegion(Box(100, 80, 124, 104), _plain(method="solid", padding=0.0, padding_px=0.0))
    out = apply_masks(original.copy(), [solid, face])
    assert (out[80:104, 100:124] == 0).all()


def test_padding_is_relatively_larger_for_small_faces() -> None:
    d = MaskConfig()
    small, large = Box(0, 0, 12, 12), Box(0, 0, 200, 200)
    ps, pl = padding_of(small, d, 4000, 4000)[0], padding_of(large, d, 4000, 4000)[0]
    assert ps / 12 > 1.5 * (pl / 200)
    assert pl / 200 >= d.padding  # the relative part is never lost on large faces


def test_a_close_up_portrait_keeps_its_background() -> None:
    """A face filling most of the frame grows by at most max_padding_frame of
    the frame per side, so the shoulders and background stay."""
    h, w = 800, 600
    original = textured(h, w, seed=5)
    face = Box(120, 100, 480, 560)  # 360 x 460: a close-up
    img = apply_masks(original.copy(), [MaskRegion(face, MaskConfig())])
    diff = changed(img, original)
    x1, y1, x2, y2 = face.int_bounds(w, h)
    assert diff[y1:y2, x1:x2].all()  # the face is wholly masked
    grow = MaskConfig().max_padding_frame * min(w, h)
    area = mask_area(face, MaskConfig(), w, h)
    assert area.x1 >= face.x1 - grow - 1e-6 and area.y2 <= face.y2 + grow + 1e-6
    assert diff.mean() < 0.5  # old default (padding 0.5 per side): the whole photo
    assert not diff[: int(face.y1 - grow) - 1].any() and not diff[int(face.y2 + grow) + 2 :].any()


def test_the_mask_never_exceeds_its_multiple_of_the_box() -> None:
    d = MaskConfig()
    for side in (2.0, 5.0, 12.0, 40.0, 300.0):
        b = Box(1000, 1000, 1000 + side, 1000 + side * 1.2)
        a = mask_area(b, d, 4000, 4000)
        limit = 1 + 2 * d.max_padding
        assert a.width <= max(limit * b.width, 4.0) + 1e-9
        assert a.height <= max(limit * b.height, 4.0) + 1e-9


def test_cells_follow_the_detected_box_not_its_padding() -> None:
    """Padding adds cells of the face's cell size; it does not coarsen the face."""
    b = Box(100, 60, 160, 140)
    assert cell_size(b, _plain(padding=0.0)) == cell_size(b, _plain(padding=0.5)) == 80.0
    original = textured()
    m = _plain(method="pixelate", blocks=4, padding=0.5, padding_px=0.0, max_padding_frame=1.0)
    img = apply_masks(original.copy(), [MaskRegion(b, m)])
    a = mask_area(b, m, 300, 200)
    x1, y1, x2, y2 = a.int_bounds(300, 200)
    colours = len(np.unique(img[y1:y2, x1:x2].reshape(-1, 3), axis=0))
    assert 6 * 4 <= colours <= 8 * 8  # 4 cells per 80 px: ~6 x 8 cells over the padded box


def test_rounded_covers_the_whole_detected_box_but_not_the_padding_corners() -> None:
    original = textured()
    b = Box(100, 60, 160, 140)
    m = _plain(shape="rounded", padding=0.5, padding_px=0.0, max_padding_frame=1.0)
    img = apply_masks(original.copy(), [MaskRegion(b, m)])
    diff = changed(img, original)
    assert diff[60:140, 100:160].all()
    a = mask_area(b, m, 300, 200)  # 70..190 x 20..180
    for y, x in ((int(a.y1), int(a.x1)), (int(a.y1), int(a.x2) - 1), (int(a.y2) - 1, int(a.x1))):
        assert not diff[y, x]
    assert diff[int(a.y1), int(b.center[0])] and diff[int(b.center[1]), int(a.x1)]


def test_a_crop_masks_like_its_whole_frame() -> None:
    """Video masks a crop of the frame: ``frame_size`` keeps the frame's padding cap."""
    original = textured(400, 600, seed=2)
    b = Box(200, 100, 400, 300)
    whole = apply_masks(original.copy(), [MaskRegion(b, MaskConfig())])
    a = mask_area(b, MaskConfig(), 600, 400)
    x1, y1, x2, y2 = a.int_bounds(600, 400)
    crop = original[y1 - 3 : y2 + 3, x1 - 3 : x2 + 3].copy()
    apply_masks(crop, [MaskRegion(b.shifted(-(x1 - 3), -(y1 - 3)), MaskConfig())], (600, 400))
    assert np.array_equal(crop, whole[y1 - 3 : y2 + 3, x1 - 3 : x2 + 3])


def _striped_face(h: int = 120, w: int = 120) -> np.ndarray:
    """A grey ramp with fine stripes of +-15 levels: features (detail) at every
    brightness, a third of them within 10 levels of the mean."""
    ramp = np.linspace(80, 160, w, dtype=np.float32)[None, :].repeat(h, 0)
    stripes = np.where((np.arange(w) // 2) % 2 == 0, 15.0, -15.0)[None, :]
    y = np.clip(ramp + stripes, 0, 255).astype(np.uint8)
    return np.dstack([y, y, y])


def _detail_kept(before: np.ndarray, after: np.ndarray, box: Box) -> float:
    from redactd.evaluation import pixels

    yb, ya = pixels.luma(before[..., ::-1]), pixels.luma(after[..., ::-1])
    bounds = box.int_bounds(before.shape[1], before.shape[0])
    share, flat = pixels.judged_share(yb, np.abs(ya - yb) > pixels.LUMA_THRESHOLD, bounds)
    assert not flat
    return share


def test_the_brightness_shift_changes_the_features_a_mean_colour_keeps() -> None:
    img = _striped_face()
    box = Box(20, 20, 100, 100)
    plain = apply_masks(img.copy(), [MaskRegion(box, cfg(shift_levels=0))])
    shifted = apply_masks(img.copy(), [MaskRegion(box, cfg(shift_levels=32))])
    assert _detail_kept(img, plain, box) < 0.7 <= _detail_kept(img, shifted, box)
    # One offset for the whole region, at most shift_levels: no spatial detail added.
    inside = changed(plain, img) | changed(shifted, img)
    diff = shifted.astype(np.int16) - plain.astype(np.int16)
    offsets = np.unique(diff[inside])
    assert len(offsets) == 1 and 0 < abs(int(offsets[0])) <= 32


def test_the_shift_leaves_solid_and_blur_alone() -> None:
    img = _striped_face()
    box = Box(20, 20, 100, 100)
    for method in ("solid", "blur"):
        a = apply_masks(img.copy(), [MaskRegion(box, cfg(method=method, shift_levels=0))])
        b = apply_masks(img.copy(), [MaskRegion(box, cfg(method=method, shift_levels=32))])
        assert np.array_equal(a, b)
