"""Multi-scale detection: a coarse full-frame pass plus a fine pass, tiled when large.

Detectors lose faces that downscaling makes smaller than their smallest
anchor (CenterFace: about 8-10 input pixels): a 4K frame squeezed to 1280 px
shrinks a 12 px face to 4 px. They also lose some large faces at a fine
scale. On the shared WIDER subset a coarse pass at 640 px plus a fine pass at
1.5x finds more faces than any single scale up to 2x, for less compute than
a single pass at 2x (``benchmarks/face_recall_sweep.py``). So, per ``TilingConfig``:

* the **coarse pass** sees the whole frame with its longest side at most
  ``max_side`` (never upscaled): it finds the large faces, including faces
  larger than a tile;
* the **fine pass** sees the frame at ``fine_scale`` (1.5x by default, never
  below native size unless configured): it finds the small ones. When the
  scaled frame is larger than ``tile_size`` it is cut into a grid of equal
  tiles that share ``overlap`` model pixels with their neighbours, so any
  face up to that size lies whole in some tile; equal tiles mean one
  compiled shape per frame size.

Merging. Detections of every pass are merged by greedy NMS at the class's
``nms_iou``. A detection touching an inner tile border may be a face cut in
two; it never wins over an uncut detection: when it lies mostly (>= half its
area) inside a kept box, or overlaps one above ``nms_iou``, that kept box
grows to the union of both, so the face stays fully covered; otherwise it is
kept as it is (fail safe: a cut face still gets masked on its visible part,
and the neighbouring tile or the full pass usually sees it whole).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from redactd.core.config import TilingConfig
from redactd.core.types import Box, Detection
from redactd.stages.detect.base import Detector
from redactd.stages.detect.nms import area

#: A box this close (model pixels) to an inner tile border counts as cut there.
CUT_MARGIN = 2.0


@dataclass(frozen=True)
class Tile:
    """One detector pass: a source region and the scale it is run at.

    ``x, y, w, h``: region in source pixels. ``out_w, out_h``: the size the
    region is resized to before the detector sees it. ``inner``: which sides
    (left, top, right, bottom) are inner tile borders rather than frame borders.
    """

    x: int
    y: int
    w: int
    h: int
    out_w: int
    out_h: int
    inner: tuple[bool, bool, bool, bool] = (False, False, False, False)

    @property
    def is_full_frame(self) -> bool:
        return not any(self.inner)


def full_scale(width: int, height: int, tiling: TilingConfig) -> float:
    """Scale of the coarse pass: longest side at most ``max_side``, never upscaled."""
    longest = max(width, height)
    return min(1.0, tiling.max_side / longest) if longest > 0 else 1.0


def fine_scale(width: int, height: int, tiling: TilingConfig) -> float:
    """Scale of the fine pass: ``upscale``, lowered to fit ``max_fine_pixels``.

    The pixel cap never takes it below native size, so no face is lost to
    downscaling; ``upscale`` below 1 does (cheaper, for operators who accept
    missing the smallest faces).
    """
    fit = math.sqrt(tiling.max_fine_pixels / max(1, width * height))
    return max(min(tiling.upscale, fit), min(tiling.upscale, 1.0))


def _axis(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, size)`` of equal tiles of at most ``tile`` px covering ``length``.

    Neighbours share at least ``overlap`` px. The fewest tiles that fit are
    used and then stretched evenly, so the shared strips stay near ``overlap``
    instead of leaving one thin tile at the end.
    """
    if length <= tile:
        return [(0, length)]
    overlap = min(overlap, tile // 2)
    n = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, math.ceil((length + (n - 1) * overlap) / n))
    return [(round(i * (length - size) / (n - 1)), size) for i in range(n)]


def plan(width: int, height: int, tiling: TilingConfig) -> list[Tile]:
    """The passes for a ``width x height`` frame: the coarse pass first, then the fine tiles."""
    s_full = full_scale(width, height, tiling)
    passes = [
        Tile(0, 0, width, height, max(1, round(width * s_full)), max(1, round(height * s_full)))
    ]
    s_fine = fine_scale(width, height, tiling)
    if not tiling.enabled or s_fine < s_full * tiling.min_gain:
        return passes
    # tile size and overlap are model pixels; convert to source pixels at the fine scale
    src_tile = max(1, math.floor(tiling.tile_size / s_fine))
    src_overlap = math.ceil(tiling.overlap / s_fine)
    cols = _axis(width, src_tile, src_overlap)
    rows = _axis(height, src_tile, src_overlap)
    for y, th in rows:
        for x, tw in cols:
            inner = (x > 0, y > 0, x + tw < width, y + th < height)
            out_w, out_h = max(1, round(tw * s_fine)), max(1, round(th * s_fine))
            passes.append(Tile(x, y, tw, th, out_w, out_h, inner))
    return passes


def crop(image: np.ndarray, t: Tile) -> np.ndarray:
    """The tile's region of ``image`` resized to ``(out_w, out_h)``."""
    region = image[t.y : t.y + t.h, t.x : t.x + t.w]
    if (t.out_w, t.out_h) == (t.w, t.h):
        return region
    # INTER_AREA avoids aliasing when shrinking; LINEAR is the usual choice to enlarge
    interp = cv2.INTER_AREA if t.out_w < t.w else cv2.INTER_LINEAR
    return cv2.resize(region, (t.out_w, t.out_h), interpolation=interp)


@dataclass(frozen=True)
class TileDetection:
    """A detection in frame coordinates, and whether it touches an inner tile border."""

    det: Detection
    cut: bool


def to_frame(dets: Sequence[Detection], t: Tile) -> list[TileDetection]:
    """Map detections made on ``crop(image, t)`` back to frame coordinates."""
    sx, sy = t.w / t.out_w, t.h / t.out_h
    out = []
    for d in dets:
        b = d.box
        cut = (
            (t.inner[0] and b.x1 <= CUT_MARGIN)
            or (t.inner[1] and b.y1 <= CUT_MARGIN)
            or (t.inner[2] and b.x2 >= t.out_w - CUT_MARGIN)
            or (t.inner[3] and b.y2 >= t.out_h - CUT_MARGIN)
        )
        box = Box(b.x1 * sx + t.x, b.y1 * sy + t.y, b.x2 * sx + t.x, b.y2 * sy + t.y)
        out.append(TileDetection(Detection(d.cls, box, d.score, d.detector, d.track_id), cut))
    return out


def merge(items: Sequence[TileDetection], iou: float) -> list[Detection]:
    """Greedy NMS in which cut detections never win and grow the box that absorbs them."""
    if not items:
        return []
    boxes = np.array(
        [(i.det.box.x1, i.det.box.y1, i.det.box.x2, i.det.box.y2) for i in items], dtype=np.float64
    )
    scores = np.array([i.det.score for i in items], dtype=np.float64)
    cut = np.array([i.cut for i in items], dtype=bool)
    # uncut first, then by score (stable, so equal scores keep input order)
    order = np.lexsort((-scores, cut))
    areas = area(boxes)
    # Every pair's relation at once: the loop below then only indexes (a
    # frame at threshold 0.1 has tens of boxes; one numpy call per pair was
    # a measurable share of an image's time). Comparisons use the original
    # boxes, as absorbing a cut piece does not change what else a box hides.
    iw = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(
        boxes[:, None, 0], boxes[None, :, 0]
    )
    ih = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(
        boxes[:, None, 1], boxes[None, :, 1]
    )
    inter_m = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union_m = areas[:, None] + areas[None, :] - inter_m
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap_m = np.where(union_m > 0, inter_m / union_m, 0.0) > iou
        # inside_m[i, j]: at least half of box j lies in box i
        inside_m = np.where(areas[None, :] > 0, inter_m / areas[None, :], 1.0) >= 0.5
    kept: list[tuple[int, np.ndarray, float]] = []  # (index, box, score)
    alive = np.ones(len(items), dtype=bool)
    for pos, i in enumerate(order):
        if not alive[i]:
            continue
        box = boxes[i].copy()
        best = float(scores[i])
        rest = order[pos + 1 :]
        rest = rest[alive[rest]]
        if rest.size:
            gone = overlap_m[i, rest] | (cut[rest] & inside_m[i, rest])
            grow = rest[gone & cut[rest]]
            if grow.size:
                # absorb cut pieces: the union keeps the whole face covered
                box[0] = min(box[0], float(boxes[grow, 0].min()))
                box[1] = min(box[1], float(boxes[grow, 1].min()))
                box[2] = max(box[2], float(boxes[grow, 2].max()))
                box[3] = max(box[3], float(boxes[grow, 3].max()))
            if gone.any():
                best = max(best, float(scores[rest[gone]].max()))
            alive[rest[gone]] = False
        alive[i] = False
        kept.append((int(i), box, best))
    out = []
    for i, b, s in kept:
        d = items[i].det
        out.append(Detection(d.cls, Box(*(float(v) for v in b)), s, d.detector, d.track_id))
    out.sort(key=lambda d: -d.score)
    return out


def detect(
    detector: Detector,
    image: np.ndarray,
    threshold: float,
    tiling: TilingConfig,
    nms_iou: float,
) -> list[Detection]:
    """Run ``detector`` over every pass of ``plan`` and merge; raises when a pass fails."""
    h, w = image.shape[:2]
    found: list[TileDetection] = []
    for t in plan(w, h, tiling):
        found.extend(to_frame(detector.detect(crop(image, t), threshold), t))
    return [
        Detection(d.cls, d.box.clip(w, h), d.score, d.detector, d.track_id)
        for d in merge(found, nms_iou)
    ]
