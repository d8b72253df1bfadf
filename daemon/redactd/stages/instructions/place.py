"""Instructions on a picture: regions in pixels, and the detections kept.

``to_pixels`` / ``place_keep`` place a region on a picture of a given size
(upright pixels, like detections; a region wholly outside raises
``invalid_sidecar``; a keep region over ``keep_max_share`` of the picture
raises ``keep_limit_exceeded``). Keep matching: a detection matches a keep
region when at least ``KEEP_SHARE`` of its box lies inside it, and a region
keeps at most its best match per class (``split_kept``, ``best_matches``).
Pure geometry (numpy-free): no frames, no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redactd.core.errors import PermanentInputError
from redactd.core.types import Box, Detection
from redactd.stages.instructions.model import (
    KeepSplit,
    PixelRegion,
    Point,
    Region,
    invalid_sidecar,
)

#: Share of a detection's box that must lie in a keep region for it to match.
KEEP_SHARE = 0.5

#: Growth of each side of a kept box, relative to its size, that other masks'
#: padding may not cover (their own detected box is masked regardless).
KEEP_MARGIN = 0.2

#: A video keep seed looks for its person on detector frames up to this long
#: after the seed (a single missed detection at the seed must not waste it).
SEED_WINDOW_SECONDS = 1.0


def to_pixels(region: Region, width: int, height: int) -> PixelRegion:
    """Place ``region`` on a ``width`` x ``height`` upright picture.

    Parts outside the picture are clipped; a region wholly outside raises
    ``invalid_sidecar`` ("mask[0]: outside the 640x480 picture").
    """
    sx, sy = (float(width), float(height)) if region.units == "rel" else (1.0, 1.0)
    pts = tuple((x * sx, y * sy) for x, y in region.points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    clipped = Box(min(xs), min(ys), max(xs), max(ys)).clip(width, height)
    if clipped.width <= 0 or clipped.height <= 0:
        raise invalid_sidecar(f"{region.ref}: outside the {width}x{height} picture")
    return PixelRegion(region, clipped, pts if region.shape == "polygon" else None)


def place_keep(region: Region, width: int, height: int, max_share: float) -> PixelRegion:
    """``to_pixels`` for a keep region, which may cover at most ``max_share``
    of the picture (``instructions.keep_max_share``): a region over the whole
    frame would keep whoever stands anywhere. Else ``keep_limit_exceeded``."""
    pr = to_pixels(region, width, height)
    area = pr.box.area
    if pr.polygon is not None:
        part = _clip_polygon(pr.polygon, Box(0.0, 0.0, float(width), float(height)))
        area = abs(polygon_area(part)) if len(part) >= 3 else 0.0
    share = area / float(width * height)
    if share > max_share + 1e-9:
        raise PermanentInputError(
            "keep_limit_exceeded",
            f"{region.ref}: covers {share:.2f} of the picture, over "
            f"instructions.keep_max_share ({max_share:g})",
            stage="sidecar",
        )
    return pr


def polygon_area(pts: Sequence[Point]) -> float:
    """Signed area (shoelace)."""
    s = 0.0
    for i, (x1, y1) in enumerate(pts):
        x2, y2 = pts[(i + 1) % len(pts)]
        s += x1 * y2 - x2 * y1
    return s / 2.0


def _clip_polygon(pts: Sequence[Point], b: Box) -> list[Point]:
    """Sutherland-Hodgman clip of any simple polygon by the box (area exact)."""
    out = list(pts)
    edges = (
        (lambda p: p[0] >= b.x1, lambda p, q: _at_x(p, q, b.x1)),
        (lambda p: p[0] <= b.x2, lambda p, q: _at_x(p, q, b.x2)),
        (lambda p: p[1] >= b.y1, lambda p, q: _at_y(p, q, b.y1)),
        (lambda p: p[1] <= b.y2, lambda p, q: _at_y(p, q, b.y2)),
    )
    for inside, cut in edges:
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cut(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cut(prev, cur))
        if not out:
            break
    return out


def _at_x(p: Point, q: Point, x: float) -> Point:
    t = (x - p[0]) / (q[0] - p[0])
    return (x, p[1] + t * (q[1] - p[1]))


def _at_y(p: Point, q: Point, y: float) -> Point:
    t = (y - p[1]) / (q[1] - p[1])
    return (p[0] + t * (q[0] - p[0]), y)


def coverage(box: Box, pr: PixelRegion) -> float:
    """Share of ``box``'s area that lies inside the region (0..1)."""
    if box.area <= 0:
        return 0.0
    if pr.polygon is None:
        ix = min(box.x2, pr.box.x2) - max(box.x1, pr.box.x1)
        iy = min(box.y2, pr.box.y2) - max(box.y1, pr.box.y1)
        return max(0.0, ix) * max(0.0, iy) / box.area
    part = _clip_polygon(pr.polygon, box)
    return abs(polygon_area(part)) / box.area if len(part) >= 3 else 0.0


def matches(d: Detection, pr: PixelRegion) -> bool:
    """Does detection ``d`` match keep region ``pr`` (class and ``KEEP_SHARE``)?"""
    return d.cls in pr.region.classes and coverage(d.box, pr) >= KEEP_SHARE


def split_kept(detections: Sequence[Detection], keeps: Sequence[PixelRegion]) -> KeepSplit:
    """Images: each keep region keeps at most one detection per class (its
    best match, as ``best_matches``); every other detection is masked."""
    kept_idx: set[int] = set()
    matched: set[int] = set()
    for k, pr in enumerate(keeps):
        hit = _best_indices(detections, pr)
        kept_idx |= hit
        if hit:
            matched.add(k)
    return KeepSplit(
        tuple(d for i, d in enumerate(detections) if i not in kept_idx),
        tuple(d for i, d in enumerate(detections) if i in kept_idx),
        frozenset(matched),
    )


def protected(kept: Iterable[Detection]) -> tuple[Box, ...]:
    """The areas other masks' padding must leave alone: each kept box grown by
    ``KEEP_MARGIN`` (a detector's face box stops at the hairline and chin)."""
    return tuple(d.box.pad(KEEP_MARGIN) for d in kept)


def _best_indices(detections: Sequence[Detection], pr: PixelRegion) -> set[int]:
    out: set[int] = set()
    for cls in pr.region.classes:
        cands = [i for i, d in enumerate(detections) if d.cls == cls and matches(d, pr)]
        if cands:
            out.add(
                max(
                    cands,
                    key=lambda i: (detections[i].box.iou(pr.box), coverage(detections[i].box, pr)),
                )
            )
    return out


def best_matches(detections: Sequence[Detection], pr: PixelRegion) -> list[Detection]:
    """Per class of the region, the matching detection with the highest IoU
    with the region's box (none for a class without a match): a region keeps
    at most one person (one plate) per picture, per video track."""
    return [detections[i] for i in sorted(_best_indices(detections, pr))]
