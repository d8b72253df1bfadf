"""Multi-scale passes: tiling geometry and the merge of boxes cut at tile borders.

The scripted detector "sees" bright squares on a dark frame, but only when
they are at least ``min_px`` tall in the image it is given, like a real
detector's smallest anchor. So downscaling hides small squares, and a square
cut by a tile border is reported as the part inside the tile.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from redactd.core.config import TilingConfig
from redactd.core.types import Box, Detection, ObjectClass
from redactd.stages.detect import multiscale
from redactd.stages.detect.multiscale import Tile, TileDetection, merge, plan


class SquareDetector:
    """Reports every bright blob at least ``min_px`` tall; records the sizes it was given."""

    cls: ObjectClass = "face"

    def __init__(self, min_px: int = 8) -> None:
        self.name = "squares"
        self.min_px = min_px
        self.calls: list[tuple[int, int]] = []

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        self.calls.append((image.shape[1], image.shape[0]))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        n, _labels, stats, _ = cv2.connectedComponentsWithStats((gray > 127).astype(np.uint8))
        out = []
        for x, y, w, h, _area in stats[1:n]:
            if h >= self.min_px:
                out.append(Detection("face", Box(x, y, x + w, y + h), 0.9, self.name))
        return [d for d in out if d.score >= threshold]


def frame(width: int, height: int, squares: list[tuple[int, int, int]]) -> np.ndarray:
    img = np.zeros((height, width, 3), dtype=np.uint8)
    for x, y, s in squares:
        img[y : y + s, x : x + s] = 255
    return img


DEFAULT = TilingConfig()


def covered(tiles: list[Tile], width: int, height: int) -> np.ndarray:
    seen = np.zeros((height, width), dtype=bool)
    for t in tiles:
        seen[t.y : t.y + t.h, t.x : t.x + t.w] = True
    return seen


def test_4k_frame_gets_a_coarse_pass_and_upscaled_tiles() -> None:
    passes = plan(3840, 2160, DEFAULT)
    coarse, tiles = passes[0], passes[1:]
    assert coarse == Tile(0, 0, 3840, 2160, DEFAULT.max_side, DEFAULT.max_side * 9 // 16)
    assert len(tiles) > 1, "a 4K frame must be tiled"
    assert covered(tiles, 3840, 2160).all()
    # one size for every tile (one compiled shape), at the fine scale
    sizes = {(t.w, t.h, t.out_w, t.out_h) for t in tiles}
    assert len(sizes) == 1
    w, h, out_w, out_h = sizes.pop()
    assert (out_w, out_h) == (round(w * DEFAULT.upscale), round(h * DEFAULT.upscale))
    assert max(out_w, out_h) <= DEFAULT.tile_size
    for t in tiles:
        assert t.x >= 0 and t.x + t.w <= 3840 and t.y >= 0 and t.y + t.h <= 2160
        assert t.inner == (t.x > 0, t.y > 0, t.x + t.w < 3840, t.y + t.h < 2160)


@pytest.mark.parametrize("overlap", [0, 64, 128, 300])
@pytest.mark.parametrize("tile_size", [640, 1600])
def test_neighbouring_tiles_share_at_least_the_overlap(overlap: int, tile_size: int) -> None:
    cfg = TilingConfig(overlap=overlap, tile_size=tile_size)
    tiles = plan(3840, 2160, cfg)[1:]
    scale = tiles[0].out_w / tiles[0].w  # overlap and tile size are model pixels
    for starts, size in (
        (sorted({t.x for t in tiles}), tiles[0].w),
        (sorted({t.y for t in tiles}), tiles[0].h),
    ):
        assert len(starts) >= 2
        for a, b in itertools.pairwise(starts):
            assert (size - (b - a)) * scale >= min(overlap, tile_size // 2) - 2


def test_photo_gets_a_coarse_pass_and_one_native_fine_pass() -> None:
    # 1024 px: coarse at 640 px, fine at native size, small enough for one tile
    assert plan(1024, 768, DEFAULT) == [
        Tile(0, 0, 1024, 768, 640, 480),
        Tile(0, 0, 1024, 768, 1024, 768),
    ]


def test_small_image_gets_one_native_pass() -> None:
    # the coarse pass is already native: a native fine pass would gain nothing
    assert plan(400, 300, DEFAULT) == [Tile(0, 0, 400, 300, 400, 300)]


def test_upscaled_fine_pass_on_a_small_image() -> None:
    assert plan(400, 300, TilingConfig(upscale=1.5)) == [
        Tile(0, 0, 400, 300, 400, 300),
        Tile(0, 0, 400, 300, 600, 450),
    ]


def test_pixel_cap_lowers_the_fine_scale_but_never_below_native() -> None:
    cfg = TilingConfig(upscale=1.5, max_fine_pixels=4_000_000)
    assert multiscale.fine_scale(1000, 1000, cfg) == 1.5  # 2.25 Mpx fits
    assert multiscale.fine_scale(1600, 1600, cfg) == pytest.approx(2000 / 1600)
    assert multiscale.fine_scale(4000, 3000, cfg) == 1.0  # 12 Mpx: native, not less
    assert multiscale.fine_scale(4000, 3000, TilingConfig(upscale=0.5)) == 0.5


def test_fine_pass_is_skipped_below_min_gain() -> None:
    cfg = TilingConfig(max_side=1280, upscale=1.0)
    # coarse at 1280/1500 = 0.85; the native fine pass would gain only 1.17x
    assert len(plan(1500, 1000, cfg)) == 1
    assert len(plan(2000, 1000, cfg)) > 1


def test_tiling_disabled_gives_only_the_coarse_pass() -> None:
    passes = plan(3840, 2160, TilingConfig(enabled=False))
    assert passes == [Tile(0, 0, 3840, 2160, 640, 360)]


def test_upscale_below_one_caps_the_fine_pass_below_native() -> None:
    tiles = plan(3840, 2160, TilingConfig(upscale=0.5))[1:]
    assert covered(tiles, 3840, 2160).all()
    for t in tiles:
        assert t.out_w == round(t.w * 0.5) and t.out_h == round(t.h * 0.5)


def test_fine_pass_tiles_are_at_most_tile_size_model_pixels() -> None:
    cfg = TilingConfig(upscale=2.0, tile_size=640, overlap=64)
    tiles = plan(1000, 700, cfg)[1:]
    assert len(tiles) > 1 and covered(tiles, 1000, 700).all()
    assert all(t.out_w <= 640 and t.out_h <= 640 for t in tiles)
    assert all(t.out_w == round(t.w * 2.0) for t in tiles)


def test_small_face_in_4k_is_found_by_tiles_not_by_the_full_pass() -> None:
    img = frame(3840, 2160, [(2000, 1500, 14)])
    det = SquareDetector(min_px=8)
    only_full = multiscale.detect(det, img, 0.5, TilingConfig(enabled=False), 0.3)
    assert only_full == []  # 14 px -> 4.7 px after the 1/3 downscale
    found = multiscale.detect(det, img, 0.5, DEFAULT, 0.3)
    assert len(found) == 1
    b = found[0].box
    assert (b.x1, b.y1, b.x2, b.y2) == pytest.approx((2000, 1500, 2014, 1514), abs=0.5)


def test_big_face_on_a_tile_border_comes_out_as_one_whole_box() -> None:
    tiles = plan(3840, 2160, DEFAULT)[1:]
    border = sorted({t.x + t.w for t in tiles})[0]  # right edge of the first column
    x = border - 150  # 300 px square (> overlap): cut by that border and the next tile's edge
    img = frame(3840, 2160, [(x, 900, 300)])
    found = multiscale.detect(SquareDetector(), img, 0.5, DEFAULT, 0.3)
    assert len(found) == 1
    b = found[0].box
    assert b.x1 <= x + 1 and b.x2 >= x + 299 and b.y1 <= 901 and b.y2 >= 1199


def test_all_passes_reach_the_detector_at_the_planned_sizes() -> None:
    det = SquareDetector()
    multiscale.detect(det, frame(3840, 2160, []), 0.5, DEFAULT, 0.3)
    want = [(t.out_w, t.out_h) for t in plan(3840, 2160, DEFAULT)]
    assert det.calls == want


def test_detector_failure_propagates() -> None:
    class Broken(SquareDetector):
        def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
            raise RuntimeError("inference failed")

    with pytest.raises(RuntimeError):
        multiscale.detect(Broken(), frame(3840, 2160, []), 0.5, DEFAULT, 0.3)


def test_boxes_are_mapped_back_through_scale_and_offset() -> None:
    t = Tile(100, 50, 320, 320, 640, 640, (True, True, True, True))
    [td] = multiscale.to_frame([Detection("face", Box(100, 200, 140, 260), 0.8)], t)
    assert (td.det.box.x1, td.det.box.y1, td.det.box.x2, td.det.box.y2) == (150, 150, 170, 180)
    assert not td.cut


@pytest.mark.parametrize(
    "box",
    [Box(0, 100, 30, 140), Box(100, 0, 130, 40), Box(600, 100, 640, 140), Box(100, 610, 130, 640)],
)
def test_boxes_touching_an_inner_border_are_marked_cut(box: Box) -> None:
    inner = Tile(640, 640, 640, 640, 640, 640, (True, True, True, True))
    outer = Tile(0, 0, 640, 640, 640, 640, (False, False, False, False))
    [a] = multiscale.to_frame([Detection("face", box, 0.8)], inner)
    [b] = multiscale.to_frame([Detection("face", box, 0.8)], outer)
    assert a.cut and not b.cut


def td(x1: float, y1: float, x2: float, y2: float, score: float, cut: bool) -> TileDetection:
    return TileDetection(Detection("face", Box(x1, y1, x2, y2), score), cut)


def test_cut_piece_inside_a_whole_box_is_absorbed_and_never_wins() -> None:
    whole = td(100, 100, 200, 200, 0.6, False)
    piece = td(150, 100, 210, 200, 0.95, True)  # higher score, sticks out 10 px
    [out] = merge([piece, whole], 0.3)
    assert (out.box.x1, out.box.y1, out.box.x2, out.box.y2) == (100, 100, 210, 200)
    assert out.score == 0.95


def test_cut_piece_mostly_inside_but_below_nms_iou_is_absorbed() -> None:
    whole = td(0, 0, 100, 100, 0.9, False)
    piece = td(80, 40, 110, 60, 0.5, True)  # IoU tiny, 2/3 of it inside
    [out] = merge([whole, piece], 0.3)
    assert out.box.x2 == 110


def test_two_cut_halves_without_a_whole_box_are_both_kept() -> None:
    left = td(100, 100, 150, 200, 0.7, True)
    right = td(150, 100, 200, 200, 0.6, True)
    out = merge([left, right], 0.3)
    assert len(out) == 2  # together they still cover the face


def test_uncut_overlaps_follow_plain_nms() -> None:
    a = td(0, 0, 100, 100, 0.9, False)
    b = td(5, 5, 105, 105, 0.8, False)
    c = td(300, 300, 340, 340, 0.5, False)
    out = merge([a, b, c], 0.3)
    assert [(d.box.x1, d.score) for d in out] == [(0, 0.9), (300, 0.5)]
    # a suppressed uncut box does not grow the kept one
    assert out[0].box.x2 == 100


def test_merge_of_nothing_is_nothing() -> None:
    assert merge([], 0.3) == []
