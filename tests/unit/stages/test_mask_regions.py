"""Masks of per-file instructions: polygons mask exactly their pixels, and
keeping one person never uncovers a detected neighbour."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from redactd.core.config import MaskConfig
from redactd.core.types import Box
from redactd.stages.follow import RegionFollower
from redactd.stages.mask import MaskRegion, apply_masks
from tests.helpers.pictures import changed, textured


def cfg(**kw: object) -> MaskConfig:
    return dataclasses.replace(MaskConfig(), **kw)  # type: ignore[arg-type]


def inside_polygon(pts: list[tuple[float, float]], h: int, w: int) -> np.ndarray:
    """Pixels whose centre lies inside (even-odd rule), independent of OpenCV."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    inside = np.zeros((h, w), dtype=bool)
    n = len(pts)
    for i in range(n):
        (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % n]
        crosses = (y1 > ys) != (y2 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            xcross = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (xs < xcross)
    return inside


def distance_to_polygon(pts: list[tuple[float, float]], h: int, w: int) -> np.ndarray:
    """Distance of each pixel centre to the polygon's outline."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    best = np.full((h, w), np.inf)
    n = len(pts)
    for i in range(n):
        (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % n]
        dx, dy = x2 - x1, y2 - y1
        t = np.clip(((xs - x1) * dx + (ys - y1) * dy) / (dx * dx + dy * dy), 0, 1)
        best = np.minimum(best, np.hypot(xs - (x1 + t * dx), ys - (y1 + t * dy)))
    return best


POLYGONS = [
    [(20.3, 30.7), (180.2, 45.5), (120.9, 170.1)],  # triangle, fractional vertices
    [(30, 20), (250, 20), (250, 60), (80, 60), (80, 180), (30, 180)],  # concave L
    [(150, 10), (290, 100), (150, 190), (10, 100)],  # diamond
]


@pytest.mark.parametrize("pts", POLYGONS)
@pytest.mark.parametrize("method", ["solid", "mosaic"])
def test_polygon_masks_exactly_its_pixels_rounded_outwards(
    pts: list[tuple[float, float]], method: str
) -> None:
    original = textured()
    img = original.copy()
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    bounds = Box(min(xs), min(ys), max(xs), max(ys))
    m = cfg(method=method, padding=0.5, color=(0, 0, 255))  # padding must not apply
    apply_masks(img, [MaskRegion(bounds, m, polygon=tuple(pts))])
    h, w = img.shape[:2]
    inside = inside_polygon(pts, h, w)
    written = changed(img, original)
    if method == "solid":
        written = np.all(img == (0, 0, 255), axis=-1)
        assert written[inside].all(), "a pixel whose centre is inside was not masked"
    else:
        assert written[inside].mean() > 0.97
    far = distance_to_polygon(pts, h, w) > 1.0
    assert not (written & far & ~inside).any(), "masked more than a pixel beyond the outline"
    assert not changed(img, original)[far & ~inside].any()


def test_polygon_on_pixel_borders_masks_no_extra_pixel_and_a_sliver_its_pixels() -> None:
    red = cfg(method="solid", color=(0, 0, 255))
    img = textured()
    square = ((10.0, 20.0), (20.0, 20.0), (20.0, 30.0), (10.0, 30.0))
    apply_masks(img, [MaskRegion(Box(10, 20, 20, 30), red, polygon=square)])
    expected = np.zeros((200, 300), dtype=bool)
    expected[20:30, 10:20] = True
    assert np.array_equal(np.all(img == (0, 0, 255), axis=-1), expected)
    img = textured()
    sliver = ((40.2, 50.2), (41.6, 50.3), (40.4, 50.8))  # no pixel centre inside
    apply_masks(img, [MaskRegion(Box(40.2, 50.2, 41.6, 50.8), red, polygon=sliver)])
    expected[:] = False
    expected[50, 40:42] = True
    assert np.array_equal(np.all(img == (0, 0, 255), axis=-1), expected)


def test_polygon_partly_outside_the_picture_is_clipped() -> None:
    img = textured()
    pts = ((-50.0, -50.0), (100.0, -20.0), (40.0, 80.0))
    apply_masks(img, [MaskRegion(Box(-50, -50, 100, 80), cfg(method="solid"), polygon=pts)])
    assert np.all(img[5, 40] == 0)


@pytest.mark.parametrize("method", ["mosaic", "blur", "pixelate", "solid"])
@pytest.mark.parametrize("seed", range(12))
def test_protect_clips_only_padding_never_the_detected_box(method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    original = textured(seed=seed)
    x1, y1 = rng.uniform(20, 200), rng.uniform(20, 120)
    box = Box(x1, y1, x1 + rng.uniform(5, 80), y1 + rng.uniform(5, 60))
    protect = tuple(
        Box(px, py, px + rng.uniform(10, 120), py + rng.uniform(10, 120))
        for px, py in rng.uniform(0, 250, (3, 2))
    )
    m = cfg(method=method, padding=0.5)
    free = apply_masks(original.copy(), [MaskRegion(box, m)])
    clipped = apply_masks(original.copy(), [MaskRegion(box, m, protect=protect)])
    bx1, by1, bx2, by2 = box.int_bounds(300, 200)
    # the detected box: masked exactly as without protection, whatever overlaps it
    assert np.array_equal(clipped[by1:by2, bx1:bx2], free[by1:by2, bx1:bx2])
    # protected pixels outside the box: untouched
    keep = np.zeros((200, 300), dtype=bool)
    for p in protect:
        px1, py1, px2, py2 = p.int_bounds(300, 200)
        keep[py1:py2, px1:px2] = True
    keep[by1:by2, bx1:bx2] = False
    assert np.array_equal(clipped[keep], original[keep])
    # everywhere else the padding is as before
    rest = ~keep
    assert np.array_equal(clipped[rest], free[rest])


def test_a_kept_face_inside_a_neighbours_padding_stays_unchanged() -> None:
    original = textured()
    neighbour = Box(100, 60, 140, 110)
    kept = Box(145, 60, 185, 110)  # inside the neighbour's 50 % padding
    img = apply_masks(original.copy(), [MaskRegion(neighbour, MaskConfig(), protect=(kept,))])
    assert np.array_equal(img[60:110, 145:185], original[60:110, 145:185])
    assert changed(img, original)[60:110, 100:140].all()
    unprotected = apply_masks(original.copy(), [MaskRegion(neighbour, MaskConfig())])
    assert changed(unprotected, original)[60:110, 145:160].any(), "the padding did reach it"


# --------------------------------------------------------------------------- follow


def moving_patch(t: int, rng_seed: int = 3) -> tuple[np.ndarray, Box]:
    import cv2

    rng = np.random.default_rng(rng_seed)
    bg = cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3)).astype(np.uint8), (0, 0), 4)
    patch = cv2.GaussianBlur(rng.integers(0, 256, (50, 70, 3)).astype(np.uint8), (0, 0), 1)
    x, y = 100 + 4 * t, 80 + 2 * t
    bg[y : y + 50, x : x + 70] = patch
    return bg, Box(x, y, x + 70, y + 50)


def test_follower_tracks_moving_content_and_fails_closed_when_it_vanishes() -> None:
    first, box = moving_patch(0)
    f = RegionFollower(first, box)
    assert f.current().box == box
    for t in range(1, 30):
        frame, truth = moving_patch(t)
        pos = f.update(frame)
        assert not pos.lost
        assert abs(pos.box.x1 - truth.x1) <= 1 and abs(pos.box.y1 - truth.y1) <= 1
    empty, _ = moving_patch(0)
    empty[:] = 128
    lost = f.update(empty)
    assert lost.lost
    last = f.box
    assert lost.box.x1 < last.x1 and lost.box.x2 > last.x2, "lost: the last position, grown"
    frame, _ = moving_patch(31)
    assert f.update(frame).lost, "once lost, it never guesses again"


def test_follower_without_texture_is_lost_from_the_start() -> None:
    flat = np.full((100, 100, 3), 90, np.uint8)
    f = RegionFollower(flat, Box(10, 10, 40, 40))
    assert f.current().lost and f.current().box.width > 30
